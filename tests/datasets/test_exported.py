"""Exported partitions: a site's folder holds exactly its simulated client data, verified."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bouquet import cli
from bouquet.datasets import (
    DataFileError,
    DataSpec,
    GraphClientData,
    client_data,
    export_partitions,
    load_partition,
    new_client_graph,
)
from bouquet.datasets import exported as ex

DIGITS = DataSpec("digits", "dirichlet", 3, alpha=0.5, classes_per_client=2, seed=0)
CORA = DataSpec("cora", "louvain", 3, alpha=0.5, classes_per_client=2, seed=0)


def assert_same(a: object, b: object) -> None:
    """Field for field, with dtypes: the loaded data must be indistinguishable."""
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), f.name
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y and type(x) is type(y), f.name


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    export_partitions(DIGITS, out)
    return out


def test_digits_round_trip(digits_dir: Path) -> None:
    assert sorted(p.name for p in digits_dir.iterdir()) == [f"partition_{i}" for i in range(3)]
    for pid in range(3):
        part = load_partition(digits_dir / f"partition_{pid}", DIGITS, pid)
        assert_same(part.data, client_data(DIGITS, pid))
        assert part.new_client is None
        assert part.info == ex.ModelInfo("digits", "tabular", (64,), 10, 0)
        manifest = json.loads((digits_dir / f"partition_{pid}" / "manifest.json").read_text())
        assert manifest["spec"] == dataclasses.asdict(DIGITS)
        assert (manifest["dataset"], manifest["partitioner"], manifest["partition_id"]) == ("digits", "dirichlet", pid)
        assert list(manifest["files"]) == ["client.npz"]


def test_cora_louvain_round_trip_with_masks_and_new_client(tmp_path: Path) -> None:
    export_partitions(CORA, tmp_path)
    held_out = new_client_graph(CORA)
    for pid in range(3):
        part = load_partition(tmp_path / f"partition_{pid}", CORA, pid)
        assert isinstance(part.data, GraphClientData)
        assert_same(part.data, client_data(CORA, pid))
        assert_same(part.new_client, held_out)
        assert part.info == ex.ModelInfo("cora", "graph", (1433,), 7)


def test_corrupt_or_missing_file_names_it_and_its_sha(tmp_path: Path) -> None:
    export_partitions(DIGITS, tmp_path)
    folder = tmp_path / "partition_1"
    sha = json.loads((folder / "manifest.json").read_text())["files"]["client.npz"]
    data = bytearray((folder / "client.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "client.npz").write_bytes(bytes(data))
    with pytest.raises(DataFileError, match=rf"corrupt data file .*client\.npz: expected sha256 {sha}"):
        load_partition(folder, DIGITS, 1)
    (folder / "client.npz").unlink()
    with pytest.raises(DataFileError, match=rf"missing data file .*client\.npz \(expected sha256 {sha}\)"):
        load_partition(folder, DIGITS, 1)
    (folder / "manifest.json").unlink()
    with pytest.raises(DataFileError, match="manifest.json"):
        load_partition(folder, DIGITS, 1)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"dataset": "breast_cancer"}, "dataset"),
        ({"partitioner": "iid"}, "partitioner"),
        ({"seed": 1}, "seed"),
        ({"num_partitions": 4}, "num-partitions"),
        ({"alpha": 0.1}, "dirichlet-alpha"),
        ({"classes_per_client": 3}, "classes-per-client"),
        ({"min_partition_size": 5}, "min-partition-size"),
        ({"unseen_fraction": 0.3}, "graph-unseen-fraction"),
        ({"missing_classes": 2}, "graph-missing-classes"),
    ],
)
def test_manifest_mismatch_names_the_key(digits_dir: Path, change: dict, key: str) -> None:
    with pytest.raises(ValueError, match=rf"{key}=.* but the .* has {key}="):
        load_partition(digits_dir / "partition_0", dataclasses.replace(DIGITS, **change), 0)


def test_partition_id_mismatch_and_data_dir_ignored(digits_dir: Path) -> None:
    with pytest.raises(ValueError, match="partition-id=0 but the node config has partition-id=2"):
        load_partition(digits_dir / "partition_0", DIGITS, 2)
    # where the exporter read raw files from does not change the data
    load_partition(digits_dir / "partition_0", dataclasses.replace(DIGITS, data_dir="/elsewhere"), 0)


def test_loading_never_reads_the_full_dataset(digits_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("load_dataset called")

    # the package re-exports a *function* client_data, so fetch the modules by name
    cd, loaders = (importlib.import_module(f"bouquet.datasets.{m}") for m in ("client_data", "loaders"))

    for module in (ex, cd, loaders):
        monkeypatch.setattr(module, "load_dataset", boom)
    monkeypatch.setattr(loaders, "_load_cached", boom)
    ex._decoded.clear()
    part = load_partition(digits_dir / "partition_2", DIGITS, 2)
    assert len(part.data.y_train) > 0


def test_cli_writes_one_folder_per_partition_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sites"
    args = ["export-partitions", "--dataset", "digits", "--partitioner", "dirichlet",
            "--num-partitions", "4", "--out", str(out), "--seed", "3", "--dirichlet-alpha", "0.3"]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(f"partition_{i}" in line and "train=" in line for i, line in enumerate(lines))
    assert sorted(p.name for p in out.iterdir()) == [f"partition_{i}" for i in range(4)]
    spec = DataSpec("digits", "dirichlet", 4, alpha=0.3, classes_per_client=2, seed=3)
    assert_same(load_partition(out / "partition_3", spec, 3).data, client_data(spec, 3))

    before = (out / "partition_0" / "manifest.json").read_text()
    assert cli.main(args[:-4]) == 2  # other settings, same folder
    assert "--force" in capsys.readouterr().err
    assert (out / "partition_0" / "manifest.json").read_text() == before
    assert cli.main(args + ["--force"]) == 0


def test_cli_rejects_bad_settings_by_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export-partitions", "--dataset", "digits", "--partitioner", "dirichlet",
            "--num-partitions", "3", "--out", str(tmp_path / "x"), "--min-partition-size", "1"]
    assert cli.main(args) == 2
    assert "min-partition-size" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_deploy_local_prints_the_run_config_the_partitions_were_exported_with(tmp_path):
    from bouquet.config import RunConfig
    from bouquet.datasets.exported import check_manifest, read_manifest
    from bouquet.config import data_spec
    from bouquet.deploy.local import Deployment, exported_run_config

    spec = DataSpec("digits", "dirichlet", 4, alpha=0.3, classes_per_client=2, seed=3)
    export_partitions(spec, tmp_path)
    config = exported_run_config(tmp_path / "partition_0")
    assert config == {"dataset": "digits", "partitioner": "dirichlet", "dirichlet-alpha": 0.3, "seed": 3}
    # a run with exactly these keys passes every ClientApp's manifest check
    cfg = RunConfig.from_run_config({"method": "fedavg", **config})
    for i in range(4):
        folder = tmp_path / f"partition_{i}"
        check_manifest(read_manifest(folder), data_spec(cfg, 4), i, folder)
    command = Deployment(tmp_path, 1234, False, False).run_command(Path("/app"), tmp_path)
    assert "dataset='digits' partitioner='dirichlet' dirichlet-alpha=0.3 seed=3\"" in command
