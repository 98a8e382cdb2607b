"""``bouquet reproduce userdp``'s own report: held-out-user loss against ε for ELS and ULS at
equal compute (the paper's comparison), with the untrained model and the noiseless runs as
references; ``loss-vs-epsilon.png``."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Any

from bouquet import metrics as M

VARIANT = re.compile(r"^(uls|els)-(?:eps(\d+(?:\.\d+)?)|nonprivate)$")


def _losses(results: list[dict[str, Any]]) -> dict[tuple[str, float], list[float]]:
    """(algorithm, ε or inf for the noiseless runs) -> final held-out losses over seeds."""
    out: dict[tuple[str, float], list[float]] = {}
    for r in results:
        m = VARIANT.match(str(r.get("method", "")))
        loss = r.get(M.GLOBAL_LOSS)
        if m and loss is not None and loss == loss:
            out.setdefault((m.group(1), float(m.group(2)) if m.group(2) else math.inf), []).append(float(loss))
    return out


def _untrained(results: list[dict[str, Any]], out: Path) -> float | None:
    """Round 0's held-out loss (the initial model, the same for every run of a seed)."""
    from bouquet.simulations.reproduce import read_rows  # noqa: PLC0415

    values = []
    for r in results:
        if r.get("run") and (out / r["run"] / "metrics.csv").is_file():
            row0 = read_rows(out / r["run"] / "metrics.csv")[0].get(0, {})
            if M.GLOBAL_LOSS in row0:
                values.append(row0[M.GLOBAL_LOSS])
    return statistics.fmean(values) if values else None


def _cell(values: list[float] | None) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(results: list[dict[str, Any]], preset, out: Path) -> str:
    losses, untrained = _losses(results), _untrained(results, out)
    epsilons = sorted({e for _, e in losses if math.isfinite(e)})
    lines = ["## Held-out-user loss vs ε, ELS and ULS at equal compute", "",
             "Final-round cross-entropy on held-out users (lower is better), mean ± std over seeds; "
             "\"winner\" only where the means differ by more than the larger std.", "",
             "| ε | ULS | ELS | winner |", "|---|---|---|---|"]
    for e in [*epsilons, math.inf]:
        uls, els = losses.get(("uls", e)), losses.get(("els", e))
        winner = "–"
        if uls and els:
            gap = statistics.fmean(els) - statistics.fmean(uls)
            spread = max(statistics.stdev(v) if len(v) > 1 else 0.0 for v in (uls, els))
            winner = ("ULS" if gap > 0 else "ELS") if abs(gap) > spread else "tie"
        label = "no noise (σ = 0)" if math.isinf(e) else f"{e:g}"
        lines.append(f"| {label} | {_cell(uls)} | {_cell(els)} | {winner} |")
    if untrained is not None:
        lines += ["", f"Untrained model (round 0): held-out loss {untrained:.3f} (perplexity {math.exp(untrained):.1f})."]
    _plot(losses, untrained, out)
    lines += ["", "![loss vs epsilon](loss-vs-epsilon.png)", ""]
    return "\n".join(lines)


def _plot(losses: dict[tuple[str, float], list[float]], untrained: float | None, out: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for algorithm, colour in (("uls", "tab:blue"), ("els", "tab:orange")):
        points = sorted((e, v) for (a, e), v in losses.items() if a == algorithm and math.isfinite(e))
        if points:
            xs = [e for e, _ in points]
            means = [statistics.fmean(v) for _, v in points]
            stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in points]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, color=colour, label=algorithm.upper())
        if (algorithm, math.inf) in losses:
            ax.axhline(statistics.fmean(losses[(algorithm, math.inf)]), color=colour, ls="--", lw=1,
                       label=f"{algorithm.upper()} without noise")
    if untrained is not None:
        ax.axhline(untrained, color="grey", ls=":", lw=1, label="untrained")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("user-level ε (δ = 1/users²)")
    ax.set_ylabel("held-out-user loss (final round)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "loss-vs-epsilon.png", dpi=110)
    plt.close(fig)
