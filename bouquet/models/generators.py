"""GeFL's conditional generators, width-scalable (Kang et al., arXiv 2412.18460).

The paper's CVAE (``generators32/CCVAE.py``) has 22.35M parameters and its DCGAN 3.08M + 2.64M;
``width`` divides their channel counts (1 = the paper's size, selectable on a GPU machine;
parameters and MACs fall by about width²). ``side`` 32 generates images, 16 generates GeFL-F's
feature maps (as the authors' ``generators16``: one stage fewer, ReLU output; the DCGAN's
hidden layers LeakyReLU(0.2) and its discriminator as deep as the image one's).

Each generator's ``sample(n, labels)`` returns outputs in its own range (CVAE: [0, ∞) from a
ReLU, trained on [0, 1] data; DCGAN: tanh [−1, 1], or ReLU for features) and ``to_unit`` maps
that range back to [0, 1] (what GeFL's fix feeds the target nets).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10


def _stages(side: int) -> int:
    n = int(math.log2(side))
    if 2 ** n != side or side < 8:
        raise ValueError(f"generator side must be a power of two >= 8, got {side}")
    return n


class CVAE(nn.Module):
    """Conditional VAE: encoder of stride-2 conv4×4 (+BN, ReLU) on [x, a plane holding the
    label's integer value] down to 1×1; mu/logvar linear; decoder linear(latent+one-hot) then
    transposed convs back up, ReLU output. Loss: summed MSE + KL (the authors')."""

    kind = "cvae"

    def __init__(self, channels: int, side: int = 32, latent: int = 16, width: int = 1,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        n = _stages(side)
        base = max(64 // width, 1)
        chans = [base * 2 ** i for i in range(n)]  # 64..1024 at full width for 32×32
        enc: list[nn.Module] = []
        prev = channels + 1
        for c in chans:
            enc += [nn.Conv2d(prev, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU()]
            prev = c
        self.encoder = nn.Sequential(*enc)
        self.mu, self.logvar = nn.Linear(prev, latent), nn.Linear(prev, latent)
        self.linear = nn.Linear(latent + num_classes, prev)
        dec: list[nn.Module] = []
        for c in reversed(chans[:-1]):
            dec += [nn.ConvTranspose2d(prev, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU()]
            prev = c
        dec += [nn.ConvTranspose2d(prev, channels, 4, 2, 1), nn.ReLU()]
        self.decoder = nn.Sequential(*dec)
        self.channels, self.side, self.latent, self.num_classes = channels, side, latent, num_classes
        self.top = chans[-1]

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(labels, self.num_classes).float()
        t = F.relu(self.linear(torch.cat([z, onehot], 1))).reshape(len(z), self.top, 1, 1)
        return self.decoder(t)

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        plane = labels.float().reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        h = self.encoder(torch.cat([x, plane], 1)).flatten(1)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = self.decode(z, labels)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return F.mse_loss(recon, x, reduction="sum") + kl

    @torch.no_grad()
    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        return self.decode(torch.randn(len(labels), self.latent, device=labels.device), labels)

    data_range = (0.0, 1.0)  # what it is trained on


class DCGAN(nn.Module):
    """Conditional DCGAN (``generators32/DCGAN.py``): G maps z(100) and the one-hot label each
    through a transposed conv to 4×4, concatenates, and upsamples ×2 per stage to ``side``;
    D sees the image and label planes through two convs, concatenated, then stride-2 convs with
    BN and LeakyReLU(0.2) to one sigmoid. Both are federated (``g.…``, ``d.…``).

    ``features`` (GeFL-F, ``generators16/DCGAN.py``): ReLU output, LeakyReLU(0.2) after G's hidden
    layers, and D keeps the image D's two stride-2 stages (d→2d, 2d→4d) on the smaller input, so its
    last conv has kernel side/8 (2 for 16×16). The authors' G also holds three layers its forward
    never uses (``deconv3``, ``deconv3_bn``, ``deconv4``, 0.53M of its 3.09M parameters at width 1):
    left out, since they cannot change what G generates."""

    kind = "dcgan"
    z_dim = 100

    def __init__(self, channels: int, side: int = 32, width: int = 1, num_classes: int = NUM_CLASSES,
                 features: bool = False) -> None:
        super().__init__()
        n = _stages(side) - 2  # upsampling stages after 4×4
        d = max(128 // width, 2)
        act = (lambda: nn.LeakyReLU(0.2)) if features else nn.ReLU
        self.g_z = nn.Sequential(nn.ConvTranspose2d(self.z_dim, 2 * d, 4, 1, 0), nn.BatchNorm2d(2 * d), act())
        self.g_y = nn.Sequential(nn.ConvTranspose2d(num_classes, 2 * d, 4, 1, 0), nn.BatchNorm2d(2 * d), act())
        ups: list[nn.Module] = []
        prev = 4 * d
        for i in range(n - 1):
            c = max(2 * d >> i, 1)
            ups += [nn.ConvTranspose2d(prev, c, 4, 2, 1), nn.BatchNorm2d(c), act()]
            prev = c
        ups += [nn.ConvTranspose2d(prev, channels, 4, 2, 1), nn.ReLU() if features else nn.Tanh()]
        self.g_up = nn.Sequential(*ups)
        half = max(d // 2, 1)
        self.d_x = nn.Sequential(nn.Conv2d(channels, half, 4, 2, 1), nn.LeakyReLU(0.2))
        self.d_y = nn.Sequential(nn.Conv2d(num_classes, half, 4, 2, 1), nn.LeakyReLU(0.2))
        downs: list[nn.Module] = []
        prev, c, stages = 2 * half, 2 * d, max(n - 1, 2)
        for _ in range(stages):
            downs += [nn.Conv2d(prev, c, 4, 2, 1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            prev, c = c, 2 * c
        downs += [nn.Conv2d(prev, 1, side >> (stages + 1), 1, 0), nn.Sigmoid()]
        self.d_down = nn.Sequential(*downs)
        self.channels, self.side, self.num_classes = channels, side, num_classes
        self.data_range = (0.0, 1.0) if features else (-1.0, 1.0)
        for m in self.modules():  # the authors' (and cDCGAN's) weight_init(0, 0.02), zero biases
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def generator_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.startswith("g_")]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.startswith("d_")]

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(labels, self.num_classes).float().reshape(len(labels), -1, 1, 1)
        return self.g_up(torch.cat([self.g_z(z.reshape(len(z), -1, 1, 1)), self.g_y(onehot)], 1))

    def discriminate(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        planes = F.one_hot(labels, self.num_classes).float().reshape(len(labels), -1, 1, 1)
        planes = planes.expand(-1, -1, *x.shape[2:])
        return self.d_down(torch.cat([self.d_x(x), self.d_y(planes)], 1)).reshape(-1)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        return self.generate(torch.randn(len(labels), self.z_dim, device=labels.device), labels)


def to_unit(x: torch.Tensor, data_range: tuple[float, float]) -> torch.Tensor:
    """Generator output (in the range it was trained on) -> [0, 1]."""
    lo, hi = data_range
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0) if (lo, hi) != (0.0, 1.0) else x.clamp(0.0, 1.0)


def from_unit(x: torch.Tensor, data_range: tuple[float, float]) -> torch.Tensor:
    lo, hi = data_range
    return x * (hi - lo) + lo


def build_generator(kind: str, channels: int, side: int, width: int, latent: int = 16) -> nn.Module:
    if kind == "cvae":
        return CVAE(channels, side, latent=latent, width=width)
    if kind == "dcgan":
        return DCGAN(channels, side, width=width, features=side < 32)
    raise ValueError(f"gefl-generator={kind!r} is unknown; choose cvae or dcgan")


def count_macs(model: nn.Module, forward) -> int:
    """Multiply-accumulates of ``forward()`` (one call) over the conv, transposed-conv and
    linear layers of ``model``."""
    total = 0

    def hook(module, args, out):
        nonlocal total
        kernel = module.weight[0, 0].numel() if not isinstance(module, nn.Linear) else 1
        if isinstance(module, nn.Conv2d):
            total += out.numel() * module.in_channels // module.groups * kernel
        elif isinstance(module, nn.ConvTranspose2d):
            total += args[0].numel() * module.out_channels // module.groups * kernel
        else:
            total += out.numel() * module.in_features

    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    return total
