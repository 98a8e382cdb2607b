"""GeFL's ten CNNs and generators against the paper's sizes (fedlog-gefl.md §2.3)."""

import pytest
import torch

from bouquet.models.generators import CVAE, DCGAN, count_macs
from bouquet.models.hetero import ARCH_CHANNELS, NUM_ARCHS, arch_of, build_arch

# the paper's table (targetNetModels/cnn.py), CNN-1 .. CNN-10
MNIST_PARAMS = (10_734, 10_254, 14_246, 5_346, 26_190, 39_926, 10_986, 98_766, 109_826, 39_066)


def _params(module, prefix=""):
    return sum(p.numel() for name, p in module.named_parameters() if name.startswith(prefix))


def test_mnist_nets_have_the_papers_parameter_counts():
    assert tuple(_params(build_arch(m, "mnist", 1, 10)) for m in range(NUM_ARCHS)) == MNIST_PARAMS


def test_fashion_mnist_nets_add_one_batchnorm_per_conv():
    for m in range(NUM_ARCHS):  # BN adds weight + bias per channel of every further conv
        assert _params(build_arch(m, "fashion-mnist", 1, 10)) == MNIST_PARAMS[m] + 2 * sum(ARCH_CHANNELS[m])


def test_cifar_nets_share_a_ten_channel_first_block():
    nets = [build_arch(m, "cifar10", 3, 10) for m in range(NUM_ARCHS)]
    x = torch.rand(2, 3, 32, 32)
    for net in nets:
        assert net.fe(net.normalise(x)).shape == (2, 10, 16, 16) and net(x).shape == (2, 10)
    # conv(3->3)+BN, conv(3->10)+BN: 84 + 6 + 280 + 20
    assert _params(nets[0].fe) == 390


def test_28_pixel_images_are_resized_for_the_deepest_net():
    assert build_arch(8, "mnist", 1, 10)(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_full_width_generators_match_the_papers_sizes():
    cvae, gan = CVAE(1, 32, width=1), DCGAN(1, 32, width=1)
    assert _params(cvae) == pytest.approx(22.35e6, rel=1e-3)
    assert _params(gan, "g_") == pytest.approx(3.08e6, rel=2e-3) and _params(gan, "d_") == pytest.approx(2.64e6, rel=2e-3)
    assert _params(CVAE(3, 16, width=1)) == pytest.approx(5.5e6, rel=0.01)  # CVAE-F
    y = torch.zeros(2, dtype=torch.long)
    macs = count_macs(cvae.eval(), lambda: cvae.loss(torch.rand(2, 1, 32, 32), y)) / 2
    assert 60e6 < macs < 80e6  # "about 70M MACs per image forward"


def test_width_divisor_shrinks_parameters_about_quadratically():
    full, eighth = _params(CVAE(1, 32, width=1)), _params(CVAE(1, 32, width=8))
    assert 50 < full / eighth < 70


@pytest.mark.parametrize(("n", "expected"), [
    (10, list(range(10))),
    (50, [k // 5 for k in range(50)]),
    (100, [min(k // 10, 9) for k in range(100)]),
    (3, [0, 1, 2]),
])
def test_the_papers_architecture_rule(n, expected):
    assert [arch_of(k, n) for k in range(n)] == expected


def test_other_architecture_rules():
    assert [arch_of(k, 12, "cycle") for k in range(12)] == [*range(10), 0, 1]
    assert {arch_of(k, 7, "4") for k in range(7)} == {4}
