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
    dp_ok_reason: str = ""  # why dp = uls cannot wrap this method ("" = it can)

    @property
    def dp_ok(self) -> bool:
        return not self.dp_ok_reason

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
    "local": Method(S + "local:LocalStrategy", C + "local:LocalClient", "local training only, no aggregation",
                    dp_ok_reason="it sends no model update; nothing is released"),
    "fedkper": Method(S + "fedkper:FedKPerStrategy", C + "fedkper:FedKPerClient", "FedKPer (arXiv 2605.00698)"),
    # server side is plain FedAvg for these two: the method lives in the client
    "fedntd": Method(S + "fedavg:FedAvgStrategy", C + "fedntd:FedNTDClient",
                     "FedNTD (Lee et al., NeurIPS 2022), not-true distillation"),
    "ditto": Method(S + "fedavg:FedAvgStrategy", C + "ditto:DittoClient",
                    "Ditto (Li et al., ICML 2021), personal model, lambda = ditto-lambda"),
    "fedlog": Method(S + "fedlog:FedLoGStrategy", C + "fedlog:FedLoGClient", "FedLoG (Kim et al., ICLR 2025)",
                     model=_fedlog_model, datasets=GRAPH_DATASETS,
                     dp_ok_reason="the global synthetic nodes condensed from one user's upload go, without noise, "
                                  "to every user's next training, so one user moves the others' updates and the "
                                  "clipped-sum sensitivity no longer holds"),
    "fedpub": Method(S + "fedpub:FedPubStrategy", C + "fedpub:FedPubClient", "FED-PUB (Baek et al., ICML 2023)",
                     model=_fedpub_model, datasets=GRAPH_DATASETS,
                     dp_ok_reason="each client receives its own similarity-weighted mix of the updates, whose "
                                  "sensitivity the clipped-sum analysis does not cover"),
    # user-level DP (Chua et al., arXiv 2407.07737): ULS is FedAvg on each user's <= k examples with
    # Poisson user sampling, clipping and noise (bouquet.strategies.userdp); ELS is DP-SGD, one step a round
    "uls": Method(S + "fedavg:FedAvgStrategy", C + "fedavg:FedAvgClient",
                  "DP-SGD-ULS (Chua et al., 2024): user-level sampling, per-user clipping, user-level DP"),
    "els": Method(S + "els:ELSStrategy", C + "els:ELSClient",
                  "DP-SGD-ELS (Chua et al., 2024): example-level sampling, per-example clipping, user-level DP",
                  datasets=tuple(d for d in DATASETS if d not in GRAPH_DATASETS)),
}


def get_method(name: str) -> Method:
    return METHODS[name]
