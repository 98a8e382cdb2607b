"""Client state snapshots on the node's disk (the resume path is tested in test_resume.py)."""

import numpy as np

from bouquet import client_state as cs


def test_load_takes_the_newest_round_not_after_the_resumed_one(tmp_path):
    where = cs.folder("", tmp_path, "run-a", 3)
    assert where == tmp_path / "run-a" / "client-state" / "client-3"
    assert cs.load(where, 5) is None  # nothing saved yet
    cs.save(where, 1, {"client": {"w": np.zeros(2)}, "forgetting": {"layer.0/bias": np.array([1, 0], dtype=bool)}})
    cs.save(where, 3, {"client": {"w": np.ones(2)}, "forgetting": {}})
    rnd, records = cs.load(where, 2)  # round 3 was never completed by the server
    assert rnd == 1
    np.testing.assert_array_equal(records["client"]["w"], np.zeros(2))
    np.testing.assert_array_equal(records["forgetting"]["layer.0/bias"], [True, False])
    rnd, records = cs.load(where, 3)
    assert rnd == 3 and set(records) == {"client"}
    assert cs.load(where, 0) is None


def test_only_the_two_newest_rounds_are_kept_and_state_dir_wins(tmp_path):
    where = cs.folder(str(tmp_path / "node"), tmp_path / "results", "run-b", 0)
    assert where == tmp_path / "node" / "run-b" / "client-0"
    for rnd in (1, 2, 4, 4, 7):
        cs.save(where, rnd, {"client": {"w": np.full(1, rnd)}})
    assert sorted(p.name for p in where.iterdir()) == ["r00004.npz", "r00007.npz"]
    assert cs.load(where, 6)[0] == 4 and cs.load(where, 3) is None
