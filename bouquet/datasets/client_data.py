"""What one client trains and evaluates on, derived from a hashable `DataSpec`."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bouquet.datasets.arrays import ArrayDataset
from bouquet.datasets.files import data_root
from bouquet.datasets.graph import GraphDataset
from bouquet.datasets.loaders import DATASETS, GROUPED_DATASETS, NUM_CLASSES, load_dataset
from bouquet.datasets.partition import (
    DRAWN,
    check_partitioner,
    louvain_subgraphs,
    partition_labels,
)

LOCAL_TEST_FRACTION = 0.2
GRAPH_VAL = 0.2  # share of a client's seen nodes for validation; train: graph-train-fraction; test: the rest
MISSING_RULES = ("random", "not-largest")
# Cross-silo datasets whose natural split only makes sense in full.
_EXACT_NATURAL = {"heart-disease": 4}


@dataclass(frozen=True)
class DataSpec:
    """Everything that determines client data; hashable so it can key the caches."""

    dataset: str
    partitioner: str
    num_partitions: int
    alpha: float
    classes_per_client: int
    seed: int
    data_dir: str = ""
    unseen_fraction: float = 0.2  # graphs: share of a client's other nodes that arrive later
    missing_classes: int = 1  # graphs: classes per client whose nodes all arrive later
    missing_rule: str = "random"  # graphs: "not-largest" never takes a client's largest class
    train_fraction: float = 0.6  # graphs: labelled share of the seen nodes (validation 0.2)
    min_partition_size: int = 2  # dirichlet: least samples per client (flwr-datasets retries)
    examples_per_client: int = 60  # iid-draw: rows each client draws
    self_balancing: bool = False  # dirichlet: cap a client at N/n (flwr-datasets' self_balancing)
    local_test_split: str = "stratified"  # or "per-class" (FedKPer's code)


@dataclass(frozen=True, eq=False)
class ArrayClientData:
    """One client's local arrays; *_indices are rows of the dataset's train pool."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    train_indices: np.ndarray
    test_indices: np.ndarray


@dataclass(frozen=True, eq=False)
class GraphClientData:
    """One client's induced subgraph as PyG-ready tensors; node_ids are the original ids.

    FedLoG's evaluation settings live here so every method is scored on the same splits:
    ``edge_index`` is the *training* graph, from which the unseen nodes (``unseen_mask``:
    later arrivals of seen classes; ``missing_mask``: later arrivals of the client's missing
    classes, never labelled in training) are cut out with all their edges;
    ``full_edge_index`` is the grown graph they arrive in. train/val/test masks (the "seen
    graph" split) cover only the nodes of the training graph.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int
    node_ids: torch.Tensor
    full_edge_index: torch.Tensor
    unseen_mask: torch.Tensor
    missing_mask: torch.Tensor
    missing_classes: tuple[int, ...] = ()

    @property
    def num_nodes(self) -> int:
        return int(self.y.numel())


def check_spec(spec: DataSpec) -> None:
    """Reject a bad configuration early, naming the run-config key at fault."""
    if spec.dataset not in DATASETS:
        raise ValueError(f"dataset={spec.dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
    check_partitioner(spec.dataset, spec.partitioner)
    if spec.num_partitions < 1:
        raise ValueError(f"num-supernodes must be >= 1, got {spec.num_partitions}")
    if not spec.alpha > 0:
        raise ValueError(f"dirichlet-alpha must be > 0, got {spec.alpha}")
    if not 0.0 <= spec.unseen_fraction < 1.0:
        raise ValueError(f"graph-unseen-fraction must be in [0, 1), got {spec.unseen_fraction}")
    if spec.missing_classes < 0:
        raise ValueError(f"graph-missing-classes must be >= 0, got {spec.missing_classes}")
    if spec.missing_rule not in MISSING_RULES:
        raise ValueError(f"graph-missing-rule={spec.missing_rule!r} is unknown; choose one of {', '.join(MISSING_RULES)}")
    if not 0.0 < spec.train_fraction <= 1.0 - GRAPH_VAL:
        raise ValueError(f"graph-train-fraction must be in (0, {1.0 - GRAPH_VAL:g}], got {spec.train_fraction}")
    num_classes = NUM_CLASSES[spec.dataset]
    if not 1 <= spec.classes_per_client <= num_classes:
        raise ValueError(
            f"classes-per-client={spec.classes_per_client} is out of range for "
            f"dataset={spec.dataset!r}: use 1..{num_classes}"
        )
    if spec.partitioner == DRAWN and spec.examples_per_client < 2:
        raise ValueError(f"examples-per-client must be >= 2 (a local train and test row), got {spec.examples_per_client}")
    if spec.partitioner == "natural":
        exact = _EXACT_NATURAL.get(spec.dataset)
        if exact is not None and spec.num_partitions != exact:
            raise ValueError(
                f"num-supernodes must be {exact} for partitioner='natural' on "
                f"dataset={spec.dataset!r} (one client per group), got {spec.num_partitions}"
            )
        if spec.dataset in GROUPED_DATASETS and exact is None:
            groups = _dataset(spec).groups
            assert groups is not None
            num_groups = int(groups.max()) + 1
            if spec.num_partitions > num_groups:
                raise ValueError(
                    f"num-supernodes={spec.num_partitions} is out of range for "
                    f"partitioner='natural' on dataset={spec.dataset!r}: use 1..{num_groups}"
                )


def _root(spec: DataSpec) -> str:
    return str(data_root(spec.data_dir))


def _dataset(spec: DataSpec) -> ArrayDataset | GraphDataset:
    return load_dataset(spec.dataset, _root(spec))


def client_data(spec: DataSpec, partition_id: int) -> ArrayClientData | GraphClientData:
    """Client ``partition_id``'s data, built once per process."""
    check_spec(spec)
    if not 0 <= partition_id < spec.num_partitions:
        raise ValueError(
            f"partition id {partition_id} is out of range for num-supernodes={spec.num_partitions}"
        )
    return _client_data(spec, partition_id, _root(spec))


def new_client_graph(spec: DataSpec) -> GraphClientData | None:
    """The held-out Louvain subgraph (all nodes in test_mask); None for other partitioners."""
    check_spec(spec)
    if spec.partitioner != "louvain":
        return None
    return _new_client_graph(spec, _root(spec))


HELD_OUT_MAX = 4000


def global_test(spec: DataSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """The dataset's official (or fixed) test split, for server-side evaluation. Without one
    (heart-disease, tinyshakespeare) it is the union of every client's local test split, so
    the global model is still scored on data no client trained on; with ``natural`` over fewer
    clients than groups, it is the groups no client holds (held-out users). Graphs: None (they
    use the held-out subgraph)."""
    check_spec(spec)
    data = _dataset(spec)
    if not isinstance(data, ArrayDataset):
        return None
    if data.x_test is not None and data.y_test is not None:
        return data.x_test, data.y_test
    if _held_out_users(spec, data):
        # users no client holds (the natural partitioner takes the biggest groups): a held-out-user
        # test set, at most HELD_OUT_MAX rows (seeded), as user-level evaluations need
        rows = np.flatnonzero(data.groups >= spec.num_partitions)
        if len(rows) > HELD_OUT_MAX:
            rows = np.sort(np.random.default_rng(spec.seed).choice(rows, HELD_OUT_MAX, replace=False))
        return data.x_train[rows], data.y_train[rows]
    parts = [client_data(spec, pid) for pid in range(spec.num_partitions)]
    return np.concatenate([p.x_test for p in parts]), np.concatenate([p.y_test for p in parts])


def _held_out_users(spec: DataSpec, data: ArrayDataset) -> bool:
    return spec.partitioner == "natural" and data.groups is not None and spec.num_partitions <= int(data.groups.max())


def global_test_is_users_data(spec: DataSpec) -> bool:
    """Whether :func:`global_test` is made of the clients' own local test splits (no official
    test split, no held-out users): then scoring it reveals the users' data (user-level DP)."""
    data = _dataset(spec)
    return isinstance(data, ArrayDataset) and data.x_test is None and not _held_out_users(spec, data)


def partition_indices(spec: DataSpec) -> tuple[np.ndarray, ...]:
    """Every partition's sample (graph: node) indices, as the clients materialise them (cached);
    Louvain adds the held-out subgraph last."""
    return _partitions(spec, _root(spec))


@functools.lru_cache(maxsize=None)
def _partitions(spec: DataSpec, root: str) -> tuple[np.ndarray, ...]:
    """Partition of the whole train pool (graph: node set); shared by all clients of a spec."""
    data = load_dataset(spec.dataset, root)
    if spec.partitioner == DRAWN:
        if spec.num_partitions > DRAWN_LISTED:
            raise ValueError(f"partitioner={DRAWN!r} with {spec.num_partitions} clients: every client's rows "
                             f"are drawn when it is asked for; listing them all is refused above {DRAWN_LISTED:,}")
        return tuple(_drawn(spec, data, pid) for pid in range(spec.num_partitions))
    if isinstance(data, GraphDataset) and spec.partitioner == "louvain":
        inputs = (data.edge_index, np.asarray([data.num_nodes]))
        parts = stored_partition(spec, inputs, lambda: louvain_subgraphs(
            data.edge_index, data.num_nodes, spec.num_partitions, spec.seed))
    else:
        labels = data.y if isinstance(data, GraphDataset) else data.y_train
        groups = None if isinstance(data, GraphDataset) else data.groups
        parts = stored_partition(spec, (labels, groups), lambda: partition_labels(
            labels, spec.partitioner, spec.num_partitions, alpha=spec.alpha,
            classes_per_client=spec.classes_per_client, seed=spec.seed, groups=groups,
            min_size=spec.min_partition_size, self_balancing=spec.self_balancing,
        ))
    for i, part in enumerate(parts):
        if len(part) == 0:
            raise ValueError(
                f"partition {i} is empty with partitioner={spec.partitioner!r} and "
                f"num-supernodes={spec.num_partitions}; lower num-supernodes or change partitioner"
            )
    return tuple(parts)


def stored_partition(spec: DataSpec, inputs: tuple, compute) -> list[np.ndarray]:
    """``compute()`` once per machine: the partition is kept on disk beside the decoded data
    (``$BOUQUET_CACHE/partitions``), keyed by a hash of everything it is a function of (the
    labels / graph it splits, the partitioner's settings and seed, the partitioning code and
    flwr-datasets, networkx and numpy versions). Why: every process that needs it (server, each simulated
    client, each deployed ClientApp process — one per message) otherwise imports
    flwr-datasets and recomputes it, seconds each time. An unreadable file is recomputed."""
    import hashlib  # noqa: PLC0415
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from importlib import metadata  # noqa: PLC0415

    from bouquet.datasets import partition as code  # noqa: PLC0415
    from bouquet.datasets.images import decoded_cache_dir  # noqa: PLC0415

    key = hashlib.sha256()
    for part in (spec.dataset, spec.partitioner, spec.num_partitions, repr(float(spec.alpha)),
                 spec.classes_per_client, spec.seed, spec.min_partition_size, spec.self_balancing,
                 metadata.version("flwr-datasets"),
                 metadata.version("networkx"), np.__version__):
        key.update(f"{part}|".encode())
    key.update(Path(code.__file__).read_bytes())
    for array in inputs:
        key.update(b"none" if array is None else np.ascontiguousarray(array).tobytes() + str(array.dtype).encode())
    path = decoded_cache_dir() / "partitions" / f"{spec.dataset}-{key.hexdigest()[:32]}.npz"
    try:
        with np.load(path) as stored:
            count = int(stored["count"])
            parts = [stored[f"p{i}"].astype(np.int64, copy=False) for i in range(count)]
        return parts
    except Exception:  # noqa: BLE001 (absent, partial or corrupt: compute it again)
        pass
    parts = [np.asarray(p, dtype=np.int64) for p in compute()]
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, count=np.asarray(len(parts)), **{f"p{i}": p for i, p in enumerate(parts)})
        os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
    except OSError:  # a read-only cache folder: no reuse, same result
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return parts


def _rng(spec: DataSpec, partition_id: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, partition_id])


DRAWN_LISTED = 10_000  # iid-draw: above this many clients nobody lists them all (figures, size tables)


class UniformSizes(Mapping):
    """Every client's size where all are the same (iid-draw): a million entries, none stored."""

    def __init__(self, num: int, size: float) -> None:
        self.num, self.size = num, float(size)

    def __getitem__(self, pid: int) -> float:
        if not 0 <= pid < self.num:
            raise KeyError(pid)
        return self.size

    def __iter__(self):
        return iter(range(self.num))

    def __len__(self) -> int:
        return self.num


def _drawn(spec: DataSpec, data: ArrayDataset, partition_id: int) -> np.ndarray:
    """iid-draw: this client's rows, from its own seed stream (no other client is computed)."""
    n = len(data.y_train)
    rng = np.random.default_rng([spec.seed, partition_id, 0xD7A])  # not _rng's stream: that one splits the rows
    return np.sort(rng.choice(n, size=min(spec.examples_per_client, n), replace=False)).astype(np.int64)


@functools.lru_cache(maxsize=4096)  # a population of a million: only the clients seen lately stay
def _client_data(spec: DataSpec, partition_id: int, root: str) -> ArrayClientData | GraphClientData:
    data = load_dataset(spec.dataset, root)
    if spec.partitioner == DRAWN:
        nodes = _drawn(spec, data, partition_id)
    else:
        nodes = _partitions(spec, root)[partition_id]
    if isinstance(data, GraphDataset):
        return _graph_client(data, nodes, _rng(spec, partition_id), spec=spec)
    split = _per_class_split if spec.local_test_split == "per-class" else _local_split
    train_idx, test_idx = split(data.y_train, nodes, _rng(spec, partition_id))
    return ArrayClientData(
        x_train=data.x_train[train_idx], y_train=data.y_train[train_idx],
        x_test=data.x_train[test_idx], y_test=data.y_train[test_idx],
        num_classes=data.num_classes, train_indices=train_idx, test_indices=test_idx,
    )


@functools.lru_cache(maxsize=None)
def _new_client_graph(spec: DataSpec, root: str) -> GraphClientData:
    data = load_dataset(spec.dataset, root)
    assert isinstance(data, GraphDataset)
    held_out = _partitions(spec, root)[-1]
    return _graph_client(data, held_out, _rng(spec, spec.num_partitions), spec=None)


def _local_split(
    labels: np.ndarray, indices: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """80/20 split of a partition, stratified when every class has >= 2 samples."""
    from sklearn.model_selection import train_test_split

    if len(indices) < 2:
        return np.sort(indices), indices[:0]
    y = labels[indices]
    stratify = y if np.unique(y, return_counts=True)[1].min() >= 2 else None
    state = int(rng.integers(2**31 - 1))
    try:
        tr, te = train_test_split(indices, test_size=LOCAL_TEST_FRACTION, random_state=state, stratify=stratify)
    except ValueError:  # too few samples for every class on both sides
        tr, te = train_test_split(indices, test_size=LOCAL_TEST_FRACTION, random_state=state)
    return np.sort(tr), np.sort(te)


def _per_class_split(
    labels: np.ndarray, indices: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """FedKPer's local test split (its ``create_local``): ⌊0.2·n⌋ divided equally among the
    classes the client holds (⌊·/classes⌋ each), 20 % of a class holding fewer than that;
    when that leaves nothing, 20 % at random. Close to class-balanced, not stratified."""
    indices = np.asarray(indices, dtype=np.int64)
    y = labels[indices]
    classes = np.unique(y)
    per_class = int(int(len(indices) * LOCAL_TEST_FRACTION) / max(len(classes), 1))
    test = []
    for c in classes:
        rows = indices[y == c]
        take = per_class if len(rows) >= per_class else int(LOCAL_TEST_FRACTION * len(rows))
        test.append(rng.choice(rows, size=take, replace=False))
    test_idx = np.concatenate(test) if test else indices[:0]
    if len(test_idx) == 0 and len(indices) > 0:
        test_idx = rng.choice(indices, size=int(LOCAL_TEST_FRACTION * len(indices)), replace=False)
    test_idx = np.sort(test_idx.astype(np.int64))
    return np.sort(np.setdiff1d(indices, test_idx)), test_idx


def _graph_client(
    data: GraphDataset, nodes: np.ndarray, rng: np.random.Generator, spec: DataSpec | None
) -> GraphClientData:
    """Induced subgraph on ``nodes`` (relabelled 0..n-1) with the evaluation settings.

    Construction (same for every method; ``spec=None`` = held-out graph, all nodes test):
    1. missing classes: ``missing_classes`` classes drawn uniformly among the classes with at
       least 2 nodes here (``missing_rule='not-largest'``: never the client's largest class),
       never leaving fewer than 2 seen classes; all their nodes arrive later;
    2. unseen nodes: a random ``unseen_fraction`` of the remaining nodes arrives later;
    3. the other nodes form the training graph (edges among them only), split
       ``train_fraction`` / 0.2 / the rest into train/val/test ("seen graph"; default 60/20/20).
    """
    from torch_geometric.utils import subgraph

    node_ids = torch.from_numpy(np.sort(nodes)).long()
    full_edge_index, _ = subgraph(
        node_ids, torch.from_numpy(data.edge_index), relabel_nodes=True, num_nodes=data.num_nodes
    )
    y = torch.from_numpy(data.y[node_ids.numpy()])
    n = len(node_ids)
    train, val, test, unseen, missing = (torch.zeros(n, dtype=torch.bool) for _ in range(5))
    missing_classes: tuple[int, ...] = ()
    if spec is None:
        test[:] = True
    else:
        classes, counts = np.unique(y.numpy(), return_counts=True)
        eligible = classes[counts >= 2]
        k = min(spec.missing_classes, max(len(eligible) - 2, 0))
        if spec.missing_rule == "not-largest":
            eligible = eligible[eligible != classes[np.argmax(counts)]]
        missing_classes = tuple(sorted(int(c) for c in rng.choice(eligible, size=k, replace=False)))
        missing = torch.from_numpy(np.isin(y.numpy(), missing_classes))
        rest = (~missing).nonzero().flatten()
        rest = rest[torch.from_numpy(rng.permutation(len(rest)))]
        n_unseen = int(round(spec.unseen_fraction * len(rest)))
        unseen[rest[:n_unseen]] = True
        seen = rest[n_unseen:]
        n_train, n_val = int(spec.train_fraction * len(seen)), int(GRAPH_VAL * len(seen))
        train[seen[:n_train]] = True
        val[seen[n_train : n_train + n_val]] = True
        test[seen[n_train + n_val :]] = True
    in_training = ~(unseen | missing)
    keep = in_training[full_edge_index[0]] & in_training[full_edge_index[1]]
    return GraphClientData(
        x=torch.from_numpy(data.x[node_ids.numpy()]),
        edge_index=full_edge_index[:, keep],
        y=y,
        train_mask=train, val_mask=val, test_mask=test,
        num_classes=data.num_classes, node_ids=node_ids,
        full_edge_index=full_edge_index, unseen_mask=unseen, missing_mask=missing,
        missing_classes=missing_classes,
    )
