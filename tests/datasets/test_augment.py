"""crop_flip against its definition: every output image is one of the 81 crops of the zero-padded
input, mirrored or not; all offsets and both flips occur; the same seed repeats it."""

import itertools

import pytest
import torch

from bouquet.datasets.augment import augment, crop_flip


def candidates(img: torch.Tensor, pad: int = 4):
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    h, w = img.shape[-2:]
    for oy, ox in itertools.product(range(2 * pad + 1), repeat=2):
        crop = padded[:, oy:oy + h, ox:ox + w]
        yield (oy, ox, False), crop
        yield (oy, ox, True), crop.flip(-1)


def test_each_image_is_a_padded_crop_possibly_mirrored_and_every_case_occurs():
    x = torch.rand(400, 3, 6, 5) + 1.0  # > 0 everywhere, so a padded (0) pixel is unambiguous
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    seen = set()
    for img, got in zip(x, out):
        matches = [case for case, cand in candidates(img) if torch.equal(cand, got)]
        assert matches, "not a crop of the padded image"
        seen.add(matches[0])
    offsets = {(oy, ox) for oy, ox, _ in seen}
    assert len(offsets) >= 70  # 81 offsets, 400 draws: each is missed with probability < 1 %
    flips = sum(f for _, _, f in seen)
    assert 0 < flips < len(seen)


def test_hand_example_a_two_by_two_image_shifted_by_the_padding():
    img = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    cands = dict(candidates(img, pad=1))
    assert torch.equal(cands[(0, 0, False)], torch.tensor([[[0.0, 0.0], [0.0, 1.0]]]))
    assert torch.equal(cands[(2, 2, False)], torch.tensor([[[4.0, 0.0], [0.0, 0.0]]]))
    assert torch.equal(cands[(1, 1, True)], torch.tensor([[[2.0, 1.0], [4.0, 3.0]]]))
    outs = {tuple(crop_flip(img[None], torch.Generator().manual_seed(s), pad=1)[0].flatten().tolist())
            for s in range(200)}
    assert outs == {tuple(c.flatten().tolist()) for c in cands.values()}  # exactly the 18 cases, all reached


def test_same_seed_same_batch_and_none_is_the_identity():
    x = torch.rand(8, 3, 32, 32)
    a = augment(x, "crop-flip", torch.Generator().manual_seed(3))
    b = augment(x, "crop-flip", torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert augment(x, "none", torch.Generator()) is x
    with pytest.raises(ValueError, match="unknown augmentation 'cutout'"):
        augment(x, "cutout", torch.Generator())
