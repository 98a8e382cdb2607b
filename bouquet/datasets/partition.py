"""Split a dataset's samples (or a graph's nodes) across federated clients.

Label-based schemes delegate to flwr-datasets so results match the Flower ecosystem;
`natural` uses the dataset's own groups; `louvain` cuts a graph into communities.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from bouquet.datasets.loaders import DATASETS, GRAPH_DATASETS, GROUPED_DATASETS, OFFICIAL_TEST_DATASETS

PARTITIONERS: tuple[str, ...] = ("iid", "dirichlet", "pathological", "natural", "louvain", "iid-draw")
# iid-draw: client i draws ``examples-per-client`` rows of the pool at random, seeded by (seed, i), computed
# only when client i is asked for: a population of any size (a million phones) that is never materialised.
# Clients may share rows (a draw, not a partition); the server scores on the official test split.
DRAWN = "iid-draw"
_LABEL_PARTITIONERS = ("iid", "dirichlet", "pathological")
# flwr-datasets retries Dirichlet sampling until every partition has this many rows;
# 2 is the least that still allows a local train/test split.
MIN_DIRICHLET_PARTITION = 2
DIRICHLET_ATTEMPTS = 1000  # × flwr-datasets' own 10 draws each


def valid_partitioners(dataset_name: str) -> tuple[str, ...]:
    """Partitioners that make sense for ``dataset_name``."""
    if dataset_name not in DATASETS:
        raise ValueError(
            f"dataset={dataset_name!r} is unknown; choose one of {', '.join(DATASETS)}"
        )
    extra: tuple[str, ...] = ()
    if dataset_name in GRAPH_DATASETS:
        extra = ("louvain",)
    elif dataset_name in GROUPED_DATASETS:
        extra = ("natural",)
    elif dataset_name in OFFICIAL_TEST_DATASETS:
        extra = (DRAWN,)
    return _LABEL_PARTITIONERS + extra


def check_partitioner(dataset_name: str, partitioner: str) -> None:
    """Raise a ValueError naming the `partitioner` key and the choices for this dataset."""
    valid = valid_partitioners(dataset_name)
    if partitioner not in valid:
        raise ValueError(
            f"partitioner={partitioner!r} is not valid for dataset={dataset_name!r}; "
            f"choose one of {', '.join(valid)}"
        )


def partition_labels(
    labels: np.ndarray,
    partitioner: str,
    num_partitions: int,
    *,
    alpha: float,
    classes_per_client: int,
    seed: int,
    groups: np.ndarray | None = None,
    min_size: int = MIN_DIRICHLET_PARTITION,
    self_balancing: bool = False,
) -> list[np.ndarray]:
    """Disjoint, sorted int64 index arrays, one per partition (``self_balancing``: dirichlet
    stops giving a partition samples once it holds N/n, flwr-datasets' rule and FedKPer's).

    iid and dirichlet assign every index. pathological (flwr's
    ``class_assignment_mode="first-deterministic"``) leaves a class unassigned when no
    partition drew it, as flwr-datasets does. natural returns partition i = all rows of
    group i, so with fewer partitions than groups the remaining groups are unused.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if num_partitions < 1:
        raise ValueError(f"num-supernodes must be >= 1, got {num_partitions}")
    if partitioner == "natural":
        return _natural(groups, num_partitions)
    if partitioner not in _LABEL_PARTITIONERS:
        raise ValueError(
            f"partitioner={partitioner!r} cannot split labels; choose one of "
            f"{', '.join(_LABEL_PARTITIONERS + ('natural',))} (louvain: use louvain_subgraphs)"
        )
    if num_partitions > len(labels):
        raise ValueError(
            f"num-supernodes={num_partitions} exceeds the {len(labels)} samples to split"
        )
    return _flwr_partition(labels, partitioner, num_partitions, alpha, classes_per_client, seed, min_size,
                           self_balancing)


def _natural(groups: np.ndarray | None, num_partitions: int) -> list[np.ndarray]:
    if groups is None:
        raise ValueError(
            "partitioner='natural' needs a dataset with natural groups "
            f"({', '.join(GROUPED_DATASETS)})"
        )
    groups = np.asarray(groups, dtype=np.int64)
    num_groups = int(groups.max()) + 1
    if num_partitions > num_groups:
        raise ValueError(
            f"num-supernodes={num_partitions} is out of range for partitioner='natural': "
            f"this dataset has {num_groups} groups, so use 1..{num_groups}"
        )
    return [np.flatnonzero(groups == g).astype(np.int64) for g in range(num_partitions)]


def _flwr_partition(
    labels: np.ndarray,
    partitioner: str,
    num_partitions: int,
    alpha: float,
    classes_per_client: int,
    seed: int,
    min_size: int = MIN_DIRICHLET_PARTITION,
    self_balancing: bool = False,
) -> list[np.ndarray]:
    """Run a flwr-datasets partitioner on a tiny (label, idx) table and read back idx.

    Rows are shuffled with ``seed`` first, as `FederatedDataset` does, because
    IidPartitioner takes contiguous shards.
    """
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    if partitioner == "dirichlet" and not alpha > 0:
        raise ValueError(f"dirichlet-alpha must be > 0, got {alpha}")
    perm = np.random.default_rng(seed).permutation(len(labels))
    table = datasets.Dataset.from_dict({"label": labels[perm], "idx": perm})

    def make(attempt_seed: int):
        if partitioner == "iid":
            return IidPartitioner(num_partitions=num_partitions)
        if partitioner == "dirichlet":
            return DirichletPartitioner(
                num_partitions=num_partitions,
                partition_by="label",
                alpha=float(alpha),
                min_partition_size=max(min_size, MIN_DIRICHLET_PARTITION),
                self_balancing=self_balancing,
                seed=attempt_seed,
            )
        return PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_classes_per_partition=classes_per_client,
            class_assignment_mode="first-deterministic",
            seed=attempt_seed,
        )

    # flwr-datasets gives up on a Dirichlet draw after 10 tries; like the original FedNTD /
    # FedKPer partitioner (which loops until every client has its minimum) we go on with
    # seeds derived from ``seed``, so the result stays a function of the seed.
    attempts = DIRICHLET_ATTEMPTS if partitioner == "dirichlet" else 1
    for attempt in range(attempts):
        part = make(seed if attempt == 0 else int(np.random.default_rng([seed, attempt]).integers(2**31 - 1)))
        part.dataset = table
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # flwr warns on every Dirichlet retry
                out = [np.asarray(part.load_partition(i)["idx"], dtype=np.int64) for i in range(num_partitions)]
            break
        except ValueError as exc:
            error = exc
    else:
        if partitioner == "dirichlet":
            raise ValueError(
                f"dirichlet-alpha={alpha} with num-supernodes={num_partitions} on "
                f"{len(labels)} samples left a partition with fewer than "
                f"{max(min_size, MIN_DIRICHLET_PARTITION)} samples after {10 * attempts} Dirichlet draws; raise "
                f"dirichlet-alpha, lower min-partition-size or lower num-supernodes ({error})"
            ) from error
        raise ValueError(
            f"partitioner='pathological' failed with classes-per-client={classes_per_client}"
            f" and num-supernodes={num_partitions}: {error}"
        ) from error
    return [np.sort(idx) for idx in out]


def louvain_subgraphs(
    edge_index: np.ndarray, num_nodes: int, num_clients: int, seed: int
) -> list[np.ndarray]:
    """Split nodes into num_clients + 1 disjoint parts; the LAST part is the held-out client.

    Rule (FedSage+/FED-PUB style community split): run
    ``networkx.community.louvain_communities(G, seed=seed)`` on the undirected graph
    (isolated nodes become singleton communities); sort communities by (size desc,
    smallest node id); give each, in that order, to the currently smallest of the
    K+1 parts (ties -> lowest part index). Greedy only: a community is never broken,
    so one huge community makes its part big. Fewer than K+1 communities is an error.
    Deterministic for a given graph and seed.
    """
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(range(num_nodes))
    graph.add_edges_from(np.asarray(edge_index).T.tolist())
    communities = nx.community.louvain_communities(graph, seed=seed)
    num_parts = num_clients + 1
    if len(communities) < num_parts:
        raise ValueError(
            f"num-supernodes={num_clients} needs {num_parts} Louvain communities "
            f"(clients + held-out) but the graph has only {len(communities)}"
        )
    ordered = sorted((sorted(c) for c in communities), key=lambda c: (-len(c), c[0]))
    parts: list[list[int]] = [[] for _ in range(num_parts)]
    sizes = np.zeros(num_parts, dtype=np.int64)
    for community in ordered:
        target = int(np.argmin(sizes))  # argmin returns the first minimum
        parts[target].extend(community)
        sizes[target] += len(community)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def edge_cut(edge_index: np.ndarray, parts: list[np.ndarray]) -> int:
    """Number of edge_index columns whose endpoints lie in different parts.

    Edges touching a node in no part are not counted; an undirected edge stored in
    both directions counts twice.
    """
    edge_index = np.asarray(edge_index)
    owner = np.full(int(edge_index.max(initial=-1)) + 1, -1, dtype=np.int64)
    for i, nodes in enumerate(parts):
        owner[nodes[nodes < owner.size]] = i
    src, dst = owner[edge_index[0]], owner[edge_index[1]]
    return int(np.sum((src != dst) & (src >= 0) & (dst >= 0)))
