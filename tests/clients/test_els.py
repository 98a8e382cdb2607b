"""ELS's client (per-example clipping against the closed-form softmax gradient) and the
client-side clipping mod Flower's DP wrapper asks for."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from bouquet.client_app import dp_clipping_mod
from bouquet.clients.base import ClientCall, model_to_arrays
from bouquet.clients.els import ELSClient, clipped_gradient_sum
from bouquet.config import RunConfig
from bouquet.datasets import data_root, load_dataset
from bouquet.models import build_model


def _softmax_grads(w, b, x, y):
    """d CE / d(W, b) of one example by hand: (softmax(Wx + b) − onehot(y)) xᵀ and its bias part."""
    z = w @ x + b
    p = np.exp(z - z.max())
    p /= p.sum()
    p[y] -= 1.0
    return np.outer(p, x), p


def test_per_example_gradients_are_clipped_then_summed():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    x = torch.randn(6, 3) * 5
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    clip = 0.7
    got, _ = clipped_gradient_sum(model, x, y, clip)
    w, b = model.weight.detach().double().numpy(), model.bias.detach().double().numpy()
    want_w, want_b = np.zeros_like(w), np.zeros_like(b)
    for xi, yi in zip(x.double().numpy(), y.numpy(), strict=True):
        gw, gb = _softmax_grads(w, b, xi, yi)
        scale = min(1.0, clip / np.sqrt((gw**2).sum() + (gb**2).sum()))
        want_w += scale * gw
        want_b += scale * gb
    np.testing.assert_allclose(got["weight"].numpy(), want_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["bias"].numpy(), want_b, rtol=1e-4, atol=1e-6)


def test_els_client_sends_a_sum_bounded_by_the_sampled_count():
    cfg = RunConfig.from_run_config({"method": "els", "dataset": "digits", "partitioner": "iid"})
    arrays = model_to_arrays(build_model(load_dataset("digits", data_root("")), "auto"))
    call = ClientCall(cid=1, num_partitions=4, server_round=3, run=cfg, arrays=arrays,
                      config={"dp-k": 40, "dp-sampling-rate": 0.25, "dp-clip": 0.5})
    reply = ELSClient().train(call)
    sampled = reply.metrics["els-sampled"]
    assert reply.metrics["num-examples"] == 40  # the contribution bound k
    assert 0 < sampled < 40
    norm = np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in reply.arrays.values()))
    assert norm <= sampled * 0.5 + 1e-5
    again = ELSClient().train(call)  # seeded: the same examples, the same sum
    assert again.metrics["els-sampled"] == sampled


@pytest.fixture
def _identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 1), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _message(config):
    content = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(3, np.float32))}), "config": ConfigRecord(config)})
    return Message(content, dst_node_id=1, message_type="train")


@pytest.mark.parametrize(("config", "expected_norm"), [({KEY_CLIPPING_NORM: 0.5}, 0.5), ({}, 5.0)])
def test_clipping_mod_clips_only_when_the_server_asks(_identity, monkeypatch, config, expected_norm):
    monkeypatch.setattr("bouquet.client_app.RunConfig.from_run_config", lambda _: RunConfig(method="fedavg"))

    def trained(msg, context):
        out = RecordDict({"arrays": ArrayRecord({"w": Array(np.array([3.0, 4.0, 0.0], np.float32))}),
                          "metrics": MetricRecord({"num-examples": 1})})
        return Message(out, reply_to=msg)

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    out = dp_clipping_mod(_message(config), context, trained)
    assert np.linalg.norm(out.content["arrays"]["w"].numpy()) == pytest.approx(expected_norm, rel=1e-6)
