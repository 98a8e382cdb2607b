"""Method name -> (strategy class, client logic). Adding a method adds one line here,
one module in ``strategies/`` and one in ``clients/``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from bouquet.clients.base import ClientLogic
from bouquet.clients.fedlog import FedLoGClient, FedLoGNet
from bouquet.clients.fedpub import FedPubClient, MaskedGCN
from bouquet.clients.ditto import DittoClient
from bouquet.clients.fedavg import FedAvgClient
from bouquet.clients.fedkper import FedKPerClient
from bouquet.clients.fedntd import FedNTDClient
from bouquet.clients.fedprox import FedProxClient
from bouquet.clients.local import LocalClient
from bouquet.config import RunConfig
from bouquet.datasets import DATASETS, GRAPH_DATASETS
from bouquet.models import build_model
from bouquet.strategies.base import BouquetStrategy
from bouquet.strategies.fedlog import FedLoGStrategy
from bouquet.strategies.fedpub import FedPubStrategy
from bouquet.strategies.fedavg import FedAvgStrategy
from bouquet.strategies.fedkper import FedKPerStrategy
from bouquet.strategies.fedprox import FedProxStrategy
from bouquet.strategies.local import LocalStrategy


@dataclass(frozen=True)
class Method:
    strategy: type[BouquetStrategy]
    client: type[ClientLogic]
    summary: str
    model: Callable[[RunConfig, object], nn.Module] = lambda cfg, data: build_model(data, cfg.model)
    datasets: tuple[str, ...] = DATASETS  # the datasets the method can run on


METHODS: dict[str, Method] = {
    "fedavg": Method(FedAvgStrategy, FedAvgClient, "FedAvg (McMahan et al., 2017)"),
    "fedprox": Method(FedProxStrategy, FedProxClient, "FedProx (Li et al., 2020), mu = proximal-mu"),
    "local": Method(LocalStrategy, LocalClient, "local training only, no aggregation"),
    "fedkper": Method(FedKPerStrategy, FedKPerClient, "FedKPer (arXiv 2605.00698)"),
    # server side is plain FedAvg for these two: the method lives in the client
    "fedntd": Method(FedAvgStrategy, FedNTDClient, "FedNTD (Lee et al., NeurIPS 2022), not-true distillation"),
    "ditto": Method(FedAvgStrategy, DittoClient, "Ditto (Li et al., ICML 2021), personal model, lambda = ditto-lambda"),
    "fedlog": Method(
        FedLoGStrategy, FedLoGClient, "FedLoG (Kim et al., ICLR 2025)",
        model=lambda cfg, data: FedLoGNet(data.x.shape[1], data.num_classes, cfg.fedlog_faithful_to == "paper"),
        datasets=GRAPH_DATASETS,
    ),
    "fedpub": Method(
        FedPubStrategy, FedPubClient, "FED-PUB (Baek et al., ICML 2023)",
        model=lambda cfg, data: MaskedGCN(data.x.shape[1], data.num_classes, cfg.fedpub_l1),
        datasets=GRAPH_DATASETS,
    ),
}


def get_method(name: str) -> Method:
    return METHODS[name]
