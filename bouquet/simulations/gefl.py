"""``bouquet reproduce gefl``'s own report: Bouquet's numbers beside the paper's (its
best-checkpoint protocol and the last round), GeFL's margin over per-architecture FedAvg, the
fixed vs released behaviour, the first block per architecture vs shared over all clients, and
GeFL vs GeFL-F by number of clients; ``gefl-clients.png``."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bouquet import metrics as M

# honggkang/gefl results.md (mean accuracy %, 10 clients) and the GeFL-F figures (fedlog-gefl.md §2.7)
PAPER = {("mnist", "hetero-fedavg"): 92.62, ("mnist", "gefl-dcgan"): 95.32, ("mnist", "gefl-cvae"): 94.46,
         ("fmnist", "hetero-fedavg"): 80.58, ("fmnist", "gefl-dcgan"): 83.11, ("fmnist", "gefl-cvae"): 82.33,
         ("mnist", "hetero-fedprox"): 92.57, ("fmnist", "hetero-fedprox"): 80.50,
         ("mnist", "lg-fedavg"): 92.71, ("fmnist", "lg-fedavg"): 80.61,
         ("mnist", "avgkd"): 92.81, ("fmnist", "avgkd"): 77.12,
         ("cifar10", "hetero-fedavg"): 55.65, ("cifar10", "gefl-dcgan"): 58.45, ("cifar10", "gefl-cvae"): 55.80}
PAPER_CLIENTS = {  # (dataset, clients) -> DCGAN, DCGAN-F, CVAE, CVAE-F
    ("mnist", 10): (95.32, 95.13, 94.46, 95.47), ("mnist", 50): (92.94, 93.67, 92.68, 95.04),
    ("mnist", 100): (91.76, 93.08, 91.72, 94.63), ("fmnist", 10): (83.11, 82.62, 82.56, 83.14),
    ("fmnist", 50): (81.28, 81.29, 80.24, 82.21), ("fmnist", 100): (80.50, 80.71, 79.83, 81.65),
    ("cifar10", 10): (58.45, 54.82, 55.80, 55.86), ("cifar10", 50): (54.73, 53.80, 54.84, 53.19),
    ("cifar10", 100): (49.35, 53.95, 50.96, 51.46)}
VARIANTS = ("gefl-dcgan", "gefl-f-dcgan", "gefl-cvae", "gefl-f-cvae")
SHARED = "-sharefe"  # gefl with gefl-share-first-block: the released code's default (avg_FE=1)


def _paper(short: str, method: str) -> float | None:
    """The paper's number for a method; a ``-sharefe`` row is GeFL as the released code runs it by default,
    so it gets GeFL's number (which setting the paper's runs used cannot be told)."""
    return PAPER.get((short, method.removesuffix(SHARED)))


def _values(results: list[dict[str, Any]], key: str) -> dict[tuple[str, str], list[float]]:
    from bouquet.simulations.reproduce import completed  # noqa: PLC0415

    out: dict[tuple[str, str], list[float]] = {}
    for r in completed(results):
        v = r.get(key)
        if v is not None and v == v:
            out.setdefault((str(r["dataset"]), str(r["method"])), []).append(100.0 * float(v))
    return out


def _cell(values: list[float] | None) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


def _mean(values: list[float] | None) -> float | None:
    return statistics.fmean(values) if values else None


def _setting(d: str) -> tuple[str, int, str]:
    """``mnist-50`` -> ("mnist", 50, ""); ``cifar10-10-noaug`` -> ("cifar10", 10, "noaug")."""
    short, k, *variant = d.split("-")
    return short, int(k), "-".join(variant)


def report(results: list[dict[str, Any]], preset, out: Path) -> str:
    best, last = _values(results, M.BEST_CHECKPOINT), _values(results, M.GLOBAL_GLOBAL)
    settings = sorted({d for d, _ in best}, key=_setting)
    lines = ["## Beside the paper (10 clients)", "",
             "Accuracy % on the global test set, mean ± std (seeds). *Paper protocol*: per architecture the best "
             "of the evaluated checkpoints, then the mean over architectures (selects on the test set); *last*: "
             "the final round's mean over architectures. Paper: honggkang/gefl results.md.", "",
             "| setting | method | paper | Bouquet, paper protocol | Bouquet, last round |", "|---|---|---|---|---|"]
    for d in settings:
        short, k, _ = _setting(d)
        if k != 10:
            continue
        for m in preset.methods:
            if (d, m) in best:
                paper = _paper(short, m)
                lines.append(f"| {d} | {m} | {'–' if paper is None else f'{paper:.2f}'} | {_cell(best.get((d, m)))} | "
                             f"{_cell(last.get((d, m)))} |")
    lines += ["", "### GeFL's margin over per-architecture FedAvg (points; paper: +1.8 to +2.7)", "",
              "| setting | generator | paper protocol | last round | paper |", "|---|---|---|---|---|"]
    for d in settings:
        short = _setting(d)[0]
        for g in ("gefl-cvae", "gefl-cvae" + SHARED, "gefl-dcgan", "gefl-dcgan" + SHARED, "gefl-f-cvae",
                  "gefl-f-dcgan"):
            base_b, base_l = _mean(best.get((d, "hetero-fedavg"))), _mean(last.get((d, "hetero-fedavg")))
            b, l_ = _mean(best.get((d, g))), _mean(last.get((d, g)))
            if None in (base_b, b):
                continue
            paper = None if _paper(short, g) is None else _paper(short, g) - PAPER[(short, "hetero-fedavg")]
            lines.append(f"| {d} | {g} | {b - base_b:+.2f} | {l_ - base_l:+.2f} | "
                         f"{'–' if paper is None else f'{paper:+.2f}'} |")
    fixed = [(d, g, g, f"{g}-released") for d in settings for g in ("gefl-cvae", "gefl-dcgan", "hetero-fedprox")]
    lines += _pairs(best, last, fixed, "Fixed vs released behaviour", ("fixed", "released"),
                    "Released: generated images in the generator's own range (MNIST+DCGAN, FMNIST+CVAE differ from "
                    "the real images'); FedProx term a sum of per-tensor norms, not squared.")
    shared = []
    for d in settings:
        ran = [(d, g, g, g + SHARED) for g in ("gefl-cvae", "gefl-dcgan") if (d, g) in best and (d, g + SHARED) in best]
        if ran:
            shared += [*ran, (d, "no generator (hetero-fedavg / lg-fedavg)", "hetero-fedavg", "lg-fedavg")]
    lines += _pairs(best, last, shared, "First block per architecture vs shared over all clients",
                    ("per architecture (Bouquet's default)", "shared (gefl-share-first-block, the code's avg_FE=1)"),
                    "In target rounds the released code averages the first block (conv + BN) over all clients by "
                    "default; the last row is the same contrast without a generator.")
    by_clients = [d for d in settings if not _setting(d)[2] and any((d, v) in best for v in VARIANTS)]
    if by_clients:
        lines += ["", "### GeFL vs GeFL-F by number of clients (paper protocol; paper's figure in brackets)", "",
                  "| setting | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
        for d in by_clients:
            short, k, _ = _setting(d)
            paper = PAPER_CLIENTS.get((short, k))
            cells = [f"{_cell(best.get((d, v)))}" + (f" [{paper[i]:.2f}]" if paper else "")
                     for i, v in enumerate(VARIANTS)]
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
        _plot_clients(best, by_clients, out)
        lines += ["", "![GeFL vs GeFL-F by clients](gefl-clients.png)"]
    return "\n".join(lines) + "\n"


def _pairs(best: dict, last: dict, pairs: list[tuple[str, str, str, str]], title: str, heads: tuple[str, str],
           note: str) -> list[str]:
    """A "{title}" table of (setting, label, method a, method b) rows where both ran: paper protocol / last round."""
    rows = [p for p in pairs if (p[0], p[2]) in best and (p[0], p[3]) in best]
    if not rows:
        return []
    lines = ["", f"### {title} (paper protocol / last round)", "", note, "",
             f"| setting | method | {heads[0]} | {heads[1]} |", "|---|---|---|---|"]
    for d, label, a, b in rows:
        lines.append(f"| {d} | {label} | {_cell(best.get((d, a)))} / {_cell(last.get((d, a)))} | "
                     f"{_cell(best.get((d, b)))} / {_cell(last.get((d, b)))} |")
    return lines


def _plot_clients(best: dict[tuple[str, str], list[float]], settings: list[str], out: Path) -> None:
    from bouquet.results import _pyplot  # noqa: PLC0415

    plt = _pyplot()
    groups = sorted({_setting(d)[0] for d in settings})
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
    for ax, g in zip(axes[0], groups):
        ds = sorted((d for d in settings if _setting(d)[0] == g), key=_setting)
        ks = [_setting(d)[1] for d in ds]
        for v in VARIANTS:
            ys = [_mean(best.get((d, v))) for d in ds]
            pts = [(k, y) for k, y in zip(ks, ys) if y is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=v, linestyle="--" if "-f-" in v else "-")
        ax.set_title(g)
        ax.set_xlabel("clients")
        ax.set_ylabel("accuracy % (paper protocol)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gefl-clients.png", dpi=110)
    plt.close(fig)
