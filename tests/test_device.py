"""One device per process (bouquet.device): the choice, and that client steps run there and
hand Flower CPU numpy. No test needs a GPU: CUDA and Ray are faked where the choice needs them."""

import sys
import types

import numpy as np
import pytest
import torch

import bouquet.device as D
from bouquet.clients.base import ClientCall, model_to_arrays
from bouquet.config import RunConfig
from bouquet.datasets import GraphClientData, data_root, load_dataset
from bouquet.preflight import PreflightError, check_federation
from bouquet.registry import get_method


CHOOSE = D.device  # the cached function (one test wraps D.device in a spy)


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch):
    monkeypatch.delenv(D.ENV, raising=False)
    CHOOSE.cache_clear()
    yield
    CHOOSE.cache_clear()


def _fake_ray(monkeypatch, *, worker: bool, gpus: list[str]) -> None:
    context = types.SimpleNamespace(worker=types.SimpleNamespace(mode=1 if worker else 0),
                                    get_accelerator_ids=lambda: {"GPU": gpus})
    ray = types.SimpleNamespace(is_initialized=lambda: True, WORKER_MODE=1, get_runtime_context=lambda: context)
    monkeypatch.setitem(sys.modules, "ray", ray)


def test_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.device() == torch.device("cpu")


def test_a_visible_gpu_outside_ray_and_the_cpu_override(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert D.device() == torch.device("cuda")
    CHOOSE.cache_clear()
    monkeypatch.setenv(D.ENV, "cpu")
    assert D.device() == torch.device("cpu")


@pytest.mark.parametrize(("worker", "gpus", "want"), [(True, [], "cpu"), (True, ["0"], "cuda"), (False, [], "cuda")])
def test_a_ray_actor_uses_only_the_gpu_ray_assigned_it(monkeypatch, worker, gpus, want):
    """With RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0 an actor without a GPU share still sees every
    GPU, so Ray's assignment decides; the driver (the ServerApp) uses a visible GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _fake_ray(monkeypatch, worker=worker, gpus=gpus)
    assert D.device() == torch.device(want)


def test_a_bad_value_is_named_here_and_in_the_preflight(monkeypatch):
    monkeypatch.setenv(D.ENV, "gpu")
    with pytest.raises(ValueError, match="BOUQUET_DEVICE='gpu' is unknown; choose one of auto, cpu"):
        D.device()
    with pytest.raises(PreflightError, match="BOUQUET_DEVICE='gpu'"):
        check_federation(1, 1, 0.0)


def test_to_device_moves_a_subgraph_and_to_numpy_copies():
    graph = ClientCall(cid=0, num_partitions=3, server_round=1, run=RunConfig.from_run_config({}), arrays={}).data
    assert isinstance(graph, GraphClientData)
    moved = D.to_device(graph)
    assert isinstance(moved, GraphClientData) and moved.num_classes == graph.num_classes
    assert {t.device for t in (moved.x, moved.edge_index, moved.y, moved.train_mask)} == {D.device()}
    assert D.to_device(None) is None
    t = torch.ones(3, requires_grad=True)
    a = D.to_numpy(t)
    a[0] = 5.0
    assert isinstance(a, np.ndarray) and float(t.detach()[0]) == 1.0


@pytest.mark.parametrize(("method", "dataset", "config"), [
    ("fedavg", "digits", {}),
    ("els", "digits", {"dp-k": 40, "dp-sampling-rate": 0.25, "dp-clip": 0.5}),
    ("fedpub", "cora", {}),
    ("fedlog", "cora", {}),
])
def test_a_train_step_runs_on_the_device_and_returns_cpu_numpy(monkeypatch, method, dataset, config):
    partitioner = "louvain" if dataset == "cora" else "iid"
    cfg = RunConfig.from_run_config({"method": method, "dataset": dataset, "partitioner": partitioner,
                                     "local-epochs": 1, "fedlog-pretrain-epochs": 1})
    data = load_dataset(dataset, data_root(""))
    torch.manual_seed(0)
    call = ClientCall(cid=1, num_partitions=3, server_round=1, run=cfg, config=config,
                      arrays=model_to_arrays(get_method(method).model(cfg, data)))
    calls = []
    monkeypatch.setattr(D, "device", lambda: calls.append(1) or CHOOSE())  # the placement reads the one choice
    if hasattr(get_method(method).client(), "start_model"):
        model = get_method(method).client().start_model(call)
        assert {p.device for p in model.parameters()} == {CHOOSE()}
    reply = get_method(method).client().train(call)
    assert calls
    for part in (reply.arrays, reply.state, *reply.extras.values()):
        assert all(isinstance(v, np.ndarray) for v in part.values())
    assert reply.arrays or reply.state
    for v in reply.metrics.values():
        assert isinstance(v, int | float | np.ndarray), type(v)
