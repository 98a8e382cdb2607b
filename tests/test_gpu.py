"""Every registered method end to end on a CUDA GPU (the real ServerApp and ClientApp logic in
one process, ``tests/inprocess.py``): it completes, its tensors really live on the GPU, and its
metrics stay near the CPU run's. Near, not equal: random draws inside a model (dropout masks,
GeFL's generators) come from the device's own RNG and CUDA's scatter sums round in any order,
so on an H200 (2026-12-04) FedLoG's and FED-PUB's 2-round metrics on Cora's tiny local splits
differed from the CPU's by up to 0.22 (two GPU runs of FedLoG agreed to 1e-8 on accuracies),
the others by at most 0.05. Skipped without a GPU, so CI
(which has none) skips it; where one is: ``python -m pytest -q tests/test_gpu.py``.
``BOUQUET_GPU_REPORT=file.json`` also writes each method's largest metric difference."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch

from bouquet import device as dev
from bouquet.registry import METHODS
from tests.inprocess import run_in_process
from tests.test_multiplex import _HETERO, _SETTINGS, _SMALL

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
TOLERANCE = 0.3  # CPU vs GPU, metrics in [0, 1] after 2 rounds (a broken device path gives NaN or chance)


def _metrics(run_dir) -> dict[tuple[str, str, str], float]:
    with (run_dir / "metrics.csv").open() as f:
        return {(r["round"], r["partition_id"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}


def _use(monkeypatch, choice: str) -> torch.device:
    monkeypatch.setenv(dev.ENV, choice)
    dev.device.cache_clear()
    return dev.device()


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_on_the_gpu_and_matches_the_cpu(tmp_path, method, monkeypatch):
    if method == "fedlpa":
        pytest.importorskip("infomap")
    data = _SMALL if "digits" in METHODS[method].datasets else _HETERO
    config = {"method": method, "num-server-rounds": 2, "seed": 3, **data, **_SETTINGS.get(method, {})}
    try:
        assert _use(monkeypatch, "cpu").type == "cpu"
        cpu_dir, _ = run_in_process(tmp_path / "cpu", 4, **config)
        assert _use(monkeypatch, "auto").type == "cuda"
        torch.cuda.reset_peak_memory_stats()
        gpu_dir, _ = run_in_process(tmp_path / "gpu", 4, **config)
        peak = torch.cuda.max_memory_allocated()
    finally:
        dev.device.cache_clear()
    assert peak > 0, "nothing was allocated on the GPU"
    cpu, gpu = _metrics(cpu_dir), _metrics(gpu_dir)
    assert json.loads((gpu_dir / "summary.json").read_text())["status"] == "completed"
    assert set(cpu) == set(gpu)
    unit = [k for k in cpu if 0.0 <= cpu[k] <= 1.0 and 0.0 <= gpu[k] <= 1.0]
    worst = max((abs(cpu[k] - gpu[k]), k) for k in unit) if unit else (0.0, None)
    if os.environ.get("BOUQUET_GPU_REPORT"):
        path = os.environ["BOUQUET_GPU_REPORT"]
        report = json.loads(open(path).read()) if os.path.exists(path) else {}
        report[method] = {"max_abs_diff": worst[0], "where": list(worst[1] or ()), "gpu_peak_mb": peak / 2**20,
                          "metrics": len(cpu)}
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
    assert worst[0] <= TOLERANCE, f"{method}: {worst}"
