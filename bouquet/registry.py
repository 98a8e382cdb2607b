"""Method name -> (strategy class, client logic). Adding a method adds one line here,
one module in ``strategies/`` and one in ``clients/``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bouquet.datasets import DATASETS, GRAPH_DATASETS

if TYPE_CHECKING:
    from torch import nn

    from bouquet.clients.base import ClientLogic
    from bouquet.config import RunConfig
    from bouquet.strategies.base import BouquetStrategy


def _load(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _default_model(cfg: RunConfig, data: object) -> nn.Module:
    from bouquet.models import build_model  # noqa: PLC0415

    return build_model(data, cfg.model)


@dataclass(frozen=True)
class Method:
    """Classes are named by import path and loaded on first use: a ClientApp process (one per
    message in a deployment) then imports only its own method, not PyG for every method."""

    strategy_path: str
    client_path: str
    summary: str
    model: Callable[[RunConfig, object], nn.Module] = _default_model
    datasets: tuple[str, ...] = DATASETS  # the datasets the method can run on

    @property
    def strategy(self) -> type[BouquetStrategy]:
        return _load(self.strategy_path)

    @property
    def client(self) -> type[ClientLogic]:
        return _load(self.client_path)


def _fedlog_model(cfg: RunConfig, data) -> nn.Module:
    return _load("bouquet.clients.fedlog:FedLoGNet")(data.x.shape[1], data.num_classes, cfg.fedlog_faithful_to == "paper")


def _fedpub_model(cfg: RunConfig, data) -> nn.Module:
    return _load("bouquet.clients.fedpub:MaskedGCN")(data.x.shape[1], data.num_classes, cfg.fedpub_l1)


S, C = "bouquet.strategies.", "bouquet.clients."
METHODS: dict[str, Method] = {
    "fedavg": Method(S + "fedavg:FedAvgStrategy", C + "fedavg:FedAvgClient", "FedAvg (McMahan et al., 2017)"),
    "fedprox": Method(S + "fedprox:FedProxStrategy", C + "fedprox:FedProxClient",
                      "FedProx (Li et al., 2020), mu = proximal-mu"),
    "local": Method(S + "local:LocalStrategy", C + "local:LocalClient", "local training only, no aggregation"),
    "fedkper": Method(S + "fedkper:FedKPerStrategy", C + "fedkper:FedKPerClient", "FedKPer (arXiv 2605.00698)"),
    # server side is plain FedAvg for these two: the method lives in the client
    "fedntd": Method(S + "fedavg:FedAvgStrategy", C + "fedntd:FedNTDClient",
                     "FedNTD (Lee et al., NeurIPS 2022), not-true distillation"),
    "ditto": Method(S + "fedavg:FedAvgStrategy", C + "ditto:DittoClient",
                    "Ditto (Li et al., ICML 2021), personal model, lambda = ditto-lambda"),
    "fedlog": Method(S + "fedlog:FedLoGStrategy", C + "fedlog:FedLoGClient", "FedLoG (Kim et al., ICLR 2025)",
                     model=_fedlog_model, datasets=GRAPH_DATASETS),
    "fedpub": Method(S + "fedpub:FedPubStrategy", C + "fedpub:FedPubClient", "FED-PUB (Baek et al., ICML 2023)",
                     model=_fedpub_model, datasets=GRAPH_DATASETS),
}


def get_method(name: str) -> Method:
    return METHODS[name]
