import math

import torch

from bouquet.simulations.gefl_study import within_class_spread


def test_within_class_spread_by_hand():
    # class 0: two images [0, 0] and [2, 2] -> per-pixel sample std sqrt(2); class 1: identical -> 0
    x = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 3.0], [1.0, 3.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert math.isclose(within_class_spread(x, y), math.sqrt(2) / 2, rel_tol=1e-6)


def test_a_collapsed_generator_has_no_spread_and_labels_matter():
    x = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(4).repeat_interleave(10)
    assert within_class_spread(x[:1].expand(40, 1, 4, 4), y) == 0.0
    # zeros labelled 0 and ones labelled 1 spread nothing; the same images with mixed labels do
    images = torch.cat([torch.zeros(4, 1, 2, 2), torch.ones(4, 1, 2, 2)])
    assert within_class_spread(images, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])) == 0.0
    assert within_class_spread(images, torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])) > 0.5
