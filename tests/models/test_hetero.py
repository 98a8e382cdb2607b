"""GeFL's ten CNNs and generators against the paper's and the authors' code's sizes (fedlog-gefl.md §2.3)."""

import pytest
import torch
import torch.nn.functional as F

from bouquet.models.generators import CVAE, DCGAN, build_generator, count_macs
from bouquet.models.hetero import NUM_ARCHS, arch_of, build_arch

# the paper's table (targetNetModels/cnn.py), CNN-1 .. CNN-10
MNIST_PARAMS = (10_734, 10_254, 14_246, 5_346, 26_190, 39_926, 10_986, 98_766, 109_826, 39_066)
# the authors' Fashion-MNIST nets, counted from honggkang/hetero-model-fl-gen @ 64ceb25 targetNetModels/cnnbn.py
# (CNN2, CNN3, CNN3b, CNN3c, CNN4, CNN4b, CNN4c, CNN5, CNN5b, CNN5c: getModels.py's order); CNN5c has channels
# 32-32-64-128, not MNIST's 10-20-40-80
FMNIST_PARAMS = (10_766, 10_350, 14_366, 5_406, 26_414, 40_206, 11_126, 99_246, 110_306, 104_334)
# the same commit's generators16/DCGAN.py at d = 128: G 3,089,028 parameters of which deconv3, deconv3_bn and
# deconv4 (526,721) are never used by its forward; D 2,639,233
DCGAN_F_G, DCGAN_F_D = 3_089_028 - 526_721, 2_639_233


def _params(module, prefix=""):
    return sum(p.numel() for name, p in module.named_parameters() if name.startswith(prefix))


def test_mnist_nets_have_the_papers_parameter_counts():
    assert tuple(_params(build_arch(m, "mnist", 1, 10)) for m in range(NUM_ARCHS)) == MNIST_PARAMS


def test_fashion_mnist_nets_have_the_authors_parameter_counts():
    assert tuple(_params(build_arch(m, "fashion-mnist", 1, 10)) for m in range(NUM_ARCHS)) == FMNIST_PARAMS


def test_only_fashion_mnists_cnn10_is_the_wider_one():
    def convs(net):
        return [tuple(p.shape) for name, p in net.named_parameters() if p.dim() == 4 and not name.startswith("fe.")]

    assert convs(build_arch(9, "fashion-mnist", 1, 10)) == [(32, 3, 3, 3), (32, 32, 3, 3), (64, 32, 3, 3),
                                                             (128, 64, 3, 3)]
    assert build_arch(9, "fashion-mnist", 1, 10).fc.weight.shape == (10, 128)
    for dataset, c in (("mnist", 1), ("cifar10", 3)):
        assert [s[0] for s in convs(build_arch(9, dataset, c, 10))] == [10, 20, 40, 80]


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


def test_feature_dcgan_has_the_authors_size_without_their_unused_layers():
    gan = build_generator("dcgan", 3, 16, width=1)  # GeFL-F's feature DCGAN
    assert _params(gan, "g_") == DCGAN_F_G and _params(gan, "d_") == DCGAN_F_D


@pytest.mark.parametrize("width", [1, 8])
def test_feature_dcgan_computes_the_authors_forward(width):
    """generators16/DCGAN.py's forward written out over Bouquet's layers: LeakyReLU(0.2) after every hidden
    layer of G, ReLU output; D with two BN stages (d→2d, 2d→4d) down to 2×2, then a conv of kernel 2."""
    torch.manual_seed(0)
    gan = build_generator("dcgan", 3, 16, width=width)
    for m in gan.modules():  # non-trivial BN statistics: eval mode must use them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    gan.eval()
    z, y = torch.randn(4, 100), torch.tensor([0, 3, 7, 9])
    onehot = F.one_hot(y, 10).float().reshape(4, 10, 1, 1)
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    with torch.no_grad():
        h = torch.cat([lrelu(gan.g_z[1](gan.g_z[0](z.reshape(4, 100, 1, 1)))),
                       lrelu(gan.g_y[1](gan.g_y[0](onehot)))], 1)
        x = F.relu(gan.g_up[3](lrelu(gan.g_up[1](gan.g_up[0](h)))))
        assert x.shape == (4, 3, 16, 16)
        torch.testing.assert_close(gan.generate(z, y), x, rtol=0, atol=0)
        h = torch.cat([lrelu(gan.d_x[0](x)), lrelu(gan.d_y[0](onehot.expand(-1, -1, 16, 16)))], 1)
        h = lrelu(gan.d_down[4](gan.d_down[3](lrelu(gan.d_down[1](gan.d_down[0](h))))))
        assert h.shape[1:] == (4 * max(128 // width, 2), 2, 2)
        torch.testing.assert_close(gan.discriminate(x, y), torch.sigmoid(gan.d_down[6](h)).reshape(-1), rtol=0, atol=0)


def test_image_dcgan_keeps_relu_and_its_kernel_4_discriminator():
    gan = DCGAN(1, 32, width=8)
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in (*gan.g_z, *gan.g_y, *gan.g_up))
    assert gan.d_down[-2].kernel_size == (4, 4)
    assert gan.discriminate(torch.rand(2, 1, 32, 32), torch.tensor([1, 2])).shape == (2,)


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
