"""Per-architecture averaging, GeFL's phases and the checks on a client's architecture claim."""

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict

from bouquet import metrics as M
from bouquet.config import ConfigError, RunConfig
from bouquet.strategies.gefl import MODEL_ARCH, GeFLStrategy, aggregate_bundle, checkpoint_round, schedule

G = {"arch0.w": np.array([0.0, 0.0]), "arch1.w": np.array([1.0]), "arch2.w": np.array([7.0]),
     "arch0.fe.k": np.array([0.0]), "arch1.fe.k": np.array([0.0]), "arch2.fe.k": np.array([5.0]),
     "arch0.fe.n": np.array(4, dtype=np.int64), "arch1.fe.n": np.array(4, dtype=np.int64),
     "arch2.fe.n": np.array(4, dtype=np.int64), "gen.z": np.array([1.0])}


def _reply(arch, **own):
    arrays = {k: v + 100.0 if v.dtype.kind == "f" else v for k, v in G.items()}  # others' keys: junk
    arrays.update({k: np.asarray(v, dtype=G[k].dtype) for k, v in own.items()})
    return arrays


def _replies():
    return [(0, 1.0, _reply(0, **{"arch0.w": [2.0, 4.0], "arch0.fe.k": [1.0], "gen.z": [3.0]})),
            (0, 3.0, _reply(0, **{"arch0.w": [6.0, 8.0], "arch0.fe.k": [3.0], "gen.z": [5.0]})),
            (1, 2.0, _reply(1, **{"arch1.w": [10.0], "arch1.fe.k": [9.0], "arch1.fe.n": 10, "gen.z": [8.0]}))]


def test_architectures_never_mix_and_an_absent_one_is_kept():
    new = aggregate_bundle(G, _replies(), "target", share_fe=False, freeze_fe=False)
    np.testing.assert_allclose(new["arch0.w"], [(2 + 3 * 6) / 4, (4 + 3 * 8) / 4])  # 5, 7
    np.testing.assert_allclose(new["arch0.fe.k"], [(1 + 3 * 3) / 4])
    np.testing.assert_allclose(new["arch1.w"], [10.0])  # the arch-0 replies' arch1 keys (junk) are ignored
    assert new["arch2.w"] is G["arch2.w"] and new["arch2.fe.k"] is G["arch2.fe.k"]  # nobody runs arch 2
    assert new["gen.z"] is G["gen.z"]  # a target round leaves the generator alone


def test_lg_fedavg_averages_the_first_block_over_all_clients_into_every_architecture():
    new = aggregate_bundle(G, _replies(), "warmup", share_fe=True, freeze_fe=False)
    fe = (1 * 1 + 3 * 3 + 2 * 9) / 6
    for m in range(3):
        np.testing.assert_allclose(new[f"arch{m}.fe.k"], [fe])
    assert new["arch0.fe.n"] == 6 and new["arch0.fe.n"].dtype == np.int64  # rint((4+12+20)/6)
    np.testing.assert_allclose(new["arch0.w"], [5.0, 7.0])


def test_frozen_first_block_is_never_changed_by_replies():
    new = aggregate_bundle(G, _replies(), "target", share_fe=False, freeze_fe=True)
    for m in range(3):
        np.testing.assert_array_equal(new[f"arch{m}.fe.k"], G[f"arch{m}.fe.k"])
    np.testing.assert_allclose(new["arch1.w"], [10.0])


def test_generator_round_averages_only_the_generator():
    new = aggregate_bundle(G, _replies(), "generator", share_fe=False, freeze_fe=False)
    np.testing.assert_allclose(new["gen.z"], [(3 + 15 + 16) / 6])
    assert all(new[k] is G[k] for k in G if not k.startswith("gen."))


def test_trained_alone_takes_the_first_client_of_each_architecture():
    new = aggregate_bundle(G, _replies(), "target", share_fe=False, freeze_fe=False, average=False)
    np.testing.assert_allclose(new["arch0.w"], [2.0, 4.0])


def _cfg(method, **kw):
    return RunConfig.from_run_config({"method": method, "dataset": "mnist", "partitioner": "iid", **kw})


def test_phase_schedule_and_the_authors_checkpoints():
    cfg = _cfg("gefl-f", **{"gefl-fe-rounds": 2, "gefl-gen-rounds": 3, "num-server-rounds": 27})
    plan = schedule(cfg)
    assert [p for p, _ in plan] == ["warmup"] * 2 + ["generator"] * 3 + ["target"] * 22
    ckpts = [r for r in range(1, 28) if checkpoint_round(cfg, r)]
    assert ckpts == [1, 2, 6, 15, 25, 27]  # warm-up 1 and last; target 1, 10, 20, 22 (last)
    assert {p for p, _ in schedule(_cfg("hetero-fedavg", **{"num-server-rounds": 4}))} == {"target"}
    assert {p for p, _ in schedule(_cfg("lg-fedavg", **{"num-server-rounds": 4}))} == {"warmup"}


def test_a_run_without_target_rounds_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="num-server-rounds"):
        _cfg("gefl", **{"gefl-gen-rounds": 5, "num-server-rounds": 5})


class _Recorder:
    def server_metrics(self, *a):
        pass


def _strategy():
    s = GeFLStrategy.__new__(GeFLStrategy)
    s.pinned, s.cfg, s.recorder = {}, _cfg("hetero-fedavg"), _Recorder()
    return s


@pytest.mark.parametrize(("arch", "pid", "reason"), [
    (10, 3, "not an architecture"), (-1, 3, "not an architecture"), (2.0, 3, "not an architecture"), (2, 4, "not the sender's partition")])
def test_architecture_claims_out_of_bounds_are_rejected(arch, pid, reason):
    content = RecordDict({"metrics": MetricRecord({MODEL_ARCH: arch, M.PARTITION_ID: pid})})
    assert reason in _strategy().partition_problem(3, content)


def test_a_partition_cannot_switch_architecture_and_the_pin_survives_resume():
    s = _strategy()
    claim = lambda a: RecordDict({"metrics": MetricRecord({MODEL_ARCH: a, M.PARTITION_ID: 3})})  # noqa: E731
    assert s.partition_problem(3, claim(2)) is None
    assert "runs architecture 2" in s.partition_problem(3, claim(5))
    t = _strategy()
    t.load_state_arrays(s.state_arrays())
    assert "runs architecture 2" in t.partition_problem(3, claim(5))


@pytest.mark.parametrize(("key", "value", "named"), [("aggregator", "median", "aggregator"), ("dp", "uls", "dp")])
def test_settings_that_would_mix_architectures_or_void_a_guarantee_are_refused(key, value, named):
    with pytest.raises(ConfigError, match=named):
        _cfg("hetero-fedavg", **{key: value})
