import csv

import numpy as np
import pytest

from flwr.app import ConfigRecord

from bouquet.strategies.rounds import configure, train_round
from bouquet.strategies.fedavg import FedAvgStrategy
from bouquet.strategies.fedprox import FedProxStrategy
from bouquet.strategies.local import LocalStrategy
from tests.strategies.helpers import global_arrays, make_strategy, reply

W0 = {"w": np.zeros((2, 2)), "b": np.zeros(2)}


def _setup(tmp_path, cls=FedAvgStrategy, **cfg):
    # node ids are arbitrary; partition ids are what matter
    strategy, recorder = make_strategy(cls, tmp_path, {501: 0, 77: 1, 9000: 2}, **cfg)
    strategy.global_arrays = global_arrays(**W0)
    return strategy, recorder


def test_weighted_average_by_num_examples(tmp_path):
    strategy, _ = _setup(tmp_path)
    replies = [
        reply(77, {"w": [[1, 2], [3, 4]], "b": [1, 1]}, {"num-examples": 1, "acc": 0.5}),
        reply(501, {"w": [[4, 8], [0, 0]], "b": [-2, 4]}, {"num-examples": 3, "acc": 0.9}),
    ]
    arrays, metrics = train_round(strategy, 1, replies)
    # (1*[1,2,3,4] + 3*[4,8,0,0]) / 4 ; (1*[1,1] + 3*[-2,4]) / 4
    np.testing.assert_allclose(arrays["w"].numpy(), [[13 / 4, 26 / 4], [3 / 4, 4 / 4]], rtol=1e-6)
    np.testing.assert_allclose(arrays["b"].numpy(), [-5 / 4, 13 / 4], rtol=1e-6)
    assert metrics["acc"] == pytest.approx((0.5 + 3 * 0.9) / 4)
    assert "partition-id" not in metrics


def test_nan_and_wrong_shape_updates_are_rejected_and_logged(tmp_path, caplog):
    strategy, recorder = _setup(tmp_path)
    good = reply(77, {"w": [[2, 2], [2, 2]], "b": [1, 1]}, {"num-examples": 5})
    nan = reply(501, {"w": [[np.nan, 0], [0, 0]], "b": [0, 0]}, {"num-examples": 100})
    inf = reply(9000, {"w": [[0, 0], [0, 0]], "b": [np.inf, 0]}, {"num-examples": 100})
    arrays, _ = train_round(strategy, 3, [nan, good, inf])
    np.testing.assert_array_equal(arrays["w"].numpy(), np.full((2, 2), 2.0))
    assert [(r["round"], r["partition_id"]) for r in recorder.rejections] == [(3, 0), (3, 2)]
    assert "partition 0" in caplog.text and "NaN or Inf" in caplog.text

    strategy.global_arrays = global_arrays(**W0)
    shape = reply(501, {"w": [[1, 2, 3]], "b": [0, 0]}, {"num-examples": 1})
    missing = reply(9000, {"w": [[0, 0], [0, 0]]}, {"num-examples": 1})
    arrays, _ = train_round(strategy, 4, [shape, good, missing])
    np.testing.assert_array_equal(arrays["b"].numpy(), [1, 1])
    reasons = [r["reason"] for r in recorder.rejections if r["round"] == 4]
    assert "shape (1, 3), expected (2, 2)" in reasons[0] and "missing ['b']" in reasons[1]


def test_all_rejected_keeps_the_global_model(tmp_path):
    strategy, _ = _setup(tmp_path)
    arrays, metrics = train_round(strategy, 1, [reply(77, {"w": [[np.nan] * 2] * 2, "b": [0, 0]}, {"num-examples": 1})])
    assert arrays is None and metrics is None  # Flower then keeps the previous arrays


def test_replies_sorted_by_partition_and_written_each_round(tmp_path):
    strategy, recorder = _setup(tmp_path)
    replies = [reply(n, {"w": np.ones((2, 2)), "b": np.ones(2)}, {"num-examples": 1, "acc": float(n)}) for n in (9000, 77, 501)]
    train_round(strategy, 1, replies)
    rows = list(csv.DictReader(open(recorder.run_dir / "metrics.csv")))
    client_rows = [r for r in rows if r["partition_id"] != "" and r["metric"] == "acc"]
    assert [r["partition_id"] for r in client_rows] == ["0", "1", "2"]
    assert [r for r in rows if r["partition_id"] == "" and r["metric"] == "acc"]


class _Grid:
    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return list(self.nodes)


def _sampled(strategy, monkeypatch, round_, nodes):
    seen = {}
    monkeypatch.setattr(strategy, "_construct_messages", lambda record, node_ids, kind: seen.update(record=record, nodes=node_ids) or [])
    configure(strategy, "train", round_, global_arrays(**W0), ConfigRecord(), _Grid(nodes))
    return seen


def test_sampling_is_seeded_and_independent_of_node_order(tmp_path, monkeypatch):
    partition_of = {1000 + 7 * p: p for p in range(10)}
    a, _ = make_strategy(FedAvgStrategy, tmp_path / "a", partition_of, **{"fraction-train": 0.3, "seed": 5})
    b, _ = make_strategy(FedAvgStrategy, tmp_path / "b", partition_of, **{"fraction-train": 0.3, "seed": 5})
    nodes = list(partition_of)
    pa = [sorted(partition_of[n] for n in _sampled(a, monkeypatch, r, nodes)["nodes"]) for r in (1, 2, 3)]
    pb = [sorted(partition_of[n] for n in _sampled(b, monkeypatch, r, nodes[::-1])["nodes"]) for r in (1, 2, 3)]
    assert pa == pb and all(len(p) == 3 for p in pa)
    assert len({tuple(p) for p in pa}) > 1  # different clients in different rounds


def test_fedprox_sends_mu_and_lr(tmp_path, monkeypatch):
    strategy, _ = make_strategy(FedProxStrategy, tmp_path, {1: 0, 2: 1}, **{"proximal-mu": 0.25, "learning-rate": 0.1})
    record = _sampled(strategy, monkeypatch, 1, [1, 2])["record"]
    config = record["config"]
    assert config["proximal-mu"] == 0.25 and config["lr"] == 0.1 and config["server-round"] == 1


def test_local_strategy_keeps_no_global_model(tmp_path):
    strategy, recorder = make_strategy(LocalStrategy, tmp_path, {1: 0, 2: 1})
    arrays, metrics = train_round(strategy, 1, [reply(1, {}, {"num-examples": 2, "local_model@local_test": 0.5}),
                                                   reply(2, {}, {"num-examples": 2, "local_model@local_test": 1.0})])
    assert arrays is None and metrics["local_model@local_test"] == pytest.approx(0.75)
