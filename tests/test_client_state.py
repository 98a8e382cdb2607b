"""Client state snapshots on the node's disk (the resume path is tested in test_resume.py)."""

import numpy as np
import pytest

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


@pytest.mark.parametrize("key", ["../elsewhere", "/etc", "a/../../b", "..", "", "x" * 300])
def test_a_state_key_from_the_server_cannot_leave_the_state_dir(tmp_path, key):
    from bouquet import client_state

    with pytest.raises(ValueError, match="not a plain folder name"):
        client_state.folder(str(tmp_path), tmp_path, key, 0)
    assert client_state.folder(str(tmp_path), tmp_path, "fedavg_digits_iid_k3_s0_20261205-1.2", 1).parent.parent == tmp_path


@pytest.mark.parametrize("value", [0.5, True, "0", 3.0])
def test_a_partition_id_that_is_not_an_integer_is_refused_not_rounded(value):
    from types import SimpleNamespace

    from bouquet.client_app import _identity

    with pytest.raises(ValueError, match="partition-id"):
        _identity(SimpleNamespace(node_config={"partition-id": value, "num-partitions": 3}))
    assert _identity(SimpleNamespace(node_config={"partition-id": 2, "num-partitions": 3})) == (2, 3)
