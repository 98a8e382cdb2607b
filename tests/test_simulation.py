"""Real Flower simulations (Ray actors, real data): they learn, write results, reproduce."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.simulation import simulate


def _rows(run_dir: str) -> list[dict]:
    return list(csv.DictReader(open(Path(run_dir) / "metrics.csv")))


@pytest.fixture(scope="module")
def cora_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("cora")
    cfg = {"method": "fedavg", "dataset": "cora", "partitioner": "louvain", "num-server-rounds": 4, "seed": 7, "batch-size": 32}
    return simulate(out, 3, **cfg), simulate(out, 3, **cfg)


def test_fedavg_on_cora_learns_and_writes_results(cora_runs):
    summary, _ = cora_runs
    chance = 1 / 7
    assert summary["final"]["global_model@local_test"] > 3 * chance
    assert summary["final"]["global_model@new_client"] > 2 * chance
    assert (summary["method"], summary["clients"], summary["rounds"], summary["rounds_completed"]) == ("fedavg", 3, 4, 4)
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "accuracy.png").stat().st_size > 10_000
    rows = _rows(summary["run_dir"])
    client_acc = {(r["round"], r["partition_id"]) for r in rows if r["metric"] == "global_model@local_test" and r["partition_id"]}
    assert client_acc == {(str(r), str(p)) for r in range(1, 5) for p in range(3)}
    server_rounds = {r["round"] for r in rows if r["partition_id"] == "" and r["metric"] == "global_model@new_client"}
    assert server_rounds == {str(r) for r in range(0, 5)}


def test_same_seed_gives_identical_metrics_csv(cora_runs):
    a, b = cora_runs
    assert a["run_dir"] != b["run_dir"]
    assert (Path(a["run_dir"]) / "metrics.csv").read_bytes() == (Path(b["run_dir"]) / "metrics.csv").read_bytes()


def test_local_baseline_with_partial_sampling(tmp_path):
    summary = simulate(tmp_path, 3, dataset="digits", partitioner="dirichlet", method="local",
                       **{"num-server-rounds": 3, "dirichlet-alpha": 0.3, "seed": 1, "fraction-train": 0.67})
    assert summary["final"]["local_model@local_test"] > 0.3  # 10 classes: chance 0.1
    assert "global_model@global_test" not in summary["final"]  # local has no global model
    rows = _rows(summary["run_dir"])
    trained = [{r["partition_id"] for r in rows if r["round"] == str(k) and r["metric"] == "train_loss" and r["partition_id"]}
               for k in (1, 2, 3)]
    assert all(len(t) == 2 for t in trained)  # int(3 * 0.67) = 2 sampled per round


def test_fedlog_learns_in_a_tiny_simulation(tmp_path):
    summary = simulate(tmp_path, 3, method="fedlog", dataset="cora",
                       **{"num-server-rounds": 2, "batch-size": 64, "fedlog-pretrain-epochs": 20, "fedlog-num-proto": 5})
    final = summary["final"]
    assert final["local_model@local_test"] > 3 / 7  # chance 1/7
    assert final["local_model@unseen_node"] > 3 / 7
    assert {"local_model@missing_class", "local_model@new_client", "global_model@local_test"} <= set(final)
    rows = _rows(summary["run_dir"])
    assert any(r["metric"] == "fedlog_gamma_mean" for r in rows)


def test_forgetting_metrics_survive_rounds_in_a_real_simulation(tmp_path):
    """FedKPer on the 4 hospitals, 2 sampled per round: local flip rates appear exactly when a
    client trains for the second time or later (its previous predictions lived in
    Context.state), backward transfer only for clients that trained before and not now,
    and the global flip rate every round."""
    summary = simulate(tmp_path, 4, method="fedkper", dataset="heart-disease", partitioner="natural",
                       **{"num-server-rounds": 5, "fraction-train": 0.5, "learning-rate": 0.01, "batch-size": 16,
                          "lr-decay": 0.99})
    rows = _rows(summary["run_dir"])
    trained = {k: {r["partition_id"] for r in rows if r["round"] == str(k) and r["metric"] == "train_loss" and r["partition_id"]}
               for k in range(1, 6)}
    assert all(len(t) == 2 for t in trained.values())
    for k in range(1, 6):
        returning = {p for p in trained[k] if any(p in trained[j] for j in range(1, k))}
        with_nfr = {r["partition_id"] for r in rows if r["round"] == str(k) and r["metric"] == "nfr:local_model@local_test"
                    and r["partition_id"]}
        assert with_nfr == returning
        seen_before = set().union(*(trained[j] for j in range(1, k))) if k > 1 else set()
        with_bwt = {r["partition_id"] for r in rows if r["round"] == str(k) and r["metric"] == "bwt" and r["partition_id"]}
        assert with_bwt == seen_before - trained[k]
    assert any(trained[k] & set().union(*(trained[j] for j in range(1, k))) for k in range(2, 6))  # the check ran
    global_nfr = {r["round"] for r in rows if r["metric"] == "nfr:global_model@global_test" and r["partition_id"] == ""}
    assert global_nfr == {str(k) for k in range(1, 6)}
    assert summary["final"]["global_model@global_test"] > 0.6  # 2 classes, majority ~0.55
