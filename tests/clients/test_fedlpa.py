"""FedLPA / SimGCD / GCD math (bouquet.clients.fedlpa, bouquet.metrics.cluster_accuracy) and the
GCD run-config checks. Pure functions on small tensors: seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bouquet import metrics as M
from bouquet.clients import fedlpa as L
from bouquet.config import ConfigError, RunConfig


def _blobs(k: int = 5, per: int = 40, dim: int = 16, spread: float = 0.15, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, dim, generator=gen), dim=1)
    y = torch.arange(k).repeat_interleave(per)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=gen) / math.sqrt(dim)
    return x, y


# --- LPA vs SimGCD's mean-entropy term -----------------------------------------------------------

def test_uniform_prior_alignment_equals_simgcds_mean_entropy_term():
    p = F.softmax(torch.randn(10, generator=torch.Generator().manual_seed(1)) * 2, dim=0)
    uniform = torch.full((10,), 0.1)
    assert torch.allclose(L.prior_alignment(p, uniform, "mean-prior"), L.mean_entropy_term(p), atol=1e-6)
    # the term is SimGCD's -H(p) + log K, written out by hand
    assert math.isclose(float(L.mean_entropy_term(p)), float((p * p.log()).sum() + math.log(10)), rel_tol=1e-6)
    # the other KL direction is a different loss (so the choice matters)
    assert not torch.allclose(L.prior_alignment(p, uniform, "prior-mean"), L.mean_entropy_term(p), atol=1e-3)
    # a skewed prior is not the mean-entropy term either, and the alignment is 0 at p = prior
    skewed = torch.tensor([0.5, 0.3, 0.2] + [0.0] * 7) * 0.99 + 0.001
    for direction in ("mean-prior", "prior-mean"):
        assert float(L.prior_alignment(skewed, skewed, direction)) == pytest.approx(0.0, abs=1e-6)
    # mass-covering: an output the client has no concept for costs (almost) nothing when used
    assert float(L.prior_alignment(torch.full((10,), 0.1), skewed, "prior-mean")) < float(
        L.prior_alignment(torch.full((10,), 0.1), skewed, "mean-prior"))


def test_simgcd_loss_with_a_uniform_prior_is_simgcd_loss():
    gen = torch.Generator().manual_seed(2)
    logits = [torch.randn(8, 10, generator=gen).tanh() for _ in range(2)]
    proj = [F.normalize(torch.randn(8, 6, generator=gen), dim=1) for _ in range(2)]
    y = torch.tensor([0, 1, 2, 0, 1, 7, 8, 9])
    lab = torch.tensor([True, True, True, True, True, False, False, False])
    base = L.simgcd_loss(logits, proj, y, lab, 0.07, 0.35, 2.0)
    lpa = L.simgcd_loss(logits, proj, y, lab, 0.07, 0.35, 2.0, prior=torch.full((10,), 0.1), direction="mean-prior")
    assert torch.allclose(base, lpa, atol=1e-5)
    skew = L.simgcd_loss(logits, proj, y, lab, 0.07, 0.35, 2.0, prior=torch.tensor([0.91] + [0.01] * 9),
                         direction="mean-prior")
    assert not torch.allclose(base, skew, atol=1e-3)


# --- Hungarian accuracy --------------------------------------------------------------------------

def test_hungarian_accuracy_matches_a_hand_computed_example():
    # classes 0,1 old, 2 new; clusters named arbitrarily: 5->0 (2 of 3), 6->1 (2 of 2), 4->2 (2 of 3)
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pred = np.array([5, 5, 6, 6, 6, 4, 4, 5])
    # best one-to-one matching over all classes jointly: 5->0 (2), 6->1 (2), 4->2 (2): 6 of 8
    all_, old, new = M.cluster_accuracy(y, pred, known=2)
    assert all_ == pytest.approx(6 / 8) and old == pytest.approx(4 / 5) and new == pytest.approx(2 / 3)


def test_hungarian_accuracy_is_invariant_to_renaming_the_predicted_clusters():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    pred = np.where(rng.random(500) < 0.7, y, rng.integers(0, 10, 500))
    perm = rng.permutation(10)
    assert M.cluster_accuracy(y, pred, 5) == M.cluster_accuracy(y, perm[pred], 5)
    assert M.cluster_accuracy(y, y, 5) == (1.0, 1.0, 1.0)
    # one assignment for all classes: a cluster matched to an old class cannot also serve a new one
    assert M.cluster_accuracy(np.array([0, 1]), np.array([3, 3]), 1) in ((0.5, 1.0, 0.0), (0.5, 0.0, 1.0))


# --- graph, InfoMap, confidence rule, prior --------------------------------------------------------

def test_infomap_recovers_the_planted_communities_of_a_knn_graph_and_their_number():
    x, y = _blobs(k=5, per=40)
    src, dst, w = L.knn_graph(x, k=10, threshold=0.0)
    modules = L.infomap_modules(len(x), src, dst, w)
    sizes = np.bincount(modules)
    assert (sizes >= 10).sum() == 5
    assert M.cluster_accuracy(y.numpy(), modules, 5)[0] >= 0.97
    # a different number of planted communities is found as well
    x7, y7 = _blobs(k=7, per=30, seed=3)
    m7 = L.infomap_modules(len(x7), *L.knn_graph(x7, 10, 0.0))
    assert (np.bincount(m7) >= 10).sum() == 7


def test_knn_graph_respects_k_and_the_similarity_threshold():
    x, _ = _blobs(k=3, per=10)
    src, dst, w = L.knn_graph(x, k=12, threshold=-1.0)  # 12 > a cluster's 9 others: some cross edges
    assert len(src) <= 12 * len(x) and not np.any(src == dst)
    src2, _, w2 = L.knn_graph(x, k=12, threshold=0.9)
    assert len(src2) < len(src) and np.all(w2 >= 0.9)


@pytest.mark.parametrize("rule", ["veto", "confirm", "none"])
def test_the_confidence_rule_only_removes_edges_never_adds(rule):
    x, y = _blobs(k=4, per=25)
    src, dst, w = L.knn_graph(x, k=15, threshold=0.0)  # k > cluster size: edges across clusters exist
    rng = np.random.default_rng(1)
    anchor = np.where(rng.random(len(y)) < 0.5, y.numpy(), -1)
    anchor[rng.random(len(y)) < 0.1] = 3  # some wrong reliable labels too
    pred = np.where(rng.random(len(y)) < 0.8, y.numpy(), rng.integers(0, 4, len(y)))
    s2, d2, w2 = L.refine_edges(src, dst, w, anchor, pred, rule)
    before = set(zip(src.tolist(), dst.tolist(), w.tolist()))
    after = set(zip(s2.tolist(), d2.tolist(), w2.tolist()))
    assert after <= before
    if rule == "none":
        assert after == before
    else:
        assert len(after) < len(before)
        # no kept edge joins two reliable, different labels
        assert not np.any((anchor[s2] >= 0) & (anchor[d2] >= 0) & (anchor[s2] != anchor[d2]))


def test_confirm_removes_at_least_what_veto_removes():
    src, dst, w = np.array([0, 0, 1, 2]), np.array([1, 2, 3, 3]), np.ones(4, np.float32)
    anchor, pred = np.array([0, 1, -1, -1]), np.array([0, 1, 1, 0])
    vs, vd, _ = L.refine_edges(src, dst, w, anchor, pred, "veto")
    cs, cd, _ = L.refine_edges(src, dst, w, anchor, pred, "confirm")
    assert list(zip(vs, vd)) == [(0, 2), (1, 3), (2, 3)]  # (0,1): reliable 0 vs reliable 1
    assert list(zip(cs, cd)) == [(2, 3)]  # also (0,2): reliable 0 vs predicted 1; (1,3): 1 vs 0


def test_confident_labels_keep_labelled_classes_and_the_confident_half_of_the_rest():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.5, 0.5]])
    labels = torch.tensor([1, 0, 1, 1, 0])
    labelled = torch.tensor([True, False, False, False, False])
    out = L.confident_labels(probs, labels, labelled, 0.5)
    assert out[0] == 1  # labelled: its label, not the prediction
    assert list(out[1:]) == [0, 1, -1, -1]  # conf 0.6, 0.8 at/above the median 0.575 of the unlabelled


@pytest.mark.parametrize("mapping", ["majority", "hungarian"])
def test_concept_prior_counts_concept_sizes_drops_outliers_and_sums_to_one(mapping):
    modules = np.array([0] * 6 + [1] * 3 + [2] * 1)  # module 2 is an outlier (< 2)
    pred = np.array([4] * 6 + [7] * 3 + [1])
    anchor = np.full(10, -1)
    pi, k = L.concept_prior(modules, pred, anchor, num_outputs=10, min_size=2, mapping=mapping)
    assert k == 2 and pi.sum() == pytest.approx(1.0)
    core = (pi - L.PRIOR_FLOOR / 10) / (1 - L.PRIOR_FLOOR)
    assert core[4] == pytest.approx(6 / 9) and core[7] == pytest.approx(3 / 9) and core[1] == pytest.approx(0.0, abs=1e-9)


def test_hungarian_mapping_gives_two_concepts_of_one_majority_two_outputs():
    modules, pred, anchor = np.array([0] * 5 + [1] * 4), np.array([3] * 5 + [3, 3, 3, 6]), np.full(9, -1)
    pi_major, _ = L.concept_prior(modules, pred, anchor, 10, 2, "majority")
    pi_hung, _ = L.concept_prior(modules, pred, anchor, 10, 2, "hungarian")
    assert pi_major.argmax() == 3 and pi_major[6] < 0.01
    assert pi_hung[3] > 0.5 and pi_hung[6] == pytest.approx(4 / 9 * (1 - L.PRIOR_FLOOR) + L.PRIOR_FLOOR / 10)


def test_semi_supervised_kmeans_keeps_labelled_classes_and_finds_the_rest():
    x, y = _blobs(k=4, per=30, seed=5)
    labelled = (y < 2) & (torch.arange(len(y)) % 2 == 0)
    pred = L.ss_kmeans(x, 4, y, labelled, seed=0)
    assert torch.equal(pred[labelled], y[labelled])  # anchors keep their class id
    assert M.cluster_accuracy(y.numpy(), pred.numpy(), 2)[0] >= 0.95


def test_semi_supervised_kmeans_keeps_the_lowest_inertia_of_its_starts():
    """GCD's fit_mix: 10 starts; the first start is the single-start run of the same seed, so more
    starts can only lower the inertia, and on overlapping clusters they do."""
    x, y = _blobs(k=6, per=30, seed=1)
    x = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    labelled = (y < 2) & (torch.arange(len(y)) % 2 == 0)
    lower = 0
    for seed in range(5):
        one, inertia_one = L.ss_kmeans(x, 6, y, labelled, seed=seed, inits=1, return_inertia=True)
        ten, inertia_ten = L.ss_kmeans(x, 6, y, labelled, seed=seed, inits=10, return_inertia=True)
        assert inertia_ten <= inertia_one
        lower += inertia_ten < inertia_one - 1e-6
        assert torch.equal(ten[labelled], y[labelled])
        c = torch.stack([F.normalize(x, dim=1)[ten == i].mean(0) for i in range(6)])  # the returned inertia is
        assert inertia_ten >= float(((F.normalize(x, dim=1) - c[ten]) ** 2).sum()) - 1e-4  # its centroids' or more
    assert lower >= 3


def test_teacher_temperature_is_simgcds_linspace_schedule():
    schedule = np.concatenate([np.linspace(0.07, 0.04, 30), np.full(170, 0.04)])  # SimGCD model.py, 200 epochs
    assert [L.teacher_temperature(e) for e in range(200)] == pytest.approx(schedule, abs=1e-12)


def test_labelled_mask_labels_a_share_of_known_classes_only():
    y = np.repeat(np.arange(10), 20)
    mask = L.labelled_mask(y, known=5, fraction=0.5, seed=0)
    assert mask.sum() == 50 and not mask[y >= 5].any()
    assert np.array_equal(mask, L.labelled_mask(y, 5, 0.5, 0))


def test_gcdnet_sizes_and_outputs():
    net = L.GCDNet(1, 10, width=16, side=28)
    out = net(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10) and out.abs().max() <= 1 / L.STUDENT_TEMP + 1e-4
    assert net.features(torch.zeros(2, 1, 28, 28)).shape == (2, 64)
    assert L.GCDNet(3, 20, width=32, side=32)(torch.zeros(1, 3, 32, 32)).shape == (1, 20)


def test_augment_keeps_shape_and_range_and_is_seeded():
    x = torch.rand(4, 3, 32, 32)
    a = L.augment(x, torch.Generator().manual_seed(0))
    b = L.augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, L.augment(x, torch.Generator().manual_seed(1)))


# --- config ------------------------------------------------------------------------------------------

_OK = {"method": "fedlpa", "dataset": "fashion-mnist", "partitioner": "dirichlet"}


@pytest.mark.parametrize(("over", "expect"), [
    ({"gcd-known-classes": 10}, "gcd-known-classes=10"),
    ({"gcd-known-classes": 0}, "gcd-known-classes=0"),
    ({"gcd-head-size": 3}, "gcd-head-size=3"),
    ({"gcd-labelled-fraction": 0.0}, "gcd-labelled-fraction"),
    ({"num-server-rounds": 5, "gcd-ssl-rounds": 5}, "gcd-ssl-rounds=5"),
    ({"fedlpa-kl": "js"}, "fedlpa-kl='js'"),
    ({"fedlpa-edge-rule": "add"}, "fedlpa-edge-rule='add'"),
    ({"fedlpa-graph-feature": "pixels"}, "fedlpa-graph-feature"),
    ({"fedlpa-concept-map": "random"}, "fedlpa-concept-map"),
    ({"fedlpa-sim-threshold": 1.5}, "fedlpa-sim-threshold=1.5"),
    ({"fedlpa-confidence-percentile": -0.1}, "fedlpa-confidence-percentile"),
    ({"fedlpa-min-concept": 2.0}, "fedlpa-min-concept"),
    ({"fedlpa-every": 0}, "fedlpa-every=0"),
    ({"fedlpa-knn": 0}, "fedlpa-knn=0"),
    ({"gcd-width": 0}, "gcd-width=0"),
    ({"dataset": "cora", "partitioner": "louvain"}, "does not suit method='fedlpa'"),
    ({"dp": "uls"}, "not analysed under DP"),
])
def test_bad_gcd_settings_name_the_key(over, expect):
    with pytest.raises(ConfigError, match=expect.replace("(", r"\(").replace("[", r"\[")):
        RunConfig.from_run_config({**_OK, **over})


def test_gcd_checks_apply_only_to_gcd_methods():
    cfg = RunConfig.from_run_config({**_OK, "method": "fedavg", "gcd-ssl-rounds": 50})  # not a GCD method: fine
    assert cfg.method == "fedavg" and cfg.gcd_ssl_rounds == 50
    with pytest.raises(ConfigError, match="gcd-ssl-rounds"):  # the same value for a GCD method is refused
        RunConfig.from_run_config({**_OK, "gcd-ssl-rounds": 50})
    wide = RunConfig.from_run_config({**_OK, "gcd-head-size": 20, "gcd-known-classes": 5})
    assert wide.gcd_head_size == 20 and wide.gcd_known_classes == 5
