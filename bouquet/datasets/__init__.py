"""Real datasets (verified offline files), federated partitioners and per-client data."""

from bouquet.datasets.arrays import ArrayDataset
from bouquet.datasets.client_data import (
    ArrayClientData,
    UniformSizes,
    DataSpec,
    GraphClientData,
    check_spec,
    client_data,
    global_test_is_users_data,
    global_test,
    new_client_graph,
)
from bouquet.datasets.exported import (
    ExportedPartition,
    ModelInfo,
    export_partitions,
    load_partition,
)
from bouquet.datasets.files import CHECKSUMS, DataFileError, data_root, dataset_files
from bouquet.datasets.graph import GraphDataset
from bouquet.datasets.loaders import (
    DATASETS,
    GRAPH_DATASETS,
    GROUPED_DATASETS,
    NUM_CLASSES,
    load_dataset,
)
from bouquet.datasets.partition import (
    DRAWN,
    PARTITIONERS,
    edge_cut,
    louvain_subgraphs,
    partition_labels,
    valid_partitioners,
)

__all__ = [
    "DRAWN",
    "UniformSizes",
    "ArrayClientData",
    "ArrayDataset",
    "CHECKSUMS",
    "DATASETS",
    "DataFileError",
    "DataSpec",
    "ExportedPartition",
    "GRAPH_DATASETS",
    "global_test_is_users_data",
    "GROUPED_DATASETS",
    "GraphClientData",
    "GraphDataset",
    "ModelInfo",
    "NUM_CLASSES",
    "PARTITIONERS",
    "check_spec",
    "client_data",
    "data_root",
    "dataset_files",
    "edge_cut",
    "export_partitions",
    "global_test",
    "load_dataset",
    "load_partition",
    "louvain_subgraphs",
    "new_client_graph",
    "partition_labels",
    "valid_partitioners",
]
