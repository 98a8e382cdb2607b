"""Checkpoint and resume in a real simulation: a server killed during round 3 and resumed
ends exactly where an uninterrupted run with the same seed ends, client state included."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bouquet import checkpoint
from tests.simulation import kill_server_in_round, simulate

CFG = {"method": "fedavg", "dataset": "digits", "partitioner": "iid", "num-server-rounds": 4, "seed": 3,
       "batch-size": 32}


def _rows(run_dir) -> list[dict]:
    return list(csv.DictReader(open(Path(run_dir) / "metrics.csv")))


def _server_final(rows, rnd=4) -> dict:
    return {r["metric"]: r["value"] for r in rows if r["round"] == str(rnd) and r["partition_id"] == ""}


def test_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    full = simulate(tmp_path / "full", 3, **CFG)
    undo = kill_server_in_round(monkeypatch, 3)
    with pytest.raises((SystemExit, FileNotFoundError, ValueError)):
        simulate(tmp_path / "killed", 3, **CFG)  # no summary.json: the run died
    undo()
    [run_dir] = (tmp_path / "killed").iterdir()
    assert checkpoint.load(run_dir).round == 2
    assert any(r["round"] == "3" for r in _rows(run_dir))  # round 3 had begun (train rows)

    resumed = simulate(tmp_path / "killed", 3, **{**CFG, "resume-from": str(run_dir)})
    assert Path(resumed["run_dir"]) == run_dir
    rows, ref = _rows(run_dir), _rows(full["run_dir"])
    assert sorted({r["round"] for r in rows}, key=int) == ["0", "1", "2", "3", "4"]
    # rounds 1-2 are the kept rows; 3-4 recomputed; the global model's path is identical
    for rnd in range(0, 5):
        assert _server_final(rows, rnd).get("global_model@global_test") == _server_final(ref, rnd).get("global_model@global_test")
    assert _server_final(rows)["nfr:global_model@global_test"] == _server_final(ref)["nfr:global_model@global_test"]
    saved, ref_saved = checkpoint.load(run_dir), checkpoint.load(Path(full["run_dir"]))
    assert saved.round == ref_saved.round == 4
    for k in ref_saved.arrays:
        np.testing.assert_array_equal(saved.arrays[k], ref_saved.arrays[k])
    # client state came back from the clients' round-2 snapshots (not the round-3 ones the
    # killed run left): local flip rates at round 3 exist, and every row equals the reference
    nfr3 = [r for r in rows if r["round"] == "3" and r["metric"] == "nfr:local_model@local_test" and r["partition_id"]]
    assert len(nfr3) == 3
    assert sorted(map(tuple, (r.values() for r in rows))) == sorted(map(tuple, (r.values() for r in ref)))

def test_resume_rejects_a_different_config(tmp_path):
    run = simulate(tmp_path, 3, **{**CFG, "num-server-rounds": 1})
    with pytest.raises(Exception):
        simulate(tmp_path / "again", 3, **{**CFG, "resume-from": run["run_dir"], "seed": 4})
    assert checkpoint.config_differences({"seed": 3, "resume-from": ""}, {"seed": 4, "resume-from": "x"}) == ["seed"]
    with pytest.raises(Exception, match="leaves nothing to run"):  # checkpointed after round 1 of 1
        simulate(tmp_path / "again", 3, **{**CFG, "num-server-rounds": 1, "resume-from": run["run_dir"]})
    with pytest.raises(Exception, match="ran with 3 clients, this federation has 4"):
        simulate(tmp_path / "again", 4, **{**CFG, "resume-from": run["run_dir"]})


def test_resume_rejects_arrays_that_do_not_fit_the_model(tmp_path):
    from types import SimpleNamespace

    import torch

    from bouquet.config import ConfigError, RunConfig
    from bouquet.server_app import _check_resumed

    (tmp_path / "config.json").write_text('{"clients": 3}')
    cfg = RunConfig.from_run_config({**CFG, "resume-from": str(tmp_path)})
    model = torch.nn.Linear(2, 2)
    good = {k: v.numpy() for k, v in model.state_dict().items()}
    _check_resumed(cfg, SimpleNamespace(arrays=good), 3, model)
    with pytest.raises(ConfigError, match=r"do not fit this model \(\['weight'\]\)"):
        _check_resumed(cfg, SimpleNamespace(arrays={**good, "weight": np.zeros((3, 2), np.float32)}), 3, model)
