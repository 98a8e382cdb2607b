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
    optimizer_keepable: bool = False  # its client honours keep-optimizer-state (clients/fedavg.kept_optimizer_state)

    @property
    def dp_ok(self) -> bool:
        return not self.dp_ok_reason

    @property
    def takes_model_key(self) -> bool:
        """Whether run-config ``model`` chooses its network (methods with their own nets ignore it)."""
        return self.model is _default_model

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


def _hetero_model(cfg: RunConfig, data) -> nn.Module:
    """Every architecture of GeFL's ten (+ the generator for gefl / gefl-f) in one bundle."""
    from bouquet.models.generators import build_generator  # noqa: PLC0415
    from bouquet.models.hetero import NUM_ARCHS, HeteroBundle, build_arch  # noqa: PLC0415

    channels = data.input_shape[0]
    archs = [build_arch(m, cfg.dataset, channels, data.num_classes) for m in range(NUM_ARCHS)]
    latent = 50 if cfg.dataset == "cifar10" else 16  # the authors' latent sizes
    gen = None
    if cfg.method == "gefl":
        gen = build_generator(cfg.gefl_generator, channels, 32, cfg.gefl_gen_width, latent)
    elif cfg.method == "gefl-f":  # on the shared first block's output (3×16×16; CIFAR 10×16×16)
        gen = build_generator(cfg.gefl_generator, archs[0].fe.out_channels, 16, cfg.gefl_gen_width, latent)
    return HeteroBundle(archs, gen)


def _gcd_model(cfg: RunConfig, data) -> nn.Module:
    """The GCD methods' small CNN + SimGCD head (bouquet.clients.fedlpa.GCDNet), one for all four."""
    net = _load("bouquet.clients.fedlpa:GCDNet")
    return net(data.input_shape[0], cfg.gcd_head_size or data.num_classes, cfg.gcd_width, data.input_shape[-1])


S, C = "bouquet.strategies.", "bouquet.clients."
GCD_METHODS = ("fedlpa", "simgcd", "gcd", "local-simgcd")
_GCD = {"model": _gcd_model, "datasets": ("fashion-mnist", "mnist", "cifar10"),
        "dp_ok_reason": "generalized category discovery methods are not analysed under DP"}
HETERO_DATASETS = ("mnist", "fashion-mnist", "cifar10")
HETERO_METHODS = ("gefl", "gefl-f", "hetero-fedavg", "hetero-fedprox", "lg-fedavg", "avgkd", "hetero-local")
METHODS: dict[str, Method] = {
    "fedavg": Method(S + "fedavg:FedAvgStrategy", C + "fedavg:FedAvgClient", "FedAvg (McMahan et al., 2017)",
                     optimizer_keepable=True),
    "fedprox": Method(S + "fedprox:FedProxStrategy", C + "fedprox:FedProxClient",
                      "FedProx (Li et al., 2020), mu from run-config proximal-mu", optimizer_keepable=True),
    "local": Method(S + "local:LocalStrategy", C + "local:LocalClient", "local training only, no aggregation",
                    dp_ok_reason="it sends no model update; nothing is released", optimizer_keepable=True),
    "fedkper": Method(S + "fedkper:FedKPerStrategy", C + "fedkper:FedKPerClient", "FedKPer (arXiv 2605.00698)"),
    # server side is plain FedAvg for these two: the method lives in the client
    "fedntd": Method(S + "fedavg:FedAvgStrategy", C + "fedntd:FedNTDClient",
                     "FedNTD (Lee et al., NeurIPS 2022), not-true distillation", optimizer_keepable=True),
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
    # heterogeneous client models: GeFL (Kang et al., arXiv 2412.18460) and its baselines; one
    # strategy and one client serve them all (the method name selects the phases, strategies/gefl.py)
    **{name: Method(S + "gefl:GeFLStrategy", C + "gefl:GeFLClient", summary, model=_hetero_model,
                    datasets=HETERO_DATASETS, dp_ok_reason="heterogeneous-model methods are not analysed under DP")
       for name, summary in zip(HETERO_METHODS, (
           "GeFL (Kang et al., 2024): a federated conditional generator aids clients of 10 architectures",
           "GeFL-F (Kang et al., 2024): a federated feature generator after a shared, frozen first block",
           "FedAvg within each architecture (GeFL's baseline)",
           "FedProx within each architecture, mu from run-config proximal-mu (GeFL's baseline)",
           "LG-FedAvg: the shared first block averaged over all clients, the rest per architecture",
           "AvgKD across architectures: soft labels from every other architecture's global model",
           "each client's architecture trained alone on its data, never averaged"), strict=True)},
    # generalized category discovery (FedLPA, NeurIPS 2025, and its baselines; clients/fedlpa.py)
    "fedlpa": Method(S + "fedlpa:FedLPAStrategy", C + "fedlpa:FedLPAClient", "FedLPA (NeurIPS 2025): SimGCD with local prior alignment (CLSD + InfoMap)", **_GCD),
    "simgcd": Method(S + "fedlpa:FedLPAStrategy", C + "fedlpa:SimGCDClient", "FedAvg + SimGCD (Wen et al., ICCV 2023)", **_GCD),
    "gcd": Method(S + "fedlpa:FedLPAStrategy", C + "fedlpa:GCDClient", "FedAvg + GCD (Vaze et al., CVPR 2022): SupCon + semi-supervised k-means", **_GCD),
    "local-simgcd": Method(S + "fedlpa:LocalSimGCDStrategy", C + "fedlpa:LocalSimGCDClient", "SimGCD on each client alone after the shared warm-up", **_GCD),
}


def get_method(name: str) -> Method:
    return METHODS[name]
