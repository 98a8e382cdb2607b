"""The GeFL report's arithmetic on made-up rows: margins over per-architecture FedAvg, seeds
pooled per (setting, method), and a setting variant (``cifar10-10-noaug``) kept apart from the
paper's setting and out of the by-clients table."""

from types import SimpleNamespace

from bouquet import metrics as M
from bouquet.simulations.gefl import report


def row(dataset, method, best, last, seed=0, status="finished:completed"):
    return {"dataset": dataset, "method": method, "seed": seed, "status": status,
            M.BEST_CHECKPOINT: best, M.GLOBAL_GLOBAL: last}


def test_margins_variants_and_failed_runs(tmp_path):
    preset = SimpleNamespace(methods=("hetero-fedavg", "gefl-cvae", "gefl-f-cvae"))
    rows = [row("cifar10-10", "hetero-fedavg", 0.50, 0.49), row("cifar10-10", "hetero-fedavg", 0.52, 0.51, seed=1),
            row("cifar10-10", "gefl-cvae", 0.53, 0.50),
            row("cifar10-10-noaug", "hetero-fedavg", 0.40, 0.39), row("cifar10-10-noaug", "gefl-cvae", 0.38, 0.37),
            row("cifar10-10", "gefl-f-cvae", 0.99, 0.99, status="finished:failed"),  # never counted
            row("mnist-50", "gefl-cvae", 0.90, 0.90)]
    text = report(rows, preset, tmp_path)
    assert "| cifar10-10 | hetero-fedavg | 55.65 | 51.00 ± 1.41 (2) | 50.00 ± 1.41 (2) |" in text
    assert "| cifar10-10 | gefl-cvae | +2.00 | +0.00 | +0.15 |" in text  # 53 − 51, 50 − 50; paper 55.80 − 55.65
    assert "| cifar10-10-noaug | gefl-cvae | -2.00 | -2.00 |" in text
    assert "99.00" not in text and "gefl-f-cvae | –" not in text.split("### GeFL's margin")[1].split("###")[0]
    by_clients = text.split("by number of clients")[1]
    assert "| mnist-50 |" in by_clients and "noaug" not in by_clients
    assert "[58.45]" in by_clients.split("| cifar10-10 |")[1].split("\n")[0]  # the paper's CIFAR-10 figure
    assert (tmp_path / "gefl-clients.png").exists()
