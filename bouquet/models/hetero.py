"""GeFL's ten heterogeneous client CNNs (Kang et al., arXiv 2412.18460; ``targetNetModels/``)
and the bundle that holds one copy of each, so the server's "global model" is every
architecture's weights side by side (``arch{m}.…``) plus, for GeFL, the generator (``gen.…``).

Every net starts with the same first block (the "common feature extractor" that LG-FedAvg
and GeFL-F share across clients): conv(C→3)+BN+ReLU+maxpool on 32×32 inputs, giving 3×16×16
(CIFAR-10: conv(3→3)+BN+ReLU, conv(3→10)+BN+ReLU, maxpool, giving 10×16×16, as the authors'
``details.md`` table describes; the released code has no CIFAR CNN). Then k further
conv3×3+ReLU+maxpool blocks (BN after each conv in the Fashion-MNIST/CIFAR variants) and one
linear layer. Parameter counts of the MNIST nets match the paper's table and those of the
Fashion-MNIST nets the authors' ``cnnbn.py`` exactly (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# further conv channels after the shared block, CNN-1 .. CNN-10 (paper's Table / getModels.py order)
ARCH_CHANNELS: tuple[tuple[int, ...], ...] = (
    (16,), (16, 32), (20, 40), (10, 20),
    (16, 32, 64), (20, 40, 80), (10, 20, 40),
    (16, 32, 64, 128), (20, 40, 80, 100), (10, 20, 40, 80),
)
NUM_ARCHS = len(ARCH_CHANNELS)
# the authors' Fashion-MNIST CNN-10 (cnnbn.py CNN5c) is wider than their MNIST one (cnn.py): 104,334
# parameters against 39,366 with the MNIST channels; the other nine are the same in both files
FMNIST_CHANNELS = {9: (32, 32, 64, 128)}
SIDE = 32  # the nets' input side: 28×28 images are resized to 32×32, as the authors' transforms do
# the target nets' input normalisation as the authors' transforms set it (utils/getData.py)
INPUT_NORM = {"mnist": (0.0, 1.0), "fashion-mnist": (0.5, 0.5),
              "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))}


def arch_of(cid: int, num_clients: int, rule: str = "paper") -> int:
    """Client ``cid``'s architecture: the paper's m(k) = min(k // (N // 10), 9) (``paper``;
    with fewer than 10 clients N // 10 = 0, so every client is its own architecture in order),
    k mod 10 (``cycle``), or one fixed architecture for everybody (``"0"`` .. ``"9"``)."""
    if rule == "paper":
        return min(cid // max(num_clients // NUM_ARCHS, 1), NUM_ARCHS - 1)
    if rule == "cycle":
        return cid % NUM_ARCHS
    return int(rule)


def arch_channels(arch: int, dataset: str) -> tuple[int, ...]:
    """Architecture ``arch``'s further conv channels on ``dataset``."""
    return FMNIST_CHANNELS.get(arch, ARCH_CHANNELS[arch]) if dataset == "fashion-mnist" else ARCH_CHANNELS[arch]


def to_side(x: torch.Tensor) -> torch.Tensor:
    """Bilinear resize to 32×32 (torchvision's Resize(32) on the authors' 28×28 images)."""
    if x.shape[-1] == SIDE and x.shape[-2] == SIDE:
        return x
    return F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", align_corners=False, antialias=True)


class SharedBlock(nn.Module):
    """The first block every architecture shares (``FE_CNN``)."""

    def __init__(self, in_channels: int, cifar: bool) -> None:
        super().__init__()
        if cifar:
            self.net = nn.Sequential(nn.Conv2d(in_channels, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                     nn.Conv2d(3, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU(), nn.MaxPool2d(2))
            self.out_channels = 10
        else:
            self.net = nn.Sequential(nn.Conv2d(in_channels, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                     nn.MaxPool2d(2))
            self.out_channels = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HeteroCNN(nn.Module):
    """One of the ten nets. ``forward`` takes images in [0, 1] (any side; resized, then
    normalised as the authors' transforms do); ``header`` runs everything after the shared
    block on a feature map (GeFL-F's synthetic features)."""

    def __init__(self, channels: tuple[int, ...], in_channels: int, num_classes: int, *, bn: bool, cifar: bool,
                 norm: tuple = (0.0, 1.0)) -> None:
        super().__init__()
        self.fe = SharedBlock(in_channels, cifar)
        layers: list[nn.Module] = []
        prev = self.fe.out_channels
        for c in channels:
            layers += [nn.Conv2d(prev, c, 3, padding=1), *([nn.BatchNorm2d(c)] if bn else []), nn.ReLU(),
                       nn.MaxPool2d(2)]
            prev = c
        self.body = nn.Sequential(*layers)
        side = (SIDE // 2) >> len(channels)
        self.fc = nn.Linear(prev * side * side, num_classes)
        mean, std = norm
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (to_side(x) - self.mean) / self.std

    def header(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.body(features), 1))

    def forward(self, x: torch.Tensor, *, normalised: bool = False) -> torch.Tensor:
        """``normalised=True``: ``x`` is already in the net's input space (32×32, normalised)."""
        return self.header(self.fe(x if normalised else self.normalise(x)))


def build_arch(arch: int, dataset: str, in_channels: int, num_classes: int) -> HeteroCNN:
    """MNIST: the plain nets (``cnn.py``); Fashion-MNIST: BN after every conv and a wider CNN-10
    (``cnnbn.py``); CIFAR-10: the MNIST channels with BN on the 10-channel CIFAR first block."""
    return HeteroCNN(arch_channels(arch, dataset), in_channels, num_classes, bn=dataset != "mnist",
                     cifar=dataset == "cifar10", norm=INPUT_NORM.get(dataset, (0.0, 1.0)))


class HeteroBundle(nn.Module):
    """Every architecture's weights (``arch{m}``) and optionally a generator (``gen``) in one
    state dict: what the server keeps, checkpoints and resumes. ``forward`` is undefined on
    purpose: a bundle is scored one architecture at a time."""

    def __init__(self, archs: list[HeteroCNN], generator: nn.Module | None = None) -> None:
        super().__init__()
        for m, net in enumerate(archs):
            self.add_module(f"arch{m}", net)
        self.num_archs = len(archs)
        if generator is not None:
            self.gen = generator

    def arch(self, m: int) -> HeteroCNN:
        return getattr(self, f"arch{m}")

    def forward(self, *args, **kwargs):  # pragma: no cover - guarded misuse
        raise TypeError("a HeteroBundle holds one net per architecture: score bundle.arch(m)")


def sub_state(state: dict, prefix: str) -> dict:
    """The entries of ``state`` under ``prefix.`` with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
