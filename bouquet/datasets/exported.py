"""One client's partition on disk, so a site's SuperNode can run next to its own data only.

``export_partitions`` writes ``<out>/partition_<i>/`` holding exactly ``client_data(spec, i)``
(``client.npz``), for Louvain graphs the held-out graph every client is also scored on
(``new_client.npz``), and ``manifest.json``: the DataSpec it was cut with, the model-building
info (so the site never needs the full dataset) and the sha256 of each data file.
``load_partition`` verifies checksums and that the manifest matches the run before use, since
a partition cut with other settings would silently train on a different experiment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bouquet.datasets.arrays import ArrayDataset
from bouquet.datasets.client_data import (
    ArrayClientData,
    DataSpec,
    GraphClientData,
    check_spec,
    client_data,
    new_client_graph,
)
from bouquet.datasets.files import DataFileError, data_root
from bouquet.datasets.graph import GraphDataset
from bouquet.datasets.loaders import load_dataset

FORMAT = "bouquet-partition"
VERSION = 1
MANIFEST = "manifest.json"
CLIENT_FILE = "client.npz"
NEW_CLIENT_FILE = "new_client.npz"
# DataSpec field -> the run-config (or node-config) key a user would change to fix a mismatch.
# data_dir is not compared: it only says where the exporter read the raw files from.
SPEC_KEYS = {
    "dataset": "dataset",
    "partitioner": "partitioner",
    "num_partitions": "num-partitions",
    "alpha": "dirichlet-alpha",
    "classes_per_client": "classes-per-client",
    "seed": "seed",
    "unseen_fraction": "graph-unseen-fraction",
    "missing_classes": "graph-missing-classes",
    "missing_rule": "graph-missing-rule",
    "train_fraction": "graph-train-fraction",
    "min_partition_size": "min-partition-size",
    "examples_per_client": "examples-per-client",
    "self_balancing": "dirichlet-self-balancing",
    "local_test_split": "local-test-split",
}


@dataclass(frozen=True)
class ModelInfo:
    """What ``build_model`` reads from a dataset; small enough to ship in a manifest."""

    name: str
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    vocab_size: int = 0

    @classmethod
    def of(cls, data: ArrayDataset | GraphDataset) -> ModelInfo:
        if isinstance(data, GraphDataset):
            return cls(data.name, "graph", (int(data.x.shape[1]),), data.num_classes)
        return cls(data.name, data.kind, tuple(int(s) for s in data.input_shape), data.num_classes,
                   data.vocab_size)

    def stub(self) -> ArrayDataset | GraphDataset:
        """A zero-row dataset with this shape, so ``build_model`` works unchanged."""
        if self.kind == "graph":
            (features,) = self.input_shape
            return GraphDataset(self.name, np.zeros((0, features), np.float32),
                                np.zeros((2, 0), np.int64), np.zeros(0, np.int64), self.num_classes)
        return ArrayDataset(self.name, self.kind, np.zeros((0, *self.input_shape), np.float32),
                            np.zeros(0, np.int64), None, None, self.num_classes, vocab_size=self.vocab_size)


@dataclass(frozen=True, eq=False)
class ExportedPartition:
    data: ArrayClientData | GraphClientData
    new_client: GraphClientData | None
    info: ModelInfo


# --- writing ------------------------------------------------------------------------------


def export_partitions(spec: DataSpec, out: str | Path, *, force: bool = False) -> list[Path]:
    """Write every partition of ``spec`` under ``out``; refuses a non-empty ``out`` unless forced."""
    check_spec(spec)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise FileExistsError(f"{out} exists and is not an empty folder; pass --force to overwrite")
    info = ModelInfo.of(load_dataset(spec.dataset, data_root(spec.data_dir)))
    new_client = new_client_graph(spec)
    folders = []
    for pid in range(spec.num_partitions):
        folder = out / f"partition_{pid}"
        write_partition(folder, spec, pid, client_data(spec, pid), new_client, info)
        folders.append(folder)
    return folders


def write_partition(
    folder: Path, spec: DataSpec, partition_id: int, data: ArrayClientData | GraphClientData,
    new_client: GraphClientData | None, info: ModelInfo,
) -> None:
    """Data files first, manifest last: a half-written folder has no manifest and fails to load."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    payload = {CLIENT_FILE: data} | ({NEW_CLIENT_FILE: new_client} if new_client is not None else {})
    files = {}
    for name, part in payload.items():
        buf = io.BytesIO()
        np.savez_compressed(buf, **_encode(part))
        (folder / name).write_bytes(buf.getvalue())
        files[name] = hashlib.sha256(buf.getvalue()).hexdigest()
    for stale in {CLIENT_FILE, NEW_CLIENT_FILE} - set(files):
        (folder / stale).unlink(missing_ok=True)
    manifest = {
        "format": FORMAT, "version": VERSION,
        "dataset": spec.dataset, "partitioner": spec.partitioner,
        "partition_id": partition_id, "num_partitions": spec.num_partitions,
        "spec": dataclasses.asdict(spec),
        "model": dataclasses.asdict(info),
        "sizes": sizes(data) | ({"new_client_nodes": new_client.num_nodes} if new_client is not None else {}),
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def sizes(data: ArrayClientData | GraphClientData) -> dict[str, int]:
    if isinstance(data, ArrayClientData):
        return {"train": len(data.y_train), "test": len(data.y_test)}
    masks = ("train", "val", "test", "unseen", "missing")
    return {"nodes": data.num_nodes, "edges": int(data.edge_index.shape[1]),
            **{m: int(getattr(data, f"{m}_mask").sum()) for m in masks}}


def _encode(data: ArrayClientData | GraphClientData) -> dict[str, np.ndarray]:
    out = {}
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        if isinstance(value, torch.Tensor):
            out[f.name] = value.numpy()
        elif isinstance(value, np.ndarray):
            out[f.name] = value
        else:  # num_classes, missing_classes
            out[f.name] = np.asarray(value, dtype=np.int64)
    return out


# --- reading ------------------------------------------------------------------------------


def load_partition(folder: str | Path, spec: DataSpec, partition_id: int) -> ExportedPartition:
    """This node's partition from ``folder``, after checking the manifest and every checksum."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    check_manifest(manifest, spec, partition_id, folder)
    graph = manifest["model"]["kind"] == "graph"
    files = manifest["files"]
    if CLIENT_FILE not in files or (spec.partitioner == "louvain") != (NEW_CLIENT_FILE in files):
        raise DataFileError(f"manifest {folder / MANIFEST} lists the wrong data files: {sorted(files)}")
    data = _read(folder / CLIENT_FILE, files[CLIENT_FILE], graph)
    new_client = _read(folder / NEW_CLIENT_FILE, files[NEW_CLIENT_FILE], graph) if NEW_CLIENT_FILE in files else None
    model = manifest["model"]
    info = ModelInfo(model["name"], model["kind"], tuple(model["input_shape"]), model["num_classes"],
                     model["vocab_size"])
    return ExportedPartition(data, new_client, info)  # type: ignore[arg-type]


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise DataFileError(
            f"missing {path}: `data-path` must be a folder written by `bouquet export-partitions`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataFileError(f"{path} is not a {FORMAT} v{VERSION} manifest")
    return manifest


def check_manifest(manifest: dict, spec: DataSpec, partition_id: int, folder: Path) -> None:
    """Raise naming the first run/node-config key whose value differs from the export's."""
    defaults = {f.name: f.default for f in dataclasses.fields(DataSpec)}  # fields newer than the manifest
    exported = defaults | manifest["spec"] | {"partition_id": manifest["partition_id"]}
    wanted = dataclasses.asdict(spec) | {"partition_id": partition_id}
    for field, key in [*SPEC_KEYS.items(), ("partition_id", "partition-id")]:
        if exported.get(field) != wanted[field]:
            where = "node config" if field in ("partition_id", "num_partitions") else "run config"
            raise ValueError(
                f"data-path {folder} was exported with {key}={exported.get(field)!r} but the {where} "
                f"has {key}={wanted[field]!r}; re-export or fix {key}"
            )


def _read(path: Path, sha: str, graph: bool) -> ArrayClientData | GraphClientData:
    if not path.is_file():
        raise DataFileError(f"missing data file {path} (expected sha256 {sha})")
    raw = path.read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha:
        raise DataFileError(f"corrupt data file {path}: expected sha256 {sha} got {actual}")
    key = (str(path.resolve()), sha)
    if key not in _decoded:  # each message builds a new ClientCall: decode once per content
        if len(_decoded) >= 8:
            _decoded.clear()
        _decoded[key] = _decode(raw, graph)
    return _decoded[key]


_decoded: dict[tuple[str, str], ArrayClientData | GraphClientData] = {}


def _decode(raw: bytes, graph: bool) -> ArrayClientData | GraphClientData:
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        arrays = {k: np.array(npz[k]) for k in npz.files}
    num_classes = int(arrays.pop("num_classes"))
    if not graph:
        return ArrayClientData(num_classes=num_classes, **arrays)
    missing = tuple(int(c) for c in arrays.pop("missing_classes"))
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return GraphClientData(num_classes=num_classes, missing_classes=missing, **tensors)
