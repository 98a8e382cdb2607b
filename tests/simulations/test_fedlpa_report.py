"""The FedLPA report's arithmetic on made-up runs: per-seed deltas over FedAvg+SimGCD in the final
round and over the last rounds, a failed run never counted, K estimates per discovery round."""

from types import SimpleNamespace

from bouquet import metrics as M
from bouquet.simulations.fedlpa import LAST, gcd_key, report

TEST_NEW = gcd_key("global_model", "global_test", "_new")
UNL_NEW = gcd_key("global_model", M.UNLABELLED, "_new")


def run(tmp_path, method, seed, test_new, unl_new, k=(), status="finished:completed"):
    """A run folder whose metrics.csv has ``test_new`` / ``unl_new`` (one value per round, fractions)
    and ``k``: (round, client, estimated, true) rows; returns its result row."""
    folder = tmp_path / "runs" / f"{method}_s{seed}" / "run"
    folder.mkdir(parents=True)
    lines = ["round,partition_id,metric,value"]
    for rnd, (a, b) in enumerate(zip(test_new, unl_new), start=1):
        lines += [f"{rnd},,{TEST_NEW},{a}", f"{rnd},,{UNL_NEW},{b}"]
    for rnd, pid, est, true in k:
        lines += [f"{rnd},{pid},{M.ESTIMATED_K},{est}", f"{rnd},{pid},{M.TRUE_K},{true}"]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    return {"dataset": "fmnist-a0.2", "method": method, "seed": seed, "status": status,
            "run": str(folder.relative_to(tmp_path))}


def test_per_seed_deltas_final_and_last_rounds_and_k(tmp_path):
    preset = SimpleNamespace(datasets=("fmnist-a0.2",), methods=("fedlpa", "simgcd"))
    flat = [0.5] * 6
    rows = [
        # seed 0: the final round alone says +10, the last 5 rounds say +2 (mean 0.52 vs 0.50)
        run(tmp_path, "simgcd", 0, [0.1, 0.5, 0.5, 0.5, 0.5, 0.5], flat),
        run(tmp_path, "fedlpa", 0, [0.9, 0.5, 0.5, 0.5, 0.5, 0.6], [0.5, 0.6, 0.6, 0.6, 0.6, 0.6],
            k=[(3, 0, 9, 6), (3, 1, 5, 6), (5, 0, 7, 6)]),
        # seed 1: −4 in every round
        run(tmp_path, "simgcd", 1, [0.44] * 6, flat),
        run(tmp_path, "fedlpa", 1, [0.40] * 6, flat, k=[(3, 0, 12, 6)]),
        # a failed seed-2 FedLPA run is never compared, and a SimGCD seed without FedLPA is no pair
        run(tmp_path, "fedlpa", 2, [0.99] * 6, flat, status="finished:failed"),
        run(tmp_path, "simgcd", 2, [0.3] * 6, flat),
    ]
    assert LAST == 5
    text = report(rows, preset, tmp_path)
    seeds = text.split("seed by seed")[1].split("##")[0]
    assert "| fmnist-a0.2 | fedlpa | global_test | 0, 1 | +10.0 / -4.0 | +3.0 | +2.0 / -4.0 | -1.0 |" in seeds
    assert "| fmnist-a0.2 | fedlpa | unlabelled | 0, 1 | +10.0 / +0.0 | +5.0 | +10.0 / +0.0 | +5.0 |" in seeds
    k = text.split("Estimated vs true")[1].split("##")[0]
    assert "| fmnist-a0.2 | fedlpa | 3 | 8.7 | 6.0 | 3.3 | 3 |" in k  # (9 + 5 + 12) / 3; (|3| + |1| + |6|) / 3
    assert "| fmnist-a0.2 | fedlpa | 5 | 7.0 | 6.0 | 1.0 | 1 |" in k
