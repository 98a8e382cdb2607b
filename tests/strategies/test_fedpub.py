import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from bouquet.strategies.rounds import train_round
from bouquet.clients.fedpub import personalized_weights
from bouquet.strategies.fedpub import FedPubStrategy, mix
from tests.strategies.helpers import global_arrays, make_strategy, reply


def test_personalized_weights_are_normalised_exp_cosine():
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])  # cos: 0&2 = 1, 0&1 = 0
    w = personalized_weights(emb, scale=3.0)
    e3 = math.exp(3.0)
    np.testing.assert_allclose(w[0], [e3, 1.0, e3] / np.float64(2 * e3 + 1))
    np.testing.assert_allclose(w[1], [1.0, e3, 1.0] / np.float64(e3 + 2))
    np.testing.assert_allclose(w.sum(1), 1.0)


def _reply(node, w, emb, n):
    msg = reply(node, {"w": np.full(2, w)}, {"num-examples": n})
    msg.content["fedpub"] = ArrayRecord({"embedding": Array(np.asarray(emb, dtype=np.float32))})
    return msg


def test_each_client_gets_its_similarity_mix_and_global_is_size_weighted(tmp_path):
    strategy, recorder = make_strategy(FedPubStrategy, tmp_path, {10: 0, 20: 1, 30: 2}, method="fedpub",
                                       **{"fedpub-norm-scale": 0.0})
    strategy.global_arrays = global_arrays(w=np.zeros(2))
    e = np.zeros(128)
    e[0] = 1.0
    bad = np.full(128, np.nan)
    arrays, _ = train_round(strategy, 1, [_reply(20, 4.0, e, 3), _reply(10, 0.0, e, 1), _reply(30, 9.0, bad, 5)])
    np.testing.assert_allclose(arrays["w"].numpy(), [3.0, 3.0])  # (1*0 + 3*4) / 4
    # scale 0: every client mixes all (sound) clients uniformly
    np.testing.assert_allclose(strategy.personalized[0]["w"], [2.0, 2.0])
    np.testing.assert_allclose(strategy.personalized[1]["w"], [2.0, 2.0])
    assert 2 not in strategy.personalized and [r["partition_id"] for r in recorder.rejections] == [2]


def test_mix_is_a_weighted_sum():
    out = mix([{"a": np.array([1.0, 2.0])}, {"a": np.array([3.0, 6.0])}], np.array([0.25, 0.75]))
    np.testing.assert_allclose(out["a"], [2.5, 5.0])
    assert out["a"].dtype == np.float32
