"""Dataset registry: names, cheap metadata, and the cached `load_dataset` entry point."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from bouquet.datasets import graph, images, tabular, text
from bouquet.datasets.arrays import ArrayDataset
from bouquet.datasets.graph import GraphDataset

GRAPH_DATASETS: tuple[str, ...] = ("cora", "citeseer", "amazon-photo", "amazon-computers")
DATASETS: tuple[str, ...] = GRAPH_DATASETS + (
    "fashion-mnist",
    "mnist",
    "cifar10",
    "heart-disease",
    "breastmnist",
    "breast_cancer",
    "digits",
    "tinyshakespeare",
)
# Datasets with natural groups (hospital, speaker) usable by the natural partitioner.
GROUPED_DATASETS: tuple[str, ...] = ("heart-disease", "tinyshakespeare")
# Image datasets with an official test split (the server scores on it whatever the clients hold).
OFFICIAL_TEST_DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist", "cifar10")

# Known without decoding, so config validation stays cheap (a test pins these).
NUM_CLASSES: dict[str, int] = {
    "cora": 7,
    "citeseer": 6,
    "amazon-photo": 8,
    "amazon-computers": 10,
    "fashion-mnist": 10,
    "mnist": 10,
    "cifar10": 10,
    "heart-disease": 2,
    "breastmnist": 2,
    "breast_cancer": 2,
    "digits": 10,
    "tinyshakespeare": 65,
}

_LOADERS: dict[str, Callable[[Path], ArrayDataset | GraphDataset]] = {
    "cora": functools.partial(graph.load_planetoid, "cora"),
    "citeseer": functools.partial(graph.load_planetoid, "citeseer"),
    "amazon-photo": functools.partial(graph.load_amazon, "amazon-photo"),
    "amazon-computers": functools.partial(graph.load_amazon, "amazon-computers"),
    "fashion-mnist": images.load_fashion_mnist,
    "mnist": images.load_mnist,
    "cifar10": images.load_cifar10,
    "heart-disease": tabular.load_heart_disease,
    "breastmnist": images.load_breastmnist,
    "breast_cancer": tabular.load_breast_cancer,
    "digits": tabular.load_digits,
    "tinyshakespeare": text.load_tinyshakespeare,
}


def load_dataset(name: str, root: str | Path) -> ArrayDataset | GraphDataset:
    """Decode dataset ``name`` from ``root`` once per process; later calls return the same object."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return _load_cached(name, str(Path(root).expanduser()))


@functools.lru_cache(maxsize=None)
def _load_cached(name: str, root: str) -> ArrayDataset | GraphDataset:
    return _LOADERS[name](Path(root))
