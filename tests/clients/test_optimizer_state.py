"""Optimizer state kept across rounds (FED-PUB's code): saved exactly, resumed exactly, refused where
it is not analysed."""

import math

import numpy as np
import pytest
import torch

from bouquet.clients.base import ClientCall, model_to_arrays
from bouquet.clients.fedavg import OPTIMIZER, FedAvgClient
from bouquet.clients.local import PREFIX, LocalClient
from bouquet.clients.training import load_optimizer_arrays, make_optimizer, optimizer_arrays
from bouquet.config import ConfigError, RunConfig


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_a_saved_and_reloaded_optimizer_continues_exactly_as_the_uninterrupted_one(name):
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))

    def step(model, opt):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    opt_a, opt_b = make_optimizer(a.parameters(), name, 0.1, 1e-4), make_optimizer(b.parameters(), name, 0.1, 1e-4)
    for _ in range(3):
        step(a, opt_a)
        step(b, opt_b)
    saved = optimizer_arrays(opt_b)
    resumed = make_optimizer(b.parameters(), name, 0.1, 1e-4)  # a fresh optimizer, as next round
    load_optimizer_arrays(resumed, {k: v.copy() for k, v in saved.items()})
    step(a, opt_a)
    step(b, resumed)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    fresh = torch.nn.Linear(4, 3)
    fresh.load_state_dict(b.state_dict())
    step(fresh, make_optimizer(fresh.parameters(), name, 0.1, 1e-4))
    step(b, resumed)
    assert not all(torch.equal(p, q) for p, q in zip(fresh.parameters(), b.parameters()))  # the state mattered


def _run(**kw):
    return RunConfig.from_run_config({"method": "fedavg", "dataset": "digits", "partitioner": "iid",
                                      "optimizer": "adam", "learning-rate": 0.001, "batch-size": 32, **kw})


def _call(run, arrays, state=None, rnd=1):
    return ClientCall(cid=0, num_partitions=3, server_round=rnd, run=run, arrays=arrays, config={}, state=state or {})


def test_fedavg_keeps_adams_step_count_and_moments_across_rounds_only_when_asked():
    run = _run(**{"keep-optimizer-state": True})
    init = model_to_arrays(_call(run, {}).new_model())
    batches = math.ceil(len(_call(run, init).data.y_train) / 32)
    first = FedAvgClient().train(_call(run, init))
    steps = {k: float(v) for k, v in first.state.items() if k.endswith("/step")}
    assert steps and set(steps.values()) == {batches}
    shapes = sorted(v.shape for k, v in first.state.items() if k.endswith("/exp_avg"))
    assert shapes == sorted(v.shape for v in init.values())
    second = FedAvgClient().train(_call(run, first.arrays, first.state, rnd=2))
    assert {float(v) for k, v in second.state.items() if k.endswith("/step")} == {2 * batches}
    forgetful = FedAvgClient().train(_call(_run(), first.arrays, first.state, rnd=2))
    assert not any(np.array_equal(second.arrays[k], forgetful.arrays[k]) for k in init)
    assert FedAvgClient().train(_call(_run(), init)).state == {}  # default: nothing kept


def test_local_only_keeps_its_model_and_its_optimizer():
    run = _run(method="local", **{"keep-optimizer-state": True})
    init = model_to_arrays(_call(run, {}).new_model())
    first = LocalClient().train(_call(run, init))
    assert any(k.startswith(OPTIMIZER) for k in first.state) and any(k.startswith(PREFIX) for k in first.state)


@pytest.mark.parametrize("extra", [{"method": "fedlog", "dataset": "cora"}, {"method": "ditto"},
                                   {"dp": "uls", "dp-noise-multiplier": 1.0}])
def test_keep_optimizer_state_is_refused_where_it_is_not_implemented_or_analysed(extra):
    with pytest.raises(ConfigError, match="keep-optimizer-state"):
        RunConfig.from_run_config({"method": "fedavg", "dataset": "digits", "keep-optimizer-state": True, **extra})


def test_fedpub_resumes_its_adam_state_as_the_authors_client_does():
    from bouquet.clients.fedpub import FedPubClient, MaskedGCN

    run = RunConfig.from_run_config({"method": "fedpub", "dataset": "cora", "local-epochs": 2})
    probe = _call(run, {})
    torch.manual_seed(0)
    init = model_to_arrays(MaskedGCN(probe.data.x.shape[1], probe.data.num_classes))
    first = FedPubClient().train(_call(run, init))
    second = FedPubClient().train(_call(run, first.arrays, first.state, rnd=2))
    assert {float(v) for k, v in first.state.items() if k.endswith("/step")} == {2.0}  # full batch: a step an epoch
    assert {float(v) for k, v in second.state.items() if k.endswith("/step")} == {4.0}
    assert any(k.endswith("mask") for k in second.state)  # the personal masks are kept beside it


def test_the_gcn_model_is_fedpubs_unmasked_gcn():
    from bouquet.models.nets import GCN

    f, c = 1433, 7
    count = sum(p.numel() for p in GCN(f, c).parameters())
    assert count == (f * 128 + 128) + (128 * 128 + 128) + (128 * c + c)
    with pytest.raises(ValueError, match="needs a graph dataset"):
        _call(_run(model="gcn"), {}).new_model()


def test_every_method_the_config_lets_keep_its_optimizer_does_keep_it():
    """The registry flag the config validates against matches what the clients do."""
    from bouquet.registry import METHODS

    keepable = [name for name, spec in METHODS.items() if spec.optimizer_keepable]
    assert {"fedavg", "fedprox", "fedntd", "local"} <= set(keepable)
    for name in keepable:
        run = _run(method=name, **{"keep-optimizer-state": True})
        probe = _call(run, {})
        reply = METHODS[name].client().train(_call(run, model_to_arrays(probe.new_model())))
        assert any(k.startswith(OPTIMIZER) for k in reply.state), name
