"""FedKPer's data protocol, selectable: the per-class local test split (its ``create_local``)
and the self-balancing Dirichlet cap."""

from __future__ import annotations

import numpy as np
import pytest

from bouquet.config import ConfigError, RunConfig, data_spec
from bouquet.datasets import DataSpec, client_data, load_dataset, partition_labels
from bouquet.datasets.client_data import _per_class_split
from bouquet.datasets.files import data_root


def test_per_class_split_takes_an_equal_count_per_class_and_20_percent_of_a_small_class():
    labels = np.array([0] * 70 + [1] * 25 + [2] * 5)
    idx = np.arange(100) + 1000
    full = np.zeros(1100, dtype=np.int64)
    full[idx] = labels
    train, test = _per_class_split(full, idx, np.random.default_rng(0))
    # 20 % of 100 = 20 over 3 classes -> 6 each; class 2 holds 5 < 6 -> int(0.2 * 5) = 1
    assert np.bincount(full[test], minlength=3).tolist() == [6, 6, 1]
    assert len(np.intersect1d(train, test)) == 0 and np.array_equal(np.sort(np.concatenate([train, test])), idx)


def test_per_class_split_reaches_the_clients_through_the_run_config():
    cfg = RunConfig.from_run_config({"method": "fedavg", "dataset": "digits", "partitioner": "dirichlet",
                                     "dirichlet-alpha": 0.3, "local-test-split": "per-class"})
    data = client_data(data_spec(cfg, 4), 0)
    counts = np.bincount(data.y_test)
    held = np.bincount(np.concatenate([data.y_train, data.y_test]))
    n = len(data.y_train) + len(data.y_test)
    per_class = int(int(0.2 * n) / np.count_nonzero(held))
    big = held >= per_class
    assert (counts[big] == per_class).all()  # equal count for every class with enough samples
    assert (counts[~big & (held > 0)] == (0.2 * held[~big & (held > 0)]).astype(int)).all()


def test_self_balancing_stops_a_partition_once_it_holds_its_share():
    """flwr-datasets' rule, as FedKPer's code: classes are dealt in label order and a partition
    that already holds N/n gets nothing more, so all but its last class stay under N/n."""
    y = load_dataset("digits", data_root()).y_train
    n_parts = 5
    parts = partition_labels(y, "dirichlet", n_parts, alpha=0.1, classes_per_client=2, seed=0, self_balancing=True)
    for part in parts:
        counts = np.bincount(y[part], minlength=10)
        last = np.flatnonzero(counts).max()
        assert counts.sum() - counts[last] < len(y) / n_parts
    free = partition_labels(y, "dirichlet", n_parts, alpha=0.1, classes_per_client=2, seed=0)
    assert max(map(len, parts)) < max(map(len, free))  # the cap binds at this skew


def test_a_bad_split_name_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="local-test-split"):
        RunConfig.from_run_config({"local-test-split": "balanced"})
    with pytest.raises(ConfigError, match="dirichlet-self-balancing"):
        RunConfig.from_run_config({"dirichlet-self-balancing": "yes"})


def test_both_settings_key_the_data_spec():
    base = DataSpec("digits", "dirichlet", 4, alpha=0.5, classes_per_client=2, seed=0)
    assert base != DataSpec("digits", "dirichlet", 4, alpha=0.5, classes_per_client=2, seed=0, self_balancing=True)
    assert base != DataSpec("digits", "dirichlet", 4, alpha=0.5, classes_per_client=2, seed=0,
                            local_test_split="per-class")
