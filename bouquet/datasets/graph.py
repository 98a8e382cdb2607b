"""Graph dataset loaders: Planetoid (Cora, CiteSeer) and Amazon co-purchase (Photo, Computers)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bouquet.datasets.files import dataset_files


@dataclass(frozen=True, eq=False)
class GraphDataset:
    """One node-classification graph.

    edge_index is undirected (both directions stored), without self loops or
    duplicates, so subgraphs and Louvain see the same graph a GNN does.
    """

    name: str
    x: np.ndarray
    edge_index: np.ndarray
    y: np.ndarray
    num_classes: int

    @property
    def kind(self) -> str:
        return "graph"

    @property
    def num_nodes(self) -> int:
        return int(self.y.shape[0])


def _undirected(edge_index: torch.Tensor, num_nodes: int) -> np.ndarray:
    from torch_geometric.utils import remove_self_loops, to_undirected

    edge_index, _ = remove_self_loops(edge_index)
    return to_undirected(edge_index, num_nodes=num_nodes).numpy().astype(np.int64)


def _graph(name: str, x: torch.Tensor, edge_index: torch.Tensor, y: torch.Tensor) -> GraphDataset:
    return GraphDataset(
        name=name,
        x=x.numpy().astype(np.float32),
        edge_index=_undirected(edge_index, int(y.numel())),
        y=y.numpy().astype(np.int64),
        num_classes=int(y.max()) + 1,
    )


def load_planetoid(name: str, root: Path) -> GraphDataset:
    """Read the raw `ind.<name>.*` files with PyG's reader. They are pickles, so PyG reads a
    private copy of exactly the bytes whose sha256 was checked: a file swapped in the data folder
    between the check and the read could otherwise run code in every process that loads it."""
    import hashlib
    import tempfile

    from torch_geometric.io import read_planetoid_data

    from bouquet.datasets.files import CHECKSUMS, DataFileError

    files = dataset_files(name, root)
    with tempfile.TemporaryDirectory(prefix="bouquet-planetoid-") as private:  # 0700, this process's own
        for file, path in files.items():
            raw = path.read_bytes()
            if hashlib.sha256(raw).hexdigest() != CHECKSUMS[name][file]:
                raise DataFileError(f"data file {path} changed while it was read (expected sha256 {CHECKSUMS[name][file]})")
            (Path(private) / file).write_bytes(raw)
        data = read_planetoid_data(private, name)
    return _graph(name, data.x, data.edge_index, data.y)


def load_amazon(name: str, root: Path) -> GraphDataset:
    """Parse the npz inside the zip in memory, as PyG's `read_npz` would after unzipping."""
    from torch_geometric.io.npz import parse_npz

    files = dataset_files(name, root)
    with zipfile.ZipFile(files[f"{name}.zip"]) as zf:
        member = next(n for n in zf.namelist() if n.endswith(".npz"))
        raw = zf.read(member)
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        data = parse_npz(npz)
    return _graph(name, data.x, data.edge_index, data.y)
