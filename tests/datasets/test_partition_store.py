"""The on-disk partition store: a second process (here: a cleared in-memory cache) reads the
partition back without recomputing it; every input of the partition keys it; a corrupt file is
recomputed, never trusted."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from bouquet.datasets import DataSpec

cd = importlib.import_module("bouquet.datasets.client_data")  # the module (the package exports a function of that name)


def _spec(**kw) -> DataSpec:
    args = {"alpha": 0.5, "classes_per_client": 2, "seed": 0} | kw
    return DataSpec("digits", "dirichlet", 5, **args)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("BOUQUET_CACHE", str(tmp_path))
    cd._partitions.cache_clear()
    cd._client_data.cache_clear()
    yield tmp_path / "partitions"
    cd._partitions.cache_clear()
    cd._client_data.cache_clear()


def _fresh(spec: DataSpec):
    cd._partitions.cache_clear()
    return cd.partition_indices(spec)


def test_a_stored_partition_is_read_back_not_recomputed(store, monkeypatch):
    spec = _spec()
    first = _fresh(spec)
    assert len(list(store.glob("digits-*.npz"))) == 1

    def refuse(*a, **k):
        raise AssertionError("recomputed although stored")

    monkeypatch.setattr(cd, "partition_labels", refuse)
    again = _fresh(spec)
    assert len(again) == len(first) == 5 and all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(a.dtype == np.int64 for a in again)


@pytest.mark.parametrize("change", [{"seed": 1}, {"alpha": 0.3}, {"num_partitions": 4}, {"self_balancing": True}])
def test_every_setting_keys_the_store(store, change):
    base = _fresh(_spec())
    n = change.pop("num_partitions", 5)
    other = _fresh(DataSpec("digits", "dirichlet", n, **({"alpha": 0.5, "classes_per_client": 2, "seed": 0} | change)))
    assert len(list(store.glob("digits-*.npz"))) == 2
    assert len(other) != len(base) or any(not np.array_equal(a, b) for a, b in zip(base, other))


def test_a_corrupt_file_is_recomputed_and_replaced(store, monkeypatch):
    spec = _spec()
    first = _fresh(spec)
    (path,) = store.glob("digits-*.npz")
    path.write_bytes(b"not a zip")
    calls = []
    real = cd.partition_labels
    monkeypatch.setattr(cd, "partition_labels", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = _fresh(spec)
    assert calls == [1] and all(np.array_equal(a, b) for a, b in zip(first, again))
    with np.load(path) as stored:  # rewritten whole
        assert int(stored["count"]) == 5
