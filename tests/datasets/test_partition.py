"""Partition invariants: disjoint, complete where promised, skewed as configured, seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bouquet.datasets import (
    DATASETS,
    PARTITIONERS,
    edge_cut,
    load_dataset,
    louvain_subgraphs,
    partition_labels,
    valid_partitioners,
)
from bouquet.datasets.partition import check_partitioner


def _split(labels: np.ndarray, name: str, n: int, seed: int = 0, **kw) -> list[np.ndarray]:
    args = {"alpha": 0.5, "classes_per_client": 2, "seed": seed} | kw
    return partition_labels(labels, name, n, **args)


def _assert_disjoint(parts: list[np.ndarray]) -> np.ndarray:
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)  # sorted
    return joined


@pytest.fixture
def digits_labels(root: Path) -> np.ndarray:
    return load_dataset("digits", root).y_train


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_complete_and_disjoint(partitioner: str, digits_labels: np.ndarray) -> None:
    parts = _split(digits_labels, partitioner, 7)
    assert len(parts) == 7 and all(len(p) > 0 for p in parts)
    joined = _assert_disjoint(parts)
    assert np.array_equal(np.sort(joined), np.arange(len(digits_labels)))


def test_iid_is_balanced_and_mixed(digits_labels: np.ndarray) -> None:
    parts = _split(digits_labels, "iid", 5)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(len(np.unique(digits_labels[p])) == 10 for p in parts)  # shuffled, not sorted shards


def _mean_tv(labels: np.ndarray, parts: list[np.ndarray], k: int) -> float:
    glob = np.bincount(labels, minlength=k) / len(labels)
    return float(np.mean([0.5 * np.abs(np.bincount(labels[p], minlength=k) / len(p) - glob).sum() for p in parts]))


def test_dirichlet_skew_grows_as_alpha_falls(root: Path) -> None:
    labels = load_dataset("fashion-mnist", root).y_train
    skew = {a: _mean_tv(labels, _split(labels, "dirichlet", 10, alpha=a), 10) for a in (0.1, 1.0, 10.0)}
    assert skew[0.1] > skew[1.0] > skew[10.0]
    assert skew[0.1] > 0.4 and skew[10.0] < 0.15


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_limits_classes(k: int, digits_labels: np.ndarray) -> None:
    parts = _split(digits_labels, "pathological", 12, classes_per_client=k)
    _assert_disjoint(parts)
    assert [len(np.unique(digits_labels[p])) for p in parts] == [k] * 12


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "pathological"])
def test_seeded(partitioner: str, digits_labels: np.ndarray) -> None:
    a = _split(digits_labels, partitioner, 6, seed=1)
    b = _split(digits_labels, partitioner, 6, seed=1)
    c = _split(digits_labels, partitioner, 6, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_natural_heart_disease_is_the_hospitals(root: Path) -> None:
    d = load_dataset("heart-disease", root)
    parts = _split(d.y_train, "natural", 4, groups=d.groups)
    assert [len(p) for p in parts] == [303, 294, 123, 200]
    assert all(np.all(d.groups[p] == i) for i, p in enumerate(parts))
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(920))


def test_natural_takes_biggest_speakers(root: Path) -> None:
    d = load_dataset("tinyshakespeare", root)
    parts = _split(d.y_train, "natural", 5, groups=d.groups)
    sizes = [len(p) for p in parts]
    assert sizes == sorted(np.bincount(d.groups), reverse=True)[:5]
    with pytest.raises(ValueError, match="num-supernodes"):
        _split(d.y_train, "natural", len(d.group_names) + 1, groups=d.groups)


@pytest.mark.parametrize("clients", [3, 5, 10])
def test_louvain_cora(clients: int, root: Path) -> None:
    g = load_dataset("cora", root)
    parts = louvain_subgraphs(g.edge_index, g.num_nodes, clients, seed=0)
    assert len(parts) == clients + 1
    joined = _assert_disjoint(parts)
    assert np.array_equal(np.sort(joined), np.arange(g.num_nodes))
    held_out = set(parts[-1].tolist())
    assert held_out and not held_out & set(np.concatenate(parts[:-1]).tolist())
    sizes = [len(p) for p in parts]
    assert max(sizes) / min(sizes) < 2.0  # greedy largest-first keeps parts balanced
    # communities are dense: far fewer edges cut than a random split of the same sizes
    rng = np.random.default_rng(0)
    perm = rng.permutation(g.num_nodes)
    random_parts = np.split(perm, np.cumsum(sizes)[:-1])
    assert edge_cut(g.edge_index, parts) < 0.5 * edge_cut(g.edge_index, random_parts)
    again = louvain_subgraphs(g.edge_index, g.num_nodes, clients, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_louvain_seed_changes_split(root: Path) -> None:
    g = load_dataset("cora", root)
    a = louvain_subgraphs(g.edge_index, g.num_nodes, 5, seed=0)
    b = louvain_subgraphs(g.edge_index, g.num_nodes, 5, seed=1)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))


def test_louvain_needs_enough_communities() -> None:
    edge_index = np.array([[0, 1, 1, 2], [1, 0, 2, 1]])  # one path = one community
    with pytest.raises(ValueError, match="num-supernodes"):
        louvain_subgraphs(edge_index, 3, 2, seed=0)


def test_edge_cut_counts_crossing_edges() -> None:
    edge_index = np.array([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    assert edge_cut(edge_index, [np.array([0, 1]), np.array([2, 3])]) == 2
    assert edge_cut(edge_index, [np.array([0, 1, 2, 3])]) == 0


def test_valid_partitioners() -> None:
    assert set(valid_partitioners("cora")) == {"iid", "dirichlet", "pathological", "louvain"}
    assert "natural" in valid_partitioners("heart-disease")
    assert "natural" in valid_partitioners("tinyshakespeare")
    assert set(valid_partitioners("cifar10")) == {"iid", "dirichlet", "pathological", "iid-draw"}
    assert "iid-draw" not in valid_partitioners("digits")  # no official test split to score on
    assert all(set(valid_partitioners(d)) <= set(PARTITIONERS) for d in DATASETS)


def test_errors_name_the_key(digits_labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="dirichlet-alpha"):
        _split(digits_labels, "dirichlet", 4, alpha=0.0)
    with pytest.raises(ValueError, match="partitioner.*louvain.*digits.*iid, dirichlet, pathological"):
        check_partitioner("digits", "louvain")
    with pytest.raises(ValueError, match="partitioner.*natural"):
        check_partitioner("cora", "natural")
    with pytest.raises(ValueError, match="natural"):
        _split(digits_labels, "natural", 2)  # no groups
    with pytest.raises(ValueError, match="num-supernodes"):
        _split(digits_labels, "iid", 0)
    with pytest.raises(ValueError, match="dataset"):
        valid_partitioners("imagenet")


def test_tiny_dirichlet_fails_clearly_or_succeeds(root: Path) -> None:
    """303 rows, 4 clients, alpha 0.1: never hangs; either valid partitions or a named error."""
    labels = load_dataset("heart-disease", root).y_train[:303]
    for seed in range(5):
        try:
            parts = _split(labels, "dirichlet", 4, alpha=0.1, seed=seed)
        except ValueError as exc:
            assert "dirichlet-alpha" in str(exc)
        else:
            assert min(len(p) for p in parts) >= 2
    with pytest.raises(ValueError, match="dirichlet-alpha"):
        _split(labels[:20], "dirichlet", 10, alpha=0.01)


def test_dirichlet_minimum_size_is_met_deterministically(root: Path) -> None:
    # 624 BreastMNIST labels, 2 classes, alpha 0.1, 10 clients: flwr-datasets alone gives up
    labels = load_dataset("breastmnist", root).y_train
    parts = _split(labels, "dirichlet", 10, seed=2, alpha=0.1, min_size=10)
    assert len(_assert_disjoint(parts)) == len(labels)
    assert min(len(p) for p in parts) >= 10
    again = _split(labels, "dirichlet", 10, seed=2, alpha=0.1, min_size=10)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    with pytest.raises(ValueError, match="fewer than 300 samples"):
        _split(labels, "dirichlet", 10, seed=0, alpha=0.1, min_size=300)
