"""FedKPer, FedNTD and Ditto client math against hand computation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bouquet.clients.base import ClientCall
from bouquet.clients.ditto import PREFIX, DittoClient
from bouquet.clients.fedkper import SCORE, FedKPerClient, alignment_beta, kper_loss, label_diversity, reliability_score
from bouquet.clients.fedntd import ntd_loss, not_true
from bouquet.clients.base import model_to_arrays
from bouquet.config import RunConfig


def _softmax(v):
    e = np.exp(np.asarray(v, dtype=float) - np.max(v))
    return e / e.sum()


def test_beta_is_inverse_global_ce_capped():
    y = torch.tensor([0, 1])
    zg = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    ce = -(math.log(_softmax([2, 0])[0]) + math.log(_softmax([0, 1])[1])) / 2
    assert alignment_beta(zg, y, 10.0).item() == pytest.approx(1 / ce, rel=1e-5)
    sure = torch.tensor([[50.0, 0.0], [0.0, 50.0]])  # CE ~ 0 -> capped
    assert alignment_beta(sure, y, 10.0).item() == pytest.approx(10.0)


def test_kper_loss_against_hand_computation():
    y = torch.tensor([2])
    z = torch.tensor([[1.0, 0.0, -1.0]])
    zg = torch.tensor([[0.5, 0.2, 0.1]])
    p, q = _softmax([1, 0, -1]), _softmax([0.5, 0.2, 0.1])
    ce = -math.log(p[2])
    beta = min(1 / -math.log(q[2]), 10.0)
    kl = float(np.sum(q * (np.log(q) - np.log(p))))  # KL(softmax(z_g) ‖ softmax(z)), tau = 1
    assert kper_loss(z, zg, y, 1.0, 10.0).item() == pytest.approx(ce + beta * kl, rel=1e-5)
    # tau = 2 scales the KL of the softened distributions by tau²
    p2, q2 = _softmax([0.5, 0, -0.5]), _softmax([0.25, 0.1, 0.05])
    kl2 = float(np.sum(q2 * (np.log(q2) - np.log(p2))))
    assert kper_loss(z, zg, y, 2.0, 10.0).item() == pytest.approx(ce + beta * 4 * kl2, rel=1e-5)


def test_ntd_loss_distils_only_not_true_classes():
    y = torch.tensor([1])
    z = torch.tensor([[1.0, 3.0, -1.0]])
    zg = torch.tensor([[0.0, -2.0, 2.0]])
    assert not_true(z, y).tolist() == [[1.0, -1.0]]
    tau, beta = 3.0, 1.0
    p, q = _softmax([1 / tau, -1 / tau]), _softmax([0.0, 2 / tau])
    kl = float(np.sum(q * (np.log(q) - np.log(p))))
    ce = F.cross_entropy(z, y).item()
    assert ntd_loss(z, zg, y, tau, beta).item() == pytest.approx(ce + beta * tau**2 * kl, rel=1e-5)
    # changing the true-class logit of the global model changes nothing
    zg2 = zg.clone()
    zg2[0, 1] = 9.0
    assert ntd_loss(z, zg2, y, tau, beta).item() == pytest.approx(ntd_loss(z, zg, y, tau, beta).item())
    # two classes: one not-true logit, nothing to distil -> plain cross-entropy
    z2, g2 = torch.tensor([[0.3, -0.2]]), torch.tensor([[5.0, 1.0]])
    assert ntd_loss(z2, g2, torch.tensor([0]), tau, beta).item() == pytest.approx(F.cross_entropy(z2, torch.tensor([0])).item())


def test_label_diversity_and_score():
    assert label_diversity(np.array([0, 1, 2, 3]), 4) == pytest.approx(1.0)
    assert label_diversity(np.array([1, 1, 1]), 4) == pytest.approx(0.0)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(4)
    assert label_diversity(np.array([0, 0, 0, 2]), 4) == pytest.approx(h)
    assert reliability_score(0.8, h) == pytest.approx(0.8 * (1e-6 + h))
    assert reliability_score(-0.1, h) == 0.0
    assert math.isnan(reliability_score(float("nan"), h))


def _call(arrays, state=None, rnd=1, method="fedkper", **cfg):
    run = RunConfig.from_run_config({"method": method, "dataset": "digits", "partitioner": "iid",
                                     "learning-rate": 0.05, "batch-size": 32,
                                     **{k.replace("_", "-"): v for k, v in cfg.items()}})
    return ClientCall(cid=0, num_partitions=2, server_round=rnd, run=run, arrays=arrays, state=state or {})


def test_fedkper_client_reports_its_score():
    start = model_to_arrays(_call({}).new_model())
    reply = FedKPerClient().train(_call(start))
    data = _call(start).data
    div = label_diversity(data.y_train, data.num_classes)
    assert reply.metrics[SCORE] == pytest.approx(reply.metrics["train_accuracy"] * (1e-6 + div))
    assert 0.0 < reply.metrics["train_accuracy"] <= 1.0


def test_ditto_keeps_a_personal_model_in_state():
    start = model_to_arrays(_call({}).new_model())
    first = DittoClient().train(_call(start, method="ditto", ditto_lambda=0.0))
    personal = {k[len(PREFIX):]: v for k, v in first.state.items() if k.startswith(PREFIX)}
    assert personal.keys() == start.keys()
    # lambda = 0: the personal model trained exactly as the upload did (same data order)
    for k in start:
        np.testing.assert_allclose(personal[k], first.arrays[k], atol=1e-6)
    # round 2 resumes the personal model from state, not from the new global model
    second = DittoClient().train(_call(start, first.state, rnd=2, method="ditto", ditto_lambda=0.0))
    again = DittoClient().train(_call(start, {}, rnd=2, method="ditto", ditto_lambda=0.0))
    assert second.metrics["local_model@local_test"] > again.metrics["local_model@local_test"]  # two rounds of training vs one
    assert any(not np.allclose(second.state[PREFIX + k], again.state[PREFIX + k]) for k in start)
