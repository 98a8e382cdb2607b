"""Every dataset decodes to the shapes and class counts its SOURCE.md documents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bouquet.datasets import (
    DATASETS,
    GRAPH_DATASETS,
    NUM_CLASSES,
    ArrayDataset,
    GraphDataset,
    load_dataset,
)

# name: (nodes, features, classes, directed edges, class counts)
GRAPHS = {
    "cora": (2708, 1433, 7, 10556, [351, 217, 418, 818, 426, 298, 180]),
    "citeseer": (3327, 3703, 6, 9104, [264, 590, 668, 701, 596, 508]),
    "amazon-photo": (7650, 745, 8, 238162, [369, 1686, 703, 915, 882, 823, 1941, 331]),
    "amazon-computers": (
        13752, 767, 10, 491722, [436, 2142, 1414, 542, 5158, 308, 487, 818, 2156, 291],
    ),
}
# name: (kind, n_train, n_test, input_shape, classes)
ARRAYS = {
    "fashion-mnist": ("image", 60000, 10000, (1, 28, 28), 10),
    "mnist": ("image", 8000, 2000, (1, 28, 28), 10),
    "cifar10": ("image", 50000, 10000, (3, 32, 32), 10),
    "heart-disease": ("tabular", 920, None, (13,), 2),
    "breastmnist": ("image", 624, 156, (1, 28, 28), 2),
    "breast_cancer": ("tabular", 455, 114, (30,), 2),
    "digits": ("tabular", 1437, 360, (64,), 10),
    "tinyshakespeare": ("text", None, None, (80,), 65),
}


def test_registry_covers_every_dataset() -> None:
    assert set(DATASETS) == set(GRAPHS) | set(ARRAYS)
    assert set(GRAPH_DATASETS) == set(GRAPHS)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_dataset(name: str, root: Path) -> None:
    nodes, feats, classes, edges, counts = GRAPHS[name]
    g = load_dataset(name, root)
    assert isinstance(g, GraphDataset) and g.kind == "graph"
    assert g.x.shape == (nodes, feats) and g.x.dtype == np.float32
    assert g.y.dtype == np.int64 and g.num_classes == classes == NUM_CLASSES[name]
    assert np.bincount(g.y).tolist() == counts
    ei = g.edge_index
    assert ei.dtype == np.int64 and ei.shape == (2, edges)
    assert not np.any(ei[0] == ei[1])
    codes = ei[0] * nodes + ei[1]
    assert len(np.unique(codes)) == edges  # no duplicates
    assert np.isin(ei[1] * nodes + ei[0], codes).all()  # both directions
    assert load_dataset(name, root) is g


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_array_dataset(name: str, root: Path) -> None:
    kind, n_train, n_test, shape, classes = ARRAYS[name]
    d = load_dataset(name, root)
    assert isinstance(d, ArrayDataset) and d.kind == kind
    assert d.input_shape == shape and d.num_classes == classes == NUM_CLASSES[name]
    if n_train is not None:
        assert len(d.x_train) == len(d.y_train) == n_train
    assert d.y_train.dtype == np.int64 and d.y_train.min() >= 0 and d.y_train.max() < classes
    if n_test is None:
        assert d.x_test is None and d.y_test is None
    else:
        assert d.x_test is not None and d.y_test is not None
        assert d.x_test.shape == (n_test, *shape) and len(d.y_test) == n_test
    if kind == "image":
        assert d.x_train.dtype == np.float32
        assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0 and d.x_train.max() > 0.5
    if kind == "tabular":
        assert np.allclose(d.x_train.mean(0), 0, atol=1e-4) and np.isfinite(d.x_train).all()
    assert load_dataset(name, root) is d


def test_class_balance_of_image_sets(root: Path) -> None:
    fm = load_dataset("fashion-mnist", root)
    assert np.bincount(fm.y_train).tolist() == [6000] * 10
    assert np.bincount(fm.y_test).tolist() == [1000] * 10
    mn = load_dataset("mnist", root)
    full = np.bincount(np.concatenate([mn.y_train, mn.y_test]))
    assert full.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.all(np.abs(np.bincount(mn.y_test) - full * 0.2) <= 1)  # stratified
    bm = load_dataset("breastmnist", root)
    assert np.bincount(bm.y_train).tolist() == [147 + 21, 399 + 57]
    assert np.bincount(bm.y_test).tolist() == [42, 114]


def test_cifar10_classes(root: Path) -> None:
    d = load_dataset("cifar10", root)
    assert np.bincount(d.y_train).tolist() == [5000] * 10
    assert np.bincount(d.y_test).tolist() == [1000] * 10
    # airplanes (0) are bluer than frogs (6) on average: labels follow sorted folder names
    blue_minus_red = d.x_train[:, 2].mean((1, 2)) - d.x_train[:, 0].mean((1, 2))
    assert blue_minus_red[d.y_train == 0].mean() > blue_minus_red[d.y_train == 6].mean()


def test_heart_disease_hospitals(root: Path) -> None:
    d = load_dataset("heart-disease", root)
    assert d.group_names == ("cleveland", "hungarian", "switzerland", "va")
    assert d.groups is not None
    assert np.bincount(d.groups).tolist() == [303, 294, 123, 200]
    positives = [int(d.y_train[d.groups == g].sum()) for g in range(4)]
    assert positives == [139, 106, 115, 149]
    assert np.allclose(d.x_train.std(0), 1, atol=1e-4)


def test_tinyshakespeare_windows(root: Path) -> None:
    d = load_dataset("tinyshakespeare", root)
    assert d.vocab_size == d.num_classes == 65
    assert d.x_train.dtype == np.int64 and d.x_train.max() < 65
    assert d.groups is not None and d.group_names is not None
    sizes = np.bincount(d.groups)
    assert len(sizes) == len(d.group_names) and sizes.min() >= 1
    assert np.all(np.diff(sizes) <= 0)  # group 0 is the biggest speaker
    # a window and its label are consecutive text from one speech
    chars = sorted(set((root / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")))
    snippet = "".join(chars[i] for i in d.x_train[0]) + chars[d.y_train[0]]
    assert snippet in (root / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    assert len(d.group_names) <= 308


def test_training_images_are_one_shared_read_only_copy(root: Path, tmp_path, monkeypatch) -> None:
    """Fashion-MNIST's float training images come memory-mapped from the decoded cache, equal to a
    fresh decode; a cache file of the wrong shape (truncated, or another version) is rewritten."""
    from bouquet.datasets import images

    monkeypatch.setenv("BOUQUET_CACHE", str(tmp_path))
    fresh = images._to_float_images(images.read_idx(root / "fashion-mnist" / "train-images-idx3-ubyte.gz"))
    first = images.load_fashion_mnist(root).x_train
    assert isinstance(first, np.memmap) and not first.flags.writeable
    np.testing.assert_array_equal(first, fresh)
    (cached,) = tmp_path.glob("fashion-mnist-*-f32.npy")
    np.save(cached, np.zeros((3, 1, 28, 28), np.float32))  # a stale or broken cache
    again = images.load_fashion_mnist(root).x_train
    assert again.shape == fresh.shape and np.array_equal(again[:3], fresh[:3])


def test_planetoid_pickles_are_read_from_the_bytes_that_were_checked(root: Path, monkeypatch) -> None:
    """A file swapped after its checksum passed must not reach the unpickler."""
    import pathlib

    from bouquet.datasets import graph
    from bouquet.datasets.files import DataFileError

    real = pathlib.Path.read_bytes
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda self: b"swapped" if self.name == "ind.cora.graph" else real(self))
    with pytest.raises(DataFileError, match="ind.cora.graph changed while it was read"):
        graph.load_planetoid("cora", root)
