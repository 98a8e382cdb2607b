"""dp = uls end to end in Flower's simulation: on FedProx and FedKPer, and a budget that stops
a resumed run with more rounds before ε exceeds it, keeping what was written."""

import csv
import json

import pytest

from bouquet.strategies import RunFailed
from tests.simulation import simulate

BASE = {"dataset": "digits", "partitioner": "iid", "num-server-rounds": 2, "fraction-evaluate": 0.0,
        "dp": "uls", "dp-sampling-rate": 0.75, "dp-clip": 0.5, "dp-k": 64, "batch-size": 64}


def _epsilons(run_dir):
    with open(f"{run_dir}/metrics.csv") as f:
        return {int(r["round"]): float(r["value"]) for r in csv.DictReader(f)
                if r["metric"] == "dp-epsilon-spent" and r["partition_id"] == ""}


@pytest.mark.parametrize("method", ["fedprox", "fedkper"])
def test_uls_wraps_fedprox_and_fedkper(tmp_path, method):
    summary = simulate(tmp_path, 4, **BASE, method=method, **{"dp-epsilon": 8.0})
    assert summary["status"] == "completed"
    privacy = summary["privacy"]
    assert privacy["algorithm"] == "uls" and privacy["releases"] == 2 and privacy["k"] == 64
    assert 0 < privacy["epsilon_spent"] <= 8.0
    eps = _epsilons(summary["run_dir"])
    assert sorted(eps) == [1, 2] and eps[1] < eps[2] == pytest.approx(privacy["epsilon_spent"])
    rows = list(csv.DictReader(open(f"{summary['run_dir']}/metrics.csv")))
    sizes = [float(r["value"]) for r in rows if r["metric"] == "num-examples" and r["partition_id"] != ""]
    assert sizes and max(sizes) <= 64  # each user trained on at most k examples


def test_budget_stops_a_resumed_run_before_epsilon_is_exceeded(tmp_path):
    first = simulate(tmp_path, 4, **BASE, method="fedavg", **{"dp-epsilon": 3.0})
    assert first["status"] == "completed" and first["privacy"]["epsilon_spent"] <= 3.0
    # σ was calibrated for 2 rounds: a third release would exceed the budget
    with pytest.raises(RunFailed, match="privacy budget: round 3 would raise epsilon"):
        simulate(tmp_path, 4, **{**BASE, "num-server-rounds": 4}, method="fedavg",
                 **{"dp-epsilon": 3.0, "resume-from": first["run_dir"]})
    summary = json.loads(open(f"{first['run_dir']}/summary.json").read())
    assert summary["status"] == "failed" and "privacy budget: round 3" in summary["failure"]
    assert summary["privacy"]["releases"] == 2 and summary["privacy"]["epsilon_spent"] <= 3.0
    assert max(_epsilons(first["run_dir"])) == 2  # nothing released after round 2; rounds 1-2 kept
