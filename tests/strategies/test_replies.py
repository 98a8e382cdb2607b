"""Attacks a participant can send, each refused or bounded by the server (unit level; the
same attacks in real runs are in tests/test_attacks.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bouquet.strategies.robust import RobustAggregation
from bouquet.strategies.rounds import evaluate_round, train_round
from bouquet import adversary
from bouquet.config import ConfigError, RunConfig
from bouquet.strategies.fedavg import FedAvgStrategy
from bouquet.strategies.fedkper import FedKPerStrategy
from bouquet.strategies.replies import clip_update, robust_mean
from flwr.app import ConfigRecord
from tests.strategies.helpers import global_arrays, make_strategy, reply

W0 = {"w": np.zeros((2, 2)), "b": np.zeros(2)}
NODES = {10: 0, 11: 1, 12: 2}


def _honest(node: int, value: float, n: float = 10.0, **metrics):
    return reply(node, {"w": np.full((2, 2), value), "b": np.full(2, value)}, {"num-examples": n, **metrics})


def _strategy(tmp_path, cls=FedAvgStrategy, **cfg):
    strategy, recorder = make_strategy(cls, tmp_path, NODES, **cfg)
    strategy.global_arrays = global_arrays(**W0)
    strategy.max_examples = {0: 100.0, 1: 100.0, 2: 100.0}
    return strategy, recorder


@pytest.mark.parametrize("attack", ["num-examples:1e12", "metrics-first", "extra-arrays", "extra-key", "float64",
                                    "complex64", "nan", "metric:local_model@local_test=7", "metric:num-examples=-3"])
def test_every_malformed_or_out_of_bounds_reply_is_rejected_and_named(tmp_path, attack, caplog):
    strategy, recorder = _strategy(tmp_path)
    # the attacker is the LAST client, so a crash in aggregation (e.g. complex64) would show
    bad = _honest(12, 5.0)
    bad.content = adversary.corrupt(bad.content, 2, f"{attack}@2")
    arrays, _ = train_round(strategy, 1, [_honest(10, 1.0), _honest(11, 3.0), bad])
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 2), 2.0))  # the two honest ones only
    assert arrays["w"].numpy().dtype == np.float32
    assert [(r["round"], r["partition_id"]) for r in recorder.rejections] == [(1, 2)]
    assert "partition 2" in caplog.text


def test_a_scaled_update_is_clipped_to_the_norm_bound(tmp_path):
    strategy, recorder = _strategy(tmp_path, **{"max-update-norm": 1.0})
    bad = _honest(12, 5.0)
    bad.content = adversary.corrupt(bad.content, 2, "scale:1e6@2")
    arrays, _ = train_round(strategy, 1, [_honest(10, 0.1), _honest(11, 0.1), bad])
    # honest updates (norm sqrt(6)*0.1 < 1) pass unchanged; the attacker's counts with norm 1
    # in the direction of ones: w_i = 1/sqrt(6) each
    expected = (0.1 * 10 + 0.1 * 10 + 10 / math.sqrt(6)) / 30
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 2), expected), rtol=1e-5)
    norms = {r["partition_id"]: float(r["value"]) for r in _rows(recorder) if r["metric"] == "update_norm"}
    assert norms["2"] == pytest.approx(5e6 * math.sqrt(6), rel=1e-6)  # the log names the attacker's norm


def _rows(recorder):
    import csv

    return list(csv.DictReader(open(recorder.run_dir / "metrics.csv")))


@pytest.mark.parametrize(("aggregator", "expected"), [("median", 3.0), ("trimmed-mean", 3.0)])
def test_robust_aggregators_ignore_one_outlier(tmp_path, aggregator, expected):
    strategy, _ = _strategy(tmp_path, aggregator=aggregator, **{"trim-fraction": 0.2})
    strategy.clients = type(strategy.clients)({10 + i: i for i in range(5)}, 5)
    strategy.max_examples = {i: 100.0 for i in range(5)}
    replies = [_honest(10 + i, v) for i, v in enumerate([1.0, 2.0, 3.0, 4.0, 1e6])]
    arrays, _ = train_round(RobustAggregation(strategy, aggregator, 0.2), 1, replies)
    # median of (1,2,3,4,1e6) = 3; trimmed mean cutting 1 per side = mean(2,3,4) = 3
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 2), expected))


def test_clip_and_robust_mean_against_hand_values():
    ref = {"a": np.zeros(2, np.float32)}
    clipped, norm = clip_update({"a": np.array([3.0, 4.0], np.float32)}, ref, 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.8], rtol=1e-6)
    same, _ = clip_update({"a": np.array([0.3, 0.4], np.float32)}, ref, 1.0)
    np.testing.assert_array_equal(same["a"], np.array([0.3, 0.4], np.float32))  # untouched
    stacked = np.array([[0.0], [1.0], [2.0], [10.0]])
    assert robust_mean(stacked, "median", 0.0)[0] == pytest.approx(1.5)
    assert robust_mean(stacked, "trimmed-mean", 0.25)[0] == pytest.approx(1.5)  # mean(1, 2)


def test_evaluate_replies_carry_metrics_only_and_need_no_training_weight(tmp_path):
    strategy, recorder = _strategy(tmp_path, FedKPerStrategy, method="fedkper", dataset="digits", partitioner="iid")
    strategy.max_examples_total = 400.0
    honest = reply(10, None, {"num-examples": 20, "global_model@local_test": 0.5, "num-examples@new_client": 350})
    inflated = reply(11, None, {"num-examples": 20, "global_model@local_test": 1.0, "num-examples@local_test": 1e9})
    with_arrays = _honest(12, 1.0)
    metrics = evaluate_round(strategy, 1, [honest, inflated, with_arrays])
    assert metrics["global_model@local_test"] == pytest.approx(0.5)  # only the honest reply counts
    assert [r["partition_id"] for r in recorder.rejections] == [1, 2]
    assert "partition's size" in recorder.rejections[0]["reason"] and "ArrayRecords" in recorder.rejections[1]["reason"]


@pytest.mark.parametrize("score", [1e9, -0.5])
def test_fedkper_scores_outside_their_range_are_rejected(tmp_path, score):
    strategy, recorder = _strategy(tmp_path, FedKPerStrategy, method="fedkper", dataset="digits", partitioner="iid")
    arrays, _ = train_round(strategy, 1, [_honest(10, 1.0, **{"fedkper-score": 0.5}),
                                             _honest(11, 3.0, **{"fedkper-score": score}),
                                             _honest(12, 5.0, **{"fedkper-score": 0.5})])
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 2), 3.0))  # (1·0.5 + 5·0.5) / 1
    assert [r["partition_id"] for r in recorder.rejections] == [1]


def test_fedlog_reply_without_its_weight_is_rejected_not_a_crash(tmp_path):
    from bouquet.strategies.fedlog import FedLoGStrategy

    strategy, recorder = _strategy(tmp_path, FedLoGStrategy, method="fedlog", dataset="cora")
    problem = strategy.rules(0, "train")
    assert problem.weight_key == "fedlog-uniform" and problem.weight_range == (1.0, 1.0)
    from bouquet.strategies.replies import reply_problem

    msg = _honest(10, 1.0)
    assert "ArrayRecords" in reply_problem(msg.content, strategy.global_arrays, problem)  # no upload record
    without_upload = dataclasses.replace(problem, array_records=frozenset({"arrays"}))
    assert "weight 'fedlog-uniform'=None is missing" in reply_problem(msg.content, strategy.global_arrays, without_upload)


def test_a_run_that_never_trained_or_mostly_rejected_is_a_failure(tmp_path):
    strategy, _ = _strategy(tmp_path)
    for rnd in (1, 2):
        train_round(strategy, rnd, [_honest(10, np.nan)])
    assert "never trained" in strategy.gate.run_problem()
    strategy, _ = _strategy(tmp_path / "b")
    bad = _honest(12, 1.0)
    bad.content = adversary.corrupt(bad.content, 2, "scale:1e6@2")
    train_round(strategy, 1, [_honest(10, 1.0), _honest(11, 1.0), bad])  # averaged in: mean is the default
    for rnd in (2, 3):  # from the poisoned model every client diverges
        train_round(strategy, rnd, [_honest(node, np.nan) for node in NODES])
    problem = strategy.gate.run_problem()
    assert "6 of 9 train replies were rejected" in problem and problem.index("partition 2") < problem.index("partition 0")
    healthy, _ = _strategy(tmp_path / "c")
    train_round(healthy, 1, [_honest(10, 1.0), _honest(11, 1.0)])
    assert healthy.gate.run_problem() is None


def test_min_replies_larger_than_the_sampled_clients_is_refused():
    RunConfig.from_run_config({"min-replies": 3}).check_federation(3)
    with pytest.raises(ConfigError, match=r"min-replies=4 is more than the 3 client\(s\) sampled per round"):
        RunConfig.from_run_config({"min-replies": 4}).check_federation(3)
    with pytest.raises(ConfigError, match=r"min-replies=2 is more than the 1 client"):
        RunConfig.from_run_config({"min-replies": 2, "fraction-train": 0.5}).check_federation(3)
    with pytest.raises(ConfigError, match="trim-fraction"):
        RunConfig.from_run_config({"trim-fraction": 0.5})


def _lying(shape_claimed, real: np.ndarray):
    """An Array whose header (what Flower carries apart from the bytes) claims float32
    ``shape_claimed`` while its bytes are the .npy of ``real``; sent through Flower's own
    deflate/inflate, as the transport carries it."""
    import io

    from flwr.app import Array

    buf = io.BytesIO()
    np.save(buf, real, allow_pickle=False)
    arr = Array(dtype="float32", shape=tuple(shape_claimed), stype="numpy.ndarray", data=buf.getvalue())
    return Array.inflate(arr.deflate(), arr.children)


@pytest.mark.parametrize("real", [np.ones((3, 2, 2), np.float32),  # broadcasts: would reshape the global model
                                  np.ones(5, np.float32),  # does not: would crash the clip
                                  np.full((2, 2), 1e300),  # float64 under a float32 header
                                  np.ones((400, 400), np.float32)])  # 640 kB under a 16-byte header
@pytest.mark.parametrize("position", [0, 2])
def test_an_array_whose_bytes_contradict_its_header_is_rejected(tmp_path, real, position):
    strategy, recorder = _strategy(tmp_path, **{"max-update-norm": 10.0})  # the clip reads the bytes too
    replies = [_honest(10, 0.1), _honest(11, 0.3), _honest(12, 0.5)]
    replies[position].content["arrays"]["w"] = _lying((2, 2), real)
    arrays, _ = train_round(strategy, 1, replies)
    honest = [0.1, 0.3, 0.5]
    del honest[position]
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 2), np.mean(honest)), rtol=1e-6)
    assert arrays["w"].numpy().dtype == np.float32 and arrays["w"].numpy().shape == (2, 2)
    assert [r["partition_id"] for r in recorder.rejections] == [position]
    assert strategy.gate.run_problem() is None


@pytest.mark.parametrize("key", ["dp-epsilon-spent", "update_norm", "global_model@global_test", "arch3@global_test",
                                 "hungarian:global_model@global_test_new", "nfr:global_model@global_test",
                                 "best-checkpoint:global_model@global_test", "global_model@new_client",
                                 "global_model@generated", "gefl-phase", "global_loss"])
def test_a_client_cannot_write_a_metric_the_server_computes(tmp_path, key):
    strategy, recorder = _strategy(tmp_path)
    recorder.server_metrics(1, {"dp-epsilon-spent": 2.5, "global_model@global_test": 0.31})
    forged = _honest(12, 1.0, **{key: 0.0})
    evaluate_round(strategy, 1, [reply(10, None, {"num-examples": 10, "global_model@local_test": 0.5}),
                                 reply(12, None, dict(forged.content["metrics"]))])
    assert recorder.server[1]["dp-epsilon-spent"] == 2.5 and recorder.server[1]["global_model@global_test"] == 0.31
    assert key not in recorder.server[1] or key in ("dp-epsilon-spent", "global_model@global_test")
    assert [r["partition_id"] for r in recorder.rejections] == [2] and "computed by the server" in recorder.rejections[0]["reason"]


def test_server_owned_names_leave_the_clients_own_scores_alone():
    from bouquet import metrics as M

    for key in ("global_model@local_test", "local_model@global_test", "hungarian:local_model@global_test_old",
                "hungarian:local_model@unlabelled", "bwt", "train_loss", "nfr:local_model@local_test", "estimated_k"):
        assert not M.server_owned(key), key


@pytest.mark.parametrize("metrics, reason", [
    ({"local_model@$\\foo{$": 0.5}, "metric name"),  # TeX: would crash the plots at the end of the run
    ({"x" * 101: 1.0}, "metric name"),
    ({"train_loss": 1e308}, "beyond"),  # would overflow the weighted mean to inf
    ({"estimated_k": -1e300}, "beyond"),
    ({"num-examples@local_test": float("nan")}, "count must be a number"),
    ({"num-examples@local_test": 150, "global_model@local_test": 0.0}, "partition's size"),  # 100 in the partition
])
def test_metric_names_values_and_counts_out_of_bounds_are_rejected(tmp_path, metrics, reason):
    strategy, recorder = _strategy(tmp_path)
    strategy.partition_sizes = strategy.max_examples
    strategy.max_examples_total = 300.0
    evaluate_round(strategy, 1, [reply(10, None, {"num-examples": 10, "global_model@local_test": 0.9}),
                                 reply(11, None, {"num-examples": 10, **metrics})])
    assert [r["partition_id"] for r in recorder.rejections] == [1] and reason in recorder.rejections[0]["reason"]
    assert recorder.server[1] == {"global_model@local_test": pytest.approx(0.9)}


def test_duplicate_and_unasked_replies_are_rejected(tmp_path, monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    from bouquet.strategies.rounds import configure

    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):  # messages made outside a ServerApp
        monkeypatch.setattr(TaskIdentity, attr, value)

    strategy, recorder = _strategy(tmp_path, **{"fraction-train": 2 / 3})

    class Grid:
        def get_node_ids(self):
            return list(NODES)

    asked = [m.metadata.dst_node_id for m in configure(strategy, "train", 1, strategy.global_arrays, ConfigRecord(), Grid())]
    (stranger,) = set(NODES) - set(asked)
    arrays, _ = train_round(strategy, 1, [_honest(asked[0], 1.0), _honest(asked[1], 3.0), _honest(asked[1], 1e3),
                                          _honest(stranger, 1e3)])
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 2), 2.0))
    reasons = sorted(r["reason"] for r in recorder.rejections)
    assert reasons == ["train: a reply from a node that was not asked", "train: a second reply from the same node"]


def test_local_training_replies_carry_no_arrays(tmp_path):
    from bouquet.strategies.local import LocalStrategy

    strategy, recorder = _strategy(tmp_path, LocalStrategy, method="local")
    train_round(strategy, 1, [reply(10, {}, {"num-examples": 10}), _honest(11, np.nan)])
    assert [r["partition_id"] for r in recorder.rejections] == [1] and "no global model" in recorder.rejections[0]["reason"]


def test_rounds_whose_aggregate_fails_make_the_run_a_failure(tmp_path, monkeypatch):
    strategy, _ = _strategy(tmp_path)
    train_round(strategy, 1, [_honest(10, 1.0)])
    monkeypatch.setattr(strategy, "aggregate_train", lambda *_: (global_arrays(w=np.full((2, 2), np.inf), b=W0["b"]), None))
    train_round(strategy, 2, [_honest(10, 1.0)])
    assert strategy.gate.run_problem() is None  # one failed round of two: the run still trained
    monkeypatch.setattr(strategy, "aggregate_train", lambda *_: 1 / 0)
    train_round(strategy, 3, [_honest(10, 1.0)])
    assert "changed in only 1 of 3 rounds" in strategy.gate.run_problem()
    strategy, _ = _strategy(tmp_path / "b", **{"min-replies": 2})
    train_round(strategy, 1, [_honest(10, 1.0), _honest(11, 1.0)])
    for rnd in (2, 3):  # a node errs from round 2 on: too few replies, the model stays
        train_round(strategy, rnd, [_honest(10, 1.0)])
    assert "changed in only 1 of 3 rounds (too few sound replies for min-replies=2" in strategy.gate.run_problem()


def test_fedpub_refuses_a_robust_rule_that_would_not_cover_its_personalized_models():
    with pytest.raises(ConfigError, match="aggregator='median' with method='fedpub'"):
        RunConfig.from_run_config({"method": "fedpub", "aggregator": "median"})


def test_an_integer_buffer_too_large_to_average_exactly_is_rejected(tmp_path):
    from flwr.app import Array

    from bouquet.strategies.replies import reply_problem

    strategy, _ = _strategy(tmp_path)
    strategy.global_arrays["steps"] = Array(np.array(7, dtype=np.int64))
    msg = _honest(10, 1.0)
    for value, sound in ((12, True), (2**53, True), (2**62, False), (-(2**62), False), (-(2**63), False)):
        msg.content["arrays"]["steps"] = Array(np.array(value, dtype=np.int64))
        problem = reply_problem(msg.content, strategy.global_arrays, strategy.rules(0, "train"))
        assert (problem is None) == sound, (value, problem)
