"""Per-client data: local splits partition the client's share; graphs stay inside their subgraph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bouquet.datasets import (
    DataSpec,
    GraphClientData,
    ArrayClientData,
    check_spec,
    client_data,
    global_test,
    load_dataset,
    louvain_subgraphs,
    new_client_graph,
    partition_labels,
)
from bouquet.datasets.files import data_root


def _spec(dataset: str, partitioner: str, n: int, **kw) -> DataSpec:
    args = {"alpha": 0.5, "classes_per_client": 2, "seed": 0} | kw
    return DataSpec(dataset, partitioner, n, **args)


def test_cora_louvain_clients() -> None:
    spec = _spec("cora", "louvain", 3)
    g = load_dataset("cora", data_root())
    parts = louvain_subgraphs(g.edge_index, g.num_nodes, 3, seed=0)
    seen: list[np.ndarray] = []
    for pid in range(3):
        c = client_data(spec, pid)
        assert isinstance(c, GraphClientData)
        assert np.array_equal(c.node_ids.numpy(), parts[pid])
        n = c.num_nodes
        assert c.x.shape == (n, 1433) and c.y.shape == (n,) and c.num_classes == 7
        assert torch.equal(c.y, torch.from_numpy(g.y[parts[pid]]))
        masks = torch.stack([c.train_mask, c.val_mask, c.test_mask, c.unseen_mask, c.missing_mask]).long()
        assert torch.all(masks.sum(0) == 1)  # disjoint and covering
        in_training = c.train_mask | c.val_mask | c.test_mask
        assert abs(int(c.train_mask.sum()) - 0.6 * int(in_training.sum())) <= 1
        assert abs(int(c.unseen_mask.sum()) - 0.2 * int((~c.missing_mask).sum())) <= 1
        # missing classes: exactly their nodes are withheld, and no training label has them
        assert len(c.missing_classes) == 1
        assert torch.equal(c.missing_mask, torch.isin(c.y, torch.tensor(c.missing_classes)))
        assert not torch.isin(c.y[c.train_mask | c.val_mask], torch.tensor(c.missing_classes)).any()
        # the grown graph keeps every original edge inside the part ...
        full = c.full_edge_index
        assert full.min() >= 0 and full.max() < n
        inside = np.isin(g.edge_index, parts[pid]).all(0)
        assert full.shape[1] == int(inside.sum())
        orig = c.node_ids[full]
        codes = set((orig[0] * g.num_nodes + orig[1]).tolist())
        assert codes <= set((g.edge_index[0] * g.num_nodes + g.edge_index[1]).tolist())
        # ... and the training graph is exactly its edges among training-graph nodes
        ei = c.edge_index
        assert in_training[ei].all()
        assert ei.shape[1] == int((in_training[full[0]] & in_training[full[1]]).sum())
        seen.append(parts[pid])
        assert client_data(spec, pid) is c
    held = new_client_graph(spec)
    assert held is not None
    assert np.array_equal(held.node_ids.numpy(), parts[-1])
    assert not np.isin(held.node_ids.numpy(), np.concatenate(seen)).any()
    assert bool(held.test_mask.all()) and not held.train_mask.any() and not held.val_mask.any()


def test_graph_label_partitioner() -> None:
    spec = _spec("citeseer", "dirichlet", 4, alpha=1.0)
    ids = [client_data(spec, pid).node_ids.numpy() for pid in range(4)]
    joined = np.concatenate(ids)
    assert len(joined) == len(np.unique(joined)) == 3327
    assert new_client_graph(spec) is None and global_test(spec) is None


@pytest.mark.parametrize(
    "dataset,partitioner,n",
    [("digits", "dirichlet", 5), ("heart-disease", "natural", 4), ("fashion-mnist", "pathological", 10)],
)
def test_array_clients(dataset: str, partitioner: str, n: int) -> None:
    spec = _spec(dataset, partitioner, n, seed=3)
    data = load_dataset(dataset, data_root())
    parts = partition_labels(
        data.y_train, partitioner, n, alpha=0.5, classes_per_client=2, seed=3, groups=data.groups
    )
    for pid in range(n):
        c = client_data(spec, pid)
        assert isinstance(c, ArrayClientData)
        assert not np.intersect1d(c.train_indices, c.test_indices).size
        assert np.array_equal(np.union1d(c.train_indices, c.test_indices), parts[pid])
        assert abs(len(c.test_indices) - 0.2 * len(parts[pid])) <= 1 + data.num_classes
        assert np.array_equal(c.x_train, data.x_train[c.train_indices])
        assert np.array_equal(c.y_test, data.y_train[c.test_indices])
        assert client_data(spec, pid) is c
    other = client_data(_spec(dataset, partitioner, n, seed=4), 0)
    assert not np.array_equal(other.train_indices, client_data(spec, 0).train_indices)


def test_local_split_is_stratified() -> None:
    c = client_data(_spec("fashion-mnist", "iid", 4), 1)
    train_frac = np.bincount(c.y_train, minlength=10) / len(c.y_train)
    test_frac = np.bincount(c.y_test, minlength=10) / len(c.y_test)
    assert np.abs(train_frac - test_frac).max() < 0.005


def test_global_test() -> None:
    x, y = global_test(_spec("mnist", "iid", 2))
    assert x.shape == (2000, 1, 28, 28) and len(y) == 2000
    # no official test split: the union of the clients' local test splits, and nothing else
    spec = _spec("heart-disease", "natural", 4)
    x, y = global_test(spec)
    parts = [client_data(spec, i) for i in range(4)]
    assert len(y) == sum(len(p.y_test) for p in parts)
    assert np.array_equal(np.sort(y), np.sort(np.concatenate([p.y_test for p in parts])))


def test_graph_split_settings_move_the_missing_class_and_the_labelled_share() -> None:
    """Split sensitivity (issue 19): 'not-largest' never withholds a client's largest class;
    two missing classes withhold two; the train fraction sets the labelled share, validation
    stays 20 %. 'random' with the defaults is the split every earlier result used."""
    rules = {"random": [], "not-largest": []}
    for seed in range(6):
        for rule in rules:
            for pid in range(3):
                c = client_data(_spec("cora", "louvain", 3, seed=seed, missing_rule=rule), pid)
                counts = np.bincount(c.y.numpy(), minlength=7)
                rules[rule].append(int(np.argmax(counts)) in c.missing_classes)
    assert not any(rules["not-largest"])
    assert any(rules["random"])  # the rule is not vacuous on these splits
    two = client_data(_spec("cora", "louvain", 3, missing_classes=2, missing_rule="not-largest"), 0)
    assert len(two.missing_classes) == 2
    assert torch.equal(two.missing_mask, torch.isin(two.y, torch.tensor(two.missing_classes)))
    low = client_data(_spec("cora", "louvain", 3, train_fraction=0.2), 0)
    default = client_data(_spec("cora", "louvain", 3), 0)
    seen = int((low.train_mask | low.val_mask | low.test_mask).sum())
    assert int(low.train_mask.sum()) == int(0.2 * seen) and int(low.val_mask.sum()) == int(0.2 * seen)
    assert int(low.test_mask.sum()) == seen - 2 * int(0.2 * seen)
    # the same nodes are seen and the same class is missing: only the labelled share moves
    assert torch.equal(low.missing_mask, default.missing_mask) and torch.equal(low.unseen_mask, default.unseen_mask)
    assert bool((low.train_mask & ~default.train_mask).sum() == 0)


@pytest.mark.parametrize(
    "spec,key",
    [
        (_spec("imagenet", "iid", 2), "dataset"),
        (_spec("digits", "louvain", 2), "partitioner"),
        (_spec("cora", "natural", 2), "partitioner"),
        (_spec("digits", "iid", 0), "num-supernodes"),
        (_spec("digits", "dirichlet", 2, alpha=0.0), "dirichlet-alpha"),
        (_spec("digits", "pathological", 2, classes_per_client=11), "classes-per-client"),
        (_spec("digits", "pathological", 2, classes_per_client=0), "classes-per-client"),
        (_spec("heart-disease", "natural", 3), "num-supernodes"),
        (_spec("tinyshakespeare", "natural", 10_000), "num-supernodes"),
        (_spec("cora", "louvain", 3, missing_rule="largest"), "graph-missing-rule"),
        (_spec("cora", "louvain", 3, train_fraction=0.9), "graph-train-fraction"),
        (_spec("cora", "louvain", 3, train_fraction=0.0), "graph-train-fraction"),
    ],
)
def test_check_spec_names_the_key(spec: DataSpec, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        check_spec(spec)
    with pytest.raises(ValueError, match=key):
        client_data(spec, 0)


def test_too_many_louvain_clients() -> None:
    with pytest.raises(ValueError, match="num-supernodes"):
        client_data(_spec("cora", "louvain", 2000), 0)


def test_partition_id_out_of_range() -> None:
    with pytest.raises(ValueError, match="num-supernodes"):
        client_data(_spec("digits", "iid", 3), 3)


def test_iid_draw_computes_only_the_asked_client_deterministically_by_seed() -> None:
    import importlib

    cd = importlib.import_module("bouquet.datasets.client_data")  # the module (the package re-exports a function)

    spec = _spec("fashion-mnist", "iid-draw", 1_000_000, examples_per_client=30)
    last = client_data(spec, 999_999)
    again = cd._client_data.__wrapped__(spec, 999_999, cd._root(spec))  # not the cached object: recomputed
    rows = np.concatenate([last.train_indices, last.test_indices])
    assert len(rows) == len(set(rows.tolist())) == 30  # without replacement inside a client
    assert len(last.train_indices) == 24 and len(last.test_indices) == 6  # the usual 80/20 local split
    np.testing.assert_array_equal(again.train_indices, last.train_indices)
    other = client_data(spec, 999_998)
    assert not np.array_equal(np.sort(rows), np.sort(np.concatenate([other.train_indices, other.test_indices])))
    reseeded = client_data(_spec("fashion-mnist", "iid-draw", 1_000_000, examples_per_client=30, seed=1), 999_999)
    assert not np.array_equal(reseeded.train_indices, last.train_indices)
    pool = load_dataset("fashion-mnist", data_root())
    np.testing.assert_array_equal(last.y_train, pool.y_train[last.train_indices])
    with pytest.raises(ValueError, match="refused above 10,000"):
        cd.partition_indices(spec)  # nobody lists a million clients
    with pytest.raises(ValueError, match="examples-per-client"):
        check_spec(_spec("fashion-mnist", "iid-draw", 10, examples_per_client=1))
