"""Run results as files in one run folder.

``metrics.csv`` is long format ``round, partition_id, metric, value``; rows with an empty
partition id are the server's (aggregates over clients, or scores of the global model on
server-side data). Rows are appended and flushed as they arrive, so a crash loses nothing
already computed. Wall-clock times go to ``summary.json`` only, so the same seed gives a
byte-identical ``metrics.csv``.

Figures (server rows; one kind of quantity each, a figure without data is not written):
``accuracy.png`` (every ``<model>@<data>`` accuracy, the method's ``headline_metrics`` thick),
``forgetting.png`` (``nfr:``/``pfr:`` flip rates and ``bwt``), ``loss.png`` (``train_loss``),
``partition.png`` + ``partition.csv`` (``client, class, count``: samples, or graph nodes, per
class in each client's partition, train and local test together; ``held-out`` is Louvain's
held-out subgraph).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bouquet import metrics as M
from bouquet import provenance
from bouquet.datasets.loaders import GRAPH_DATASETS
from bouquet.metrics import PARTITION_ID, is_accuracy
from bouquet.registry import HETERO_METHODS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bouquet.config import RunConfig
    from bouquet.datasets import DataSpec

COLUMNS = ("round", "partition_id", "metric", "value")
FLIPS = (M.NFR, M.PFR)


def headline_metrics(method: str, dataset: str) -> tuple[tuple[str, str], ...]:
    """(short label, metric) pairs that matter for ``method`` on ``dataset``: the round log line
    and the thick lines of ``accuracy.png`` both use these. Graphs: FedLoG's four settings of
    each client's model after local training; else the global model on the global test (none
    for ``local``) and the local/personal model on its local test; then the train loss."""
    if dataset in GRAPH_DATASETS:
        acc = tuple((label, M.name("local_model", data)) for label, data in (
            ("seen", M.LOCAL_TEST), ("unseen", M.UNSEEN_NODE), ("missing", M.MISSING_CLASS), ("new", M.NEW_CLIENT)))
    elif method in HETERO_METHODS:  # mean over architectures: last round, and the paper's best checkpoint
        return (("mean", M.GLOBAL_GLOBAL), ("paper", M.BEST_CHECKPOINT), ("loss", M.TRAIN_LOSS))
    elif dataset == "tinyshakespeare" and method in ("uls", "els"):
        return (("loss", M.GLOBAL_LOSS), ("ppl", M.GLOBAL_PERPLEXITY), ("acc", M.GLOBAL_GLOBAL), ("eps", "dp-epsilon-spent"))
    else:
        acc = (() if method == "local" else (("global", M.GLOBAL_GLOBAL),)) + (("local", M.name("local_model", M.LOCAL_TEST)),)
    return (*acc, ("loss", M.TRAIN_LOSS))


def headline_text(values: Mapping[str, float], method: str, dataset: str) -> str:
    """``seen=0.812 unseen=0.790 ...``: the headline metrics present in ``values``."""
    shown = [(label, values[key]) for label, key in headline_metrics(method, dataset) if key in values]
    return " ".join(f"{label}={v:.3f}" for label, v in shown if math.isfinite(v))


def kind_of(key: str) -> str | None:
    """Which figure a server metric belongs to: ``accuracy``, ``forgetting``, ``loss`` or None.
    Flip rates carry ``@`` too, so they must be sorted out before ``is_accuracy``."""
    if key in (M.BWT, M.BWT_WITH_TRAINED) or key.split(":", 1)[0] in FLIPS:
        return "forgetting"
    if key in (M.TRAIN_LOSS, M.GLOBAL_LOSS):
        return "loss"
    return "accuracy" if is_accuracy(key) else None


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
        self.phase_seconds: dict[int, dict[str, float]] = {}
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
        """Non-finite values are "not defined this round", in memory as in metrics.csv."""
        self.server.setdefault(server_round, {}).update({k: float(v) for k, v in metrics.items() if math.isfinite(v)})
        self._write(server_round, None, metrics)

    def rejected(self, server_round: int, pid: int, reason: str) -> None:
        self.rejections.append({"round": server_round, "partition_id": pid, "reason": reason})

    def round_started(self, server_round: int) -> None:
        self._round_t0[server_round] = time.monotonic()
        if isinstance(self.meta.get("timeline"), dict):  # wall clock, for the bench's fixed-cost split
            self.meta["timeline"].setdefault("first_round_started", time.time())

    def round_elapsed(self, server_round: int) -> float:
        return time.monotonic() - self._round_t0.get(server_round, self._t0)

    @contextlib.contextmanager
    def phase(self, server_round: int, name: str) -> Iterator[None]:
        """Time a part of a round (send and wait for the train replies, aggregate, ...): where a
        round's seconds go, in summary.json's ``phase_seconds``."""
        t = time.monotonic()
        try:
            yield
        finally:
            parts = self.phase_seconds.setdefault(server_round, {})
            parts[name] = parts.get(name, 0.0) + time.monotonic() - t

    def round_finished(self, server_round: int) -> float:
        """A round's wall time: its training, evaluations and checkpoint (all it costs)."""
        self.round_seconds[server_round] = self.round_elapsed(server_round)
        return self.round_seconds[server_round]

    # --- end of run -------------------------------------------------------------------
    def final(self) -> dict[str, float]:
        """The last value of every server-side metric (the final round's, in practice)."""
        out: dict[str, float] = {}
        for r in sorted(self.server):
            out.update(self.server[r])
        return dict(sorted(out.items()))

    def finish(self, failure: str | None = None) -> dict[str, Any]:
        """Close metrics.csv, write summary.json (``status`` completed, or failed with the
        reason) and the figures."""
        self._file.close()
        summary = {
            **self.meta,
            "status": "completed" if failure is None else "failed",
            **({} if failure is None else {"failure": failure}),
            "final": self.final(),
            "rounds_completed": max(self.server, default=0),
            "rejected_updates": self.rejections,
            "round_seconds": {str(k): round(v, 4) for k, v in sorted(self.round_seconds.items())},
            "phase_seconds": {str(k): {n: round(v, 4) for n, v in parts.items()}
                              for k, parts in sorted(self.phase_seconds.items())},
            "wall_seconds": round(time.monotonic() - self._t0, 3),
            "code": provenance.current(),  # which commit computed these numbers
        }
        headline = [key for _, key in headline_metrics(str(self.meta.get("method")), str(self.meta.get("dataset")))]
        try:  # figures are a view of metrics.csv: one that cannot be drawn costs the figure, not the run
            plot_run(self.server, self.run_dir, title=self._title(), headline=headline)
        except Exception as exc:  # noqa: BLE001
            summary["plot_error"] = f"{type(exc).__name__}: {exc}"[:500]
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, allow_nan=False))
        return summary

    def _title(self) -> str:
        m = self.meta
        return f"{m.get('method')} on {m.get('dataset')} ({m.get('partitioner')}, {m.get('clients')} clients, seed {m.get('seed')})"


FIGURES = (("accuracy", "accuracy", (0.0, 1.0)), ("forgetting", "flip rate / backward transfer", None),
           ("loss", "train loss", None))  # (kind_of, y label, y limits); file = <kind>.png


def _pyplot():
    import matplotlib  # noqa: PLC0415 (only plots need it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _colours(n: int) -> list:
    """n distinct colours: tab10; tab20 dark shades first, then light; else a sampled map."""
    plt = _pyplot()
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in (*range(0, 20, 2), *range(1, 20, 2))][:n]
    return [plt.get_cmap("turbo")(i / (n - 1)) for i in range(n)]


def line_figure(series: Mapping[str, list[tuple[int, float]]], headline: list[str] | tuple[str, ...] = (),
                ylabel: str = "", ylim: tuple[float, float] | None = None, title: str = "") -> Figure:
    """Metric-per-line figure over rounds: ``headline`` lines first, thick and opaque, the rest
    thin and (when a headline is present) faded; the legend sits right of the axes so it never
    hides data."""
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    plt = _pyplot()
    first = [n for n in headline if n in series]
    order = first + [n for n in series if n not in first]
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for name, colour in zip(order, _colours(len(order)), strict=True):
        thick, faint = name in first, bool(first) and name not in first
        ax.plot(*zip(*series[name], strict=True), color=colour, label=name, lw=2.4 if thick else 1.2,
                alpha=0.55 if faint else 1.0, marker="o" if thick else None, markersize=3, zorder=3 if thick else 2)
    if ylim is None:
        ax.axhline(0.0, color="grey", lw=0.6)
    else:
        ax.set_ylim(*ylim)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="round", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return fig


def plot_run(server: Mapping[int, Mapping[str, float]], run_dir: Path, title: str = "",
             headline: list[str] | tuple[str, ...] = ()) -> dict[str, list[str]]:
    """One figure per kind of quantity (``FIGURES``), so flip rates never share the accuracy
    axis; a kind without finite values writes nothing. Returns {file name: line labels}."""
    written: dict[str, list[str]] = {}
    for kind, ylabel, ylim in FIGURES:
        names = sorted({k for row in server.values() for k in row if kind_of(k) == kind})
        series = {n: pts for n in names
                  if (pts := [(r, row[n]) for r, row in sorted(server.items()) if n in row and math.isfinite(row[n])])}
        if not series:
            continue
        fig = line_figure(series, headline, ylabel, ylim, title)
        fig.savefig(Path(run_dir) / f"{kind}.png", dpi=120, bbox_inches="tight")
        written[f"{kind}.png"] = [line.get_label() for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
        _pyplot().close(fig)
    return written


def partition_counts(spec: DataSpec) -> list[tuple[str, np.ndarray]]:
    """(client, samples per class) per partition, train and local test together: the seeded
    partition the clients materialise (cached; indices and labels only, no features copied).
    Louvain's held-out subgraph comes last as ``held-out``."""
    from bouquet.datasets import GraphDataset, data_root, load_dataset  # noqa: PLC0415
    from bouquet.datasets.client_data import partition_indices  # noqa: PLC0415 (the clients' own split)

    data = load_dataset(spec.dataset, data_root(spec.data_dir))
    labels = np.asarray(data.y if isinstance(data, GraphDataset) else data.y_train)
    parts = partition_indices(spec)
    names = [str(i) for i in range(spec.num_partitions)] + ["held-out"] * (len(parts) - spec.num_partitions)
    return [(n, np.bincount(labels[p], minlength=data.num_classes)) for n, p in zip(names, parts, strict=True)]


FIGURE_MAX_CLIENTS = 200  # more bars than a person can read: the CSV only


def write_partition(spec: DataSpec, run_dir: Path) -> list[tuple[str, np.ndarray]]:
    """``partition.csv`` (client, class, count) and ``partition.png``: stacked bars of samples
    per class for each client (up to FIGURE_MAX_CLIENTS), the label skew a reader needs to
    judge every other number.
    Returns the counts (``partition_counts``)."""
    counts = partition_counts(spec)
    with (Path(run_dir) / "partition.csv").open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(("client", "class", "count"))
        out.writerows((client, c, int(n)) for client, row in counts for c, n in enumerate(row))
    if len(counts) > FIGURE_MAX_CLIENTS:
        return counts
    plt = _pyplot()
    num_classes = len(counts[0][1])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(counts) + 3), 4.0))
    bottom = np.zeros(len(counts))
    for c, colour in enumerate(_colours(num_classes)):
        height = np.array([row[c] for _, row in counts], dtype=float)
        ax.bar(range(len(counts)), height, bottom=bottom, color=colour, width=0.8, label=str(c))
        bottom += height
    many = len(counts) > 20
    ax.set_xticks(range(len(counts)), [n for n, _ in counts], rotation=90 if many else 0, fontsize=7 if many else 9)
    ax.set(xlabel="client", ylabel="samples (graphs: nodes)")
    ax.set_title(f"{spec.dataset}, {spec.partitioner}, {spec.num_partitions} clients, seed {spec.seed}", fontsize=9)
    if num_classes <= 20:
        ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.savefig(Path(run_dir) / "partition.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return counts


def format_table(final: Mapping[str, float]) -> str:
    """A small markdown table of the final metrics, printed at the end of a run."""
    lines = ["| metric | final |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in final.items()]
    return "\n".join(lines)
