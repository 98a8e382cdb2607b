"""The attacks of tests/strategies/test_replies.py in real `flwr run` simulations: one
participant (``BOUQUET_ADVERSARY``) against the server's defences, end to end."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from bouquet.simulations.launch import launch

BASE = {"method": "fedavg", "dataset": "digits", "partitioner": "iid", "num-server-rounds": 3, "fraction-evaluate": 0.0}


def _summary(out):
    [path] = list(out.glob("*/summary.json"))
    return json.loads(path.read_text())


def test_one_participant_cannot_take_over_and_a_poisoned_run_is_not_completed(tmp_path):
    runs = {
        # plain mean: the x1e6 update gets in, every later reply diverges -> the run must fail, naming partition 0
        "mean": ({**BASE}, "scale:1e6@0"),
        # coordinate-wise median of 3: the outlier has no effect
        "median": ({**BASE, "aggregator": "median"}, "scale:1e6@0"),
        # a client claiming 1e12 examples is refused every round; the others train
        "weight": ({**BASE}, "num-examples:1e12@1"),
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {name: pool.submit(launch, {**cfg, "output-dir": str(tmp_path / name)}, num_supernodes=3,
                                     echo=False, timeout=600, env={"BOUQUET_ADVERSARY": attack})
                   for name, (cfg, attack) in runs.items()}
        results = {name: f.result() for name, f in futures.items()}

    mean = results["mean"]
    assert mean.status == "finished:failed", mean.output[-3000:]
    assert "train replies were rejected" in mean.reason and "largest update norms: partition 0" in mean.reason
    summary = _summary(tmp_path / "mean")
    assert summary["status"] == "failed" and "partition 0" in summary["failure"]

    median = results["median"]
    assert median.ok, median.output[-3000:]
    summary = _summary(tmp_path / "median")
    assert summary["status"] == "completed" and summary["rejected_updates"] == []
    assert summary["final"]["global_model@global_test"] > 0.5  # 10 classes; it learned despite the attacker

    weight = results["weight"]
    assert weight.ok, weight.output[-3000:]
    summary = _summary(tmp_path / "weight")
    assert {r["partition_id"] for r in summary["rejected_updates"]} == {1}
    assert len(summary["rejected_updates"]) == 3 and "num-examples" in summary["rejected_updates"][0]["reason"]
    assert summary["final"]["global_model@global_test"] > 0.5
