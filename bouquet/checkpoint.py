"""Per-round checkpoints in a run's folder, and resuming from them (``resume-from``).

After every completed round the ServerApp writes ``checkpoint/``: the global arrays, the
strategy's own carried state (e.g. FedLoG's global synthetic nodes), the server evaluator's
previous predictions (global flip rates continue across the resume) and ``round.json``
(round, rejected updates, the run config). Files are written to a temporary name and renamed,
so a kill mid-write leaves the previous round's checkpoint intact. ``metrics.csv`` is already
appended every round; a resume truncates it to the checkpointed round and appends.

Client state is not in it: each client snapshots its own on its node's disk
(``bouquet.client_state``), and a resumed run restores the snapshot of the checkpointed round.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FOLDER = "checkpoint"
# keys that may differ between the interrupted run and its resumption
RESUMABLE_DIFFERENCES = frozenset({"resume-from", "round-timeout", "min-replies", "output-dir", "data-dir",
                                   "num-server-rounds"})  # a finished run may also be extended


@dataclass(frozen=True)
class Checkpoint:
    round: int
    arrays: dict[str, np.ndarray]
    strategy: dict[str, np.ndarray]
    evaluator: dict[str, np.ndarray]
    rejections: list[dict[str, Any]]
    run_config: dict[str, Any]


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def save(run_dir: Path, ckpt: Checkpoint) -> None:
    folder = Path(run_dir) / FOLDER
    folder.mkdir(exist_ok=True)
    _save_npz(folder / "arrays.npz", ckpt.arrays)
    _save_npz(folder / "strategy.npz", ckpt.strategy)
    _save_npz(folder / "evaluator.npz", ckpt.evaluator)
    meta = {"round": ckpt.round, "rejections": ckpt.rejections, "run_config": ckpt.run_config}
    tmp = folder / "round.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, folder / "round.json")  # last: it names the round the arrays belong to


def load(run_dir: Path) -> Checkpoint:
    folder = Path(run_dir) / FOLDER
    meta_path = folder / "round.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"resume-from={str(run_dir)!r} has no {FOLDER}/round.json: no round completed there")
    meta = json.loads(meta_path.read_text())

    def npz(name: str) -> dict[str, np.ndarray]:
        with np.load(folder / name, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    return Checkpoint(int(meta["round"]), npz("arrays.npz"), npz("strategy.npz"), npz("evaluator.npz"),
                      list(meta["rejections"]), dict(meta["run_config"]))


def config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Run-config keys whose values differ, ignoring those a resume may change. A key the
    checkpoint does not name (written before the key existed) counts as its default."""
    from bouquet.config import RunConfig  # noqa: PLC0415

    defaults = RunConfig().to_run_config()
    keys = (set(saved) | set(now)) - RESUMABLE_DIFFERENCES
    return sorted(k for k in keys if saved.get(k, defaults.get(k)) != now.get(k, defaults.get(k)))
