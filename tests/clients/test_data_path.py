"""A SuperNode with node-config ``data-path`` trains exactly as its simulated twin, from its folder only."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, RecordDict

from bouquet import client_app
from bouquet.clients import base
from bouquet.clients.base import ClientCall, model_to_arrays
from bouquet.clients.fedavg import FedAvgClient
from bouquet.config import RunConfig, data_spec
from bouquet.datasets import export_partitions
from bouquet.datasets import exported as ex

DIGITS = RunConfig.from_run_config({"method": "fedavg", "dataset": "digits", "partitioner": "dirichlet",
                                    "batch-size": 32, "seed": 2})
CORA = RunConfig.from_run_config({"method": "fedavg", "dataset": "cora", "partitioner": "louvain"})
N = 3


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for cfg in (DIGITS, CORA):
        out[cfg.dataset] = tmp_path_factory.mktemp(cfg.dataset)
        export_partitions(data_spec(cfg, N), out[cfg.dataset])
    return out


def assert_same_metrics(a: dict, b: dict) -> None:
    """Exactly equal; values may be arrays (per-sample predictions) or NaN."""
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _call(cfg: RunConfig, cid: int, arrays: dict, data_path: str = "", rnd: int = 1) -> ClientCall:
    return ClientCall(cid=cid, num_partitions=N, server_round=rnd, run=cfg, arrays=arrays,
                      config={"lr": 0.05, "server-round": rnd}, data_path=data_path)


@pytest.mark.parametrize("cfg", [DIGITS, CORA], ids=["digits", "cora"])
def test_data_path_reply_equals_simulation(cfg: RunConfig, folders: dict[str, Path]) -> None:
    init = model_to_arrays(_call(cfg, 0, {}).new_model())
    for cid in range(N):
        path = str(folders[cfg.dataset] / f"partition_{cid}")
        deployed, simulated = _call(cfg, cid, init, path), _call(cfg, cid, init)
        assert model_to_arrays(deployed.new_model()).keys() == init.keys()
        a, b = FedAvgClient().train(deployed), FedAvgClient().train(simulated)
        assert_same_metrics(a.metrics, b.metrics)
        if cfg is CORA:
            assert any(k.endswith("@new_client") for k in a.metrics)
        for k in init:
            np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
        e1 = FedAvgClient().evaluate(_call(cfg, cid, a.arrays, path, rnd=2))
        e2 = FedAvgClient().evaluate(_call(cfg, cid, a.arrays, rnd=2))
        assert_same_metrics(e1.metrics, e2.metrics)


def test_data_path_never_loads_the_dataset(folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    init = model_to_arrays(_call(CORA, 1, {}).new_model())

    def boom(*args, **kwargs):
        raise AssertionError("the full dataset was read")

    # the package re-exports a *function* client_data, so fetch the modules by name
    cd, loaders = (importlib.import_module(f"bouquet.datasets.{m}") for m in ("client_data", "loaders"))

    for module, name in [(base, "load_dataset"), (base, "client_data"), (base, "new_client_graph"),
                         (cd, "load_dataset"), (loaders, "load_dataset"), (loaders, "_load_cached"),
                         (ex, "load_dataset")]:
        monkeypatch.setattr(module, name, boom)
    ex._decoded.clear()
    reply = FedAvgClient().train(_call(CORA, 1, init, str(folders["cora"] / "partition_1")))
    assert reply.metrics["num-examples"] > 0
    with pytest.raises(AssertionError, match="full dataset"):
        _call(CORA, 1, init).data  # the simulated path does read it


def test_run_config_mismatch_names_the_key(folders: dict[str, Path]) -> None:
    other = dataclasses.replace(DIGITS, dirichlet_alpha=0.1)
    call = _call(other, 0, {}, str(folders["digits"] / "partition_0"))
    with pytest.raises(ValueError, match="dirichlet-alpha"):
        call.data
    with pytest.raises(ValueError, match="partition-id"):
        _call(DIGITS, 1, {}, str(folders["digits"] / "partition_0")).new_model()


def test_client_app_passes_node_config_data_path(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ClientCall] = []

    class Stop(Exception):
        pass

    class Spy:
        def train(self, call: ClientCall):
            seen.append(call)
            raise Stop

    monkeypatch.setattr(client_app, "get_method", lambda name: type("M", (), {"client": Spy})())
    msg = type("Msg", (), {"content": RecordDict({"config": ConfigRecord({"server-round": 1})})})()
    run_config = {"method": "fedavg", "dataset": "digits", "partitioner": "iid"}
    for node_config, path in [({"data-path": "/site/partition_2"}, "/site/partition_2"), ({}, "")]:
        context = Context(run_id=1, node_id=1, node_config={"partition-id": 2, "num-partitions": 3, **node_config},
                          state=RecordDict(), run_config=run_config)
        with pytest.raises(Stop):
            client_app.train(msg, context)
        assert (seen[-1].cid, seen[-1].data_path) == (2, path)
