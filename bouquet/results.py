"""Run results as files: ``metrics.csv`` (appended every round), ``summary.json``, a plot.

``metrics.csv`` is long format ``round, partition_id, metric, value``; rows with an empty
partition id are the server's (aggregates over clients, or scores of the global model on
server-side data). Rows are appended and flushed as they arrive, so a crash loses nothing
already computed. Wall-clock times go to ``summary.json`` only, so the same seed gives a
byte-identical ``metrics.csv``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bouquet.metrics import PARTITION_ID, is_accuracy

if TYPE_CHECKING:
    from bouquet.config import RunConfig

COLUMNS = ("round", "partition_id", "metric", "value")


def output_root(cfg: RunConfig) -> Path:
    """``output-dir``, else ``$BOUQUET_OUTPUT``, else ``~/bouquet-results`` (always absolute:
    the ServerApp's cwd is wherever the SuperLink was started)."""
    raw = cfg.output_dir or os.environ.get("BOUQUET_OUTPUT", "") or "~/bouquet-results"
    return Path(raw).expanduser().resolve()


class RunRecorder:
    def __init__(self, run_dir: Path, meta: Mapping[str, Any], *, resume_after: int | None = None) -> None:
        """A new run folder; with ``resume_after=r`` the existing one, its ``metrics.csv`` cut
        back to rounds <= r (a partly finished round r+1 is dropped) and appended to."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=resume_after is not None)
        self.meta = dict(meta)
        self.server: dict[int, dict[str, float]] = {}
        self.rejections: list[dict[str, Any]] = []
        self.round_seconds: dict[int, float] = {}
        self._t0 = time.monotonic()
        self._round_t0: dict[int, float] = {}
        path = self.run_dir / "metrics.csv"
        kept = []
        if resume_after is not None:
            with path.open() as f:
                kept = [row for row in csv.DictReader(f) if int(row["round"]) <= resume_after]
        self._file = path.open("w", newline="")
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(COLUMNS)
        for row in kept:
            self._csv.writerow([row[c] for c in COLUMNS])
            if row["partition_id"] == "":
                self.server.setdefault(int(row["round"]), {})[row["metric"]] = float(row["value"])
        self._file.flush()
        if resume_after is None:
            (self.run_dir / "config.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True))

    # --- rows -------------------------------------------------------------------------
    def _write(self, server_round: int, pid: int | None, metrics: Mapping[str, float]) -> None:
        for name in sorted(metrics):
            if name == PARTITION_ID:
                continue
            value = float(metrics[name])
            if value != value:  # NaN: not defined this round (e.g. a first participation)
                continue
            self._csv.writerow((server_round, "" if pid is None else pid, name, repr(value)))
        self._file.flush()

    def client_metrics(self, server_round: int, pid: int, metrics: Mapping[str, float]) -> None:
        self._write(server_round, pid, metrics)

    def server_metrics(self, server_round: int, metrics: Mapping[str, float]) -> None:
        self.server.setdefault(server_round, {}).update({k: float(v) for k, v in metrics.items()})
        self._write(server_round, None, metrics)

    def rejected(self, server_round: int, pid: int, reason: str) -> None:
        self.rejections.append({"round": server_round, "partition_id": pid, "reason": reason})

    def round_started(self, server_round: int) -> None:
        self._round_t0[server_round] = time.monotonic()

    def round_finished(self, server_round: int) -> float:
        start = self._round_t0.get(server_round, self._t0)
        self.round_seconds[server_round] = time.monotonic() - start
        return self.round_seconds[server_round]

    # --- end of run -------------------------------------------------------------------
    def final(self) -> dict[str, float]:
        """The last value of every server-side metric (the final round's, in practice)."""
        out: dict[str, float] = {}
        for r in sorted(self.server):
            out.update(self.server[r])
        return dict(sorted(out.items()))

    def finish(self) -> dict[str, Any]:
        self._file.close()
        summary = {
            **self.meta,
            "final": self.final(),
            "rounds_completed": max(self.server, default=0),
            "rejected_updates": self.rejections,
            "round_seconds": {str(k): round(v, 4) for k, v in sorted(self.round_seconds.items())},
            "wall_seconds": round(time.monotonic() - self._t0, 3),
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        plot_accuracy(self.server, self.run_dir / "accuracy.png", title=self._title())
        return summary

    def _title(self) -> str:
        m = self.meta
        return f"{m.get('method')} on {m.get('dataset')} ({m.get('partitioner')}, {m.get('clients')} clients, seed {m.get('seed')})"


def plot_accuracy(server: Mapping[int, Mapping[str, float]], path: Path, title: str = "") -> None:
    """One line per accuracy metric over rounds."""
    import matplotlib  # noqa: PLC0415 (only the end of a run needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    names = sorted({k for row in server.values() for k in row if is_accuracy(k)})
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in names:
        pts = [(r, row[name]) for r, row in sorted(server.items()) if name in row and math.isfinite(row[name])]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    if names:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(final: Mapping[str, float]) -> str:
    """A small markdown table of the final metrics, printed at the end of a run."""
    lines = ["| metric | final |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in final.items()]
    return "\n".join(lines)
