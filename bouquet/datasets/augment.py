"""Training-time image augmentation in plain torch, batch at a time (the data stay tensors).

``crop_flip`` is torchvision's ``RandomCrop(size, padding=4)`` + ``RandomHorizontalFlip()`` as the
GeFL code applies them to CIFAR-10 (before ``Normalize``, so padding is 0 = black on [0, 1] images),
drawn per image from a seeded generator so a run repeats exactly.
"""

from __future__ import annotations

import torch

AUGMENTATIONS = ("none", "crop-flip")


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Each image of ``x`` (B, C, H, W) zero-padded by ``pad``, cropped back to H×W at a uniform
    offset in [0, 2·pad]², and mirrored left-right with probability 1/2."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # (B, 1, 1, W), mirrored where flipped
    return padded[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
                  rows, cols]


def augment(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "none":
        return x
    if kind == "crop-flip":
        return crop_flip(x, gen)
    raise ValueError(f"unknown augmentation {kind!r} (one of {', '.join(AUGMENTATIONS)})")
