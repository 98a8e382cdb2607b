"""The GeFL report's arithmetic on made-up rows: margins over per-architecture FedAvg, seeds
pooled per (setting, method), a setting variant (``cifar10-10-noaug``) kept apart from the
paper's setting and out of the by-clients table, and the shared-first-block (``-sharefe``) rows."""

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


def test_shared_first_block_rows(tmp_path):
    preset = SimpleNamespace(methods=("hetero-fedavg", "lg-fedavg", "gefl-cvae", "gefl-cvae-sharefe",
                                      "gefl-dcgan-sharefe"))
    rows = [row("mnist-10", "hetero-fedavg", 0.90, 0.89), row("mnist-10", "lg-fedavg", 0.91, 0.90),
            row("mnist-10", "gefl-cvae", 0.93, 0.92), row("mnist-10", "gefl-cvae-sharefe", 0.94, 0.935),
            row("mnist-10", "gefl-dcgan-sharefe", 0.95, 0.95),  # no plain gefl-dcgan: no pair to show
            row("fmnist-10", "hetero-fedavg", 0.80, 0.80), row("fmnist-10", "lg-fedavg", 0.79, 0.79)]
    text = report(rows, preset, tmp_path)
    # the paper's GeFL-CVAE number, and its margin over per-architecture FedAvg
    assert "| mnist-10 | gefl-cvae-sharefe | 94.46 | 94.00 (1 seed) | 93.50 (1 seed) |" in text
    assert "| mnist-10 | gefl-cvae-sharefe | +4.00 | +4.50 | +1.84 |" in text
    assert "| mnist-10 | gefl-dcgan-sharefe | +5.00 | +6.00 | +2.70 |" in text
    shared = text.split("### First block per architecture vs shared over all clients")[1].split("###")[0]
    assert "| mnist-10 | gefl-cvae | 93.00 (1 seed) / 92.00 (1 seed) | 94.00 (1 seed) / 93.50 (1 seed) |" in shared
    assert "| mnist-10 | no generator (hetero-fedavg / lg-fedavg) | 90.00 (1 seed) / 89.00 (1 seed) | " \
           "91.00 (1 seed) / 90.00 (1 seed) |" in shared
    assert "gefl-dcgan |" not in shared and "fmnist-10" not in shared  # no pair ran there
    assert "### First block" not in report(rows[:3], preset, tmp_path)  # nothing shared ran: no table
