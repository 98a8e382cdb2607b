import numpy as np
import pytest

from bouquet.strategies.rounds import train_round
from bouquet.strategies.fedkper import FedKPerStrategy
from bouquet.strategies.fedavg import FedAvgStrategy
from tests.strategies.helpers import global_arrays, make_strategy, reply


def _setup(tmp_path, cls=FedKPerStrategy, **cfg):
    strategy, recorder = make_strategy(cls, tmp_path, {10: 0, 11: 1, 12: 2}, method="fedkper", **cfg)
    strategy.global_arrays = global_arrays(w=np.zeros(2))
    return strategy, recorder


def test_weights_are_scores_not_sizes(tmp_path):
    strategy, _ = _setup(tmp_path)
    replies = [reply(10, {"w": [1.0, 0.0]}, {"num-examples": 1000, "fedkper-score": 0.1}),
               reply(11, {"w": [0.0, 1.0]}, {"num-examples": 10, "fedkper-score": 0.3})]
    arrays, _ = train_round(strategy, 1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [0.25, 0.75], rtol=1e-6)


@pytest.mark.parametrize("scores", [(0.2, float("nan")), (0.0, 0.0)])
def test_unusable_scores_fall_back_to_sample_size(tmp_path, caplog, scores):
    strategy, _ = _setup(tmp_path)
    replies = [reply(10, {"w": [1.0, 0.0]}, {"num-examples": 3, "fedkper-score": scores[0]}),
               reply(11, {"w": [0.0, 1.0]}, {"num-examples": 1, "fedkper-score": scores[1]})]
    arrays, _ = train_round(strategy, 1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [0.75, 0.25], rtol=1e-6)
    assert "falling back to sample-size FedAvg" in caplog.text


def test_lr_decays_per_round(tmp_path):
    strategy, _ = _setup(tmp_path, FedAvgStrategy, **{"learning-rate": 0.01, "lr-decay": 0.99})
    assert strategy.round_config(1)["lr"] == pytest.approx(0.01)
    assert strategy.round_config(11)["lr"] == pytest.approx(0.01 * 0.99**10)


def test_replies_with_different_metric_keys_still_aggregate(tmp_path):
    # a returning client reports local flip rates, a first-timer does not
    # (Flower's FedAvg gets the keys all replies share; the run's record keeps every key)
    strategy, recorder = _setup(tmp_path, FedAvgStrategy)
    replies = [reply(10, {"w": [2.0, 2.0]}, {"num-examples": 1, "nfr:local_model@local_test": 0.1}),
               reply(11, {"w": [0.0, 0.0]}, {"num-examples": 1})]
    arrays, _ = train_round(strategy, 2, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [1.0, 1.0])
    assert recorder.server[2]["nfr:local_model@local_test"] == pytest.approx(0.1)
