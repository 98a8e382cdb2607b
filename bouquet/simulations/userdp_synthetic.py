"""Chua et al.'s synthetic mean-estimation study (arXiv 2407.07737): DP-SGD-ELS vs DP-SGD-ULS
under user-level DP at equal compute, on CPU in a couple of minutes.

Population: N users with heavy-tailed (log-normal) example counts, d-dimensional examples
x = μ_u + ξ (ξ ~ N(0, I)), user means μ_u = μ + diversity·z_u (z_u ~ N(0, I)). The counts
are drawn once (``count_seed``) so that σ depends only on (algorithm, k, ε); each seed redraws
the user means, the examples, which examples each user keeps, the sampling and the noise.

Target: the mean of user means, (1/N) Σ_u x̄_u with x̄_u the mean of all of user u's examples --
every user weighs the same, as the privacy unit does. ULS with k >= every count, no clipping and
no noise converges to it; ELS converges to the example-weighted mean of the kept examples, so at
large k it leans towards heavy users (that bias is part of what the study measures).

Training: T steps of DP-SGD on ½‖θ − x‖² (gradient θ − x) from θ = 0 with a fixed learning
rate, at the same expected number B of example-gradients per step for both algorithms:

- ULS: users Poisson-sampled with q = B / kept(k); a user's update is the mean of its ≤ k
  example gradients (one step), clipped to C; sum + N(0, σ²C²), divided by qN.
- ELS: kept examples Poisson-sampled with q = B / kept(k); per-example gradients clipped to C;
  sum + N(0, σ²C²), divided by q·kept(k) (= B).

σ comes from :func:`bouquet.privacy.calibrate_noise` per (algorithm, k, ε), δ = 1/N².
Error = ‖θ_T − target‖².

    python -m bouquet.simulations.userdp_synthetic --out results/userdp-synthetic [--quick] [--seeds N]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from bouquet.privacy.accounting import calibrate_noise
from bouquet.privacy.contribution import bounded_indices, default_candidates, els_default_k, uls_default_k

ALGORITHMS = ("els", "uls")


@dataclass(frozen=True)
class StudyConfig:
    users: int = 1000
    dim: int = 16
    count_median: float = 8.0  # log-normal example counts: exp(N(log median, spread²)), at least 1
    count_spread: float = 1.2
    count_seed: int = 0
    diversities: tuple[tuple[str, float], ...] = (("low", 0.1), ("high", 1.0))
    epsilons: tuple[float, ...] = (1.0, 4.0, 16.0)
    examples_per_step: float = 100.0  # B, the compute per step, equal for ELS and ULS
    steps: int = 300
    learning_rate: float = 0.2
    clip: float = 1.0
    mean_norm: float = 4.0  # ‖μ‖ (μ along the all-ones direction), the distance θ has to travel
    seeds: int = 20
    ks: tuple[int, ...] = ()  # () = powers of two up to the largest count, plus the median

    def __post_init__(self) -> None:
        for name in ("users", "dim", "steps", "seeds"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("count_median", "count_spread", "examples_per_step", "learning_rate", "clip", "mean_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.epsilons or not all(0 < e < math.inf for e in self.epsilons):
            raise ValueError(f"epsilons must be finite and > 0, got {self.epsilons!r}")
        if not self.diversities or any(d < 0 for _, d in self.diversities):
            raise ValueError(f"diversities must be (label, value >= 0) pairs, got {self.diversities!r}")
        if any(not isinstance(k, int) or k < 1 for k in self.ks):
            raise ValueError(f"ks must be integers >= 1, got {self.ks!r}")

    @property
    def delta(self) -> float:
        return 1.0 / self.users**2


QUICK = StudyConfig(users=200, steps=100, examples_per_step=40.0, epsilons=(1.0, 16.0), seeds=2, ks=(1, 4, 16))


# --- the population -----------------------------------------------------------------------------
def example_counts(users: int, median: float, spread: float, seed: int) -> np.ndarray:
    """Heavy-tailed counts: log-normal around ``median``, rounded, at least one example each."""
    rng = np.random.default_rng(seed)
    return np.maximum(1, np.round(rng.lognormal(math.log(median), spread, users))).astype(np.int64)


@dataclass(frozen=True)
class Population:
    counts: np.ndarray  # (N,)
    offsets: np.ndarray  # (N + 1,): user u's examples are examples[offsets[u]:offsets[u + 1]]
    examples: np.ndarray  # (Σ n_u, d)

    @property
    def target(self) -> np.ndarray:
        """The mean of user means (each user's mean over all its examples)."""
        return self.user_means(self.examples, self.offsets).mean(axis=0)

    @staticmethod
    def user_means(examples: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return np.add.reduceat(examples, offsets[:-1], axis=0) / np.diff(offsets)[:, None]


def make_population(counts: np.ndarray, dim: int, diversity: float, mean_norm: float, seed: int) -> Population:
    rng = np.random.default_rng(seed)
    mu = np.full(dim, mean_norm / math.sqrt(dim))
    user_means = mu + diversity * rng.standard_normal((len(counts), dim))
    owner = np.repeat(np.arange(len(counts)), counts)
    examples = user_means[owner] + rng.standard_normal((int(counts.sum()), dim))
    return Population(counts, np.concatenate([[0], np.cumsum(counts)]), examples)


@dataclass(frozen=True)
class Kept:
    """The data left after the contribution bound k."""
    examples: np.ndarray  # (kept, d), grouped by user
    user_means: np.ndarray  # (N, d): the mean of each user's kept examples


def keep(pop: Population, k: int, seed: int) -> Kept:
    """Each user keeps a seeded random min(n_u, k) of its examples (k = 0: all)."""
    chosen = [pop.offsets[u] + bounded_indices(int(n), k, seed * len(pop.counts) + u) for u, n in enumerate(pop.counts)]
    rows = np.concatenate(chosen)
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chosen])])
    return Kept(pop.examples[rows], Population.user_means(pop.examples[rows], offsets))


# --- DP-SGD -------------------------------------------------------------------------------------
def clip_rows(g: np.ndarray, clip: float) -> np.ndarray:
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    return g * np.minimum(1.0, clip / np.maximum(norms, 1e-12))


def train(units: np.ndarray, sampling_rate: float, noise_multiplier: float, steps: int, learning_rate: float,
          clip: float, rng: np.random.Generator) -> np.ndarray:
    """θ_T of DP-SGD on ½‖θ − x‖² where a "unit" (a kept example for ELS, a user's kept mean for
    ULS -- the gradient at the mean is the mean of the gradients) is Poisson-sampled at
    ``sampling_rate``; the noisy sum is divided by the expected number of units sampled."""
    theta = np.zeros(units.shape[1])
    denominator = sampling_rate * len(units)
    for _ in range(steps):
        batch = units[rng.random(len(units)) < sampling_rate]
        total = clip_rows(theta - batch, clip).sum(axis=0)
        total += rng.normal(0.0, noise_multiplier * clip, size=theta.shape)
        theta = theta - learning_rate * total / denominator
    return theta


def units_for(algorithm: str, kept: Kept) -> np.ndarray:
    return kept.user_means if algorithm == "uls" else kept.examples


def sampling_rate(counts: np.ndarray, k: int, examples_per_step: float) -> float:
    """q that spends B example-gradients a step in expectation, for both algorithms: q·kept(k) = B."""
    return min(1.0, examples_per_step / float(np.minimum(counts, k).sum()))


# --- the study ----------------------------------------------------------------------------------
def _els_sigma(job: tuple) -> tuple[tuple, float]:
    k, eps, q, steps, delta = job
    return ("els", k, eps), calibrate_noise("els", eps, q, steps, delta, k)


def _uls_column(job: tuple) -> tuple[float, dict, dict]:
    """ULS's σ for every k at one ε, and both noise predictions' picks (they share the σ)."""
    cfg, counts, ks, eps = job
    sigmas = {k: calibrate_noise("uls", eps, sampling_rate(counts, k, cfg.examples_per_step), cfg.steps, cfg.delta)
              for k in ks}
    args = (counts, cfg.examples_per_step, cfg.steps, eps, cfg.delta, ks)
    picks = {"uls": uls_default_k(*args),
             "uls_with_kept_fraction": uls_default_k(*args, divide_by_kept_fraction=True)}
    return eps, sigmas, picks


def _runs(job: tuple) -> list[dict]:
    """Every (k, algorithm, ε) run on one population (one diversity, one seed)."""
    cfg, counts, ks, sigmas, (label, diversity), seed = job
    pop = make_population(counts, cfg.dim, diversity, cfg.mean_norm, seed)
    target = pop.target
    rows = []
    for k in ks:
        kept = keep(pop, k, seed)
        q = sampling_rate(counts, k, cfg.examples_per_step)
        for algorithm in ALGORITHMS:
            for eps in (*cfg.epsilons, math.inf):  # inf: the same run without noise, the floor
                sigma = 0.0 if math.isinf(eps) else sigmas[(algorithm, k, eps)]
                rng = np.random.default_rng([seed, k, ALGORITHMS.index(algorithm), int(min(eps, 1e6) * 1000)])
                theta = train(units_for(algorithm, kept), q, sigma, cfg.steps, cfg.learning_rate, cfg.clip, rng)
                rows.append({"diversity": label, "diversity_value": diversity, "epsilon": eps, "algorithm": algorithm,
                             "k": k, "seed": seed, "noise_multiplier": sigma, "sampling_rate": q,
                             "error": float(np.sum((theta - target) ** 2))})
    return rows


def _map(fn, jobs: list, pool) -> list:
    return list(pool.map(fn, jobs) if pool is not None else map(fn, jobs))


def run_study(cfg: StudyConfig, workers: int = 1) -> tuple[list[dict], dict]:
    """Every (diversity, seed, k, algorithm, ε) run, ε = inf being the noiseless floor; returns
    the rows and what the heuristics pick. Calibration (the slow part) and runs go to ``workers``
    processes."""
    counts = example_counts(cfg.users, cfg.count_median, cfg.count_spread, cfg.count_seed)
    ks = sorted(set(cfg.ks) | {els_default_k(counts)}) if cfg.ks else default_candidates(counts)
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        els_jobs = sorted(((k, e, sampling_rate(counts, k, cfg.examples_per_step), cfg.steps, cfg.delta)
                           for e in cfg.epsilons for k in ks), key=lambda j: (-j[1], -j[0]))  # slowest first
        uls = pool.map(_uls_column, [(cfg, counts, ks, e) for e in cfg.epsilons]) if pool else None
        sigmas = dict(_map(_els_sigma, els_jobs, pool))
        picks = {"els": {e: els_default_k(counts) for e in cfg.epsilons}, "uls": {}, "uls_with_kept_fraction": {}}
        for eps, column, chosen in (uls if pool else map(_uls_column, [(cfg, counts, ks, e) for e in cfg.epsilons])):
            sigmas.update({("uls", k, eps): s for k, s in column.items()})
            for name, k in chosen.items():
                picks[name][eps] = k
        jobs = [(cfg, counts, ks, sigmas, div, seed) for div in cfg.diversities for seed in range(cfg.seeds)]
        rows = [row for part in _map(_runs, jobs, pool) for row in part]
    finally:
        if pool is not None:
            pool.shutdown()
    return rows, {"ks": ks, "picks": picks, "counts": counts, "sigmas": sigmas}


def _mean_by_k(rows: list[dict]) -> tuple[dict[int, float], dict[int, float]]:
    by_k: dict[int, list[float]] = {}
    for row in rows:
        by_k.setdefault(row["k"], []).append(row["error"])
    mean = {k: float(np.mean(v)) for k, v in sorted(by_k.items())}
    sem = {k: float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0 for k, v in sorted(by_k.items())}
    return mean, sem


def summarise(rows: list[dict], picks: dict) -> dict:
    """Per (diversity, ε, algorithm): mean error over seeds by k, the best k, the heuristic's k
    and its error; per (diversity, ε): which algorithm wins; per (diversity, algorithm): the
    noiseless floor by k."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["diversity"], row["epsilon"], row["algorithm"]), []).append(row)
    cells, floors = [], []
    for (diversity, eps, algorithm), group in sorted(groups.items()):
        mean, sem = _mean_by_k(group)
        if math.isinf(eps):
            floors.append({"diversity": diversity, "algorithm": algorithm,
                           "error_by_k": {str(k): v for k, v in mean.items()}})
            continue
        best, pick = min(mean, key=mean.get), picks[algorithm][eps]
        cells.append({"diversity": diversity, "epsilon": eps, "algorithm": algorithm,
                      "error_by_k": {str(k): v for k, v in mean.items()},
                      "sem_by_k": {str(k): v for k, v in sem.items()},
                      "best_k": best, "best_error": mean[best], "heuristic_k": pick, "heuristic_error": mean[pick],
                      "heuristic_over_best": mean[pick] / mean[best]})
    winners = []
    for diversity, eps in sorted({(c["diversity"], c["epsilon"]) for c in cells}):
        els, uls = (next(c for c in cells if (c["diversity"], c["epsilon"], c["algorithm"]) == (diversity, eps, a))
                    for a in ("els", "uls"))
        winners.append({"diversity": diversity, "epsilon": eps,
                        "winner_at_best_k": "uls" if uls["best_error"] < els["best_error"] else "els",
                        "uls_best_over_els_best": uls["best_error"] / els["best_error"],
                        "winner_at_heuristic_k": "uls" if uls["heuristic_error"] < els["heuristic_error"] else "els"})
    return {"cells": cells, "winners": winners, "noiseless": floors}


def table(summary: dict) -> str:
    """Markdown: mean error at the best k and at each heuristic's k (the k in brackets)."""
    cells = {(c["diversity"], c["epsilon"], c["algorithm"]): c for c in summary["cells"]}
    lines = ["| diversity | ε | ELS best (k) | ELS median k (k) | ULS best (k) | ULS heuristic (k) "
             "| ULS/ELS at best k |",
             "|---|---|---|---|---|---|---|"]
    for w in summary["winners"]:
        e, u = cells[(w["diversity"], w["epsilon"], "els")], cells[(w["diversity"], w["epsilon"], "uls")]
        lines.append(f"| {w['diversity']} | {w['epsilon']:g} | {e['best_error']:.4f} ({e['best_k']}) | "
                     f"{e['heuristic_error']:.4f} ({e['heuristic_k']}) | {u['best_error']:.4f} ({u['best_k']}) | "
                     f"{u['heuristic_error']:.4f} ({u['heuristic_k']}) | {w['uls_best_over_els_best']:.2f} |")
    return "\n".join(lines)


def plot(summary: dict, out: Path) -> list[Path]:
    """One figure per diversity: error vs k per ε, ELS and ULS; circles: the heuristics' k;
    dotted: the same runs without noise."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    files = []
    epsilons = sorted({c["epsilon"] for c in summary["cells"]})
    for diversity in sorted({c["diversity"] for c in summary["cells"]}):
        fig, axes = plt.subplots(1, len(epsilons), figsize=(4.2 * len(epsilons), 3.6), squeeze=False, sharey=True)
        for ax, eps in zip(axes[0], epsilons, strict=True):
            for algorithm, color in (("els", "tab:blue"), ("uls", "tab:orange")):
                c = next(c for c in summary["cells"] if (c["diversity"], c["epsilon"], c["algorithm"]) ==
                         (diversity, eps, algorithm))
                floor = next(f for f in summary["noiseless"]
                             if (f["diversity"], f["algorithm"]) == (diversity, algorithm))
                ks = [int(k) for k in c["error_by_k"]]
                ax.errorbar(ks, list(c["error_by_k"].values()), yerr=list(c["sem_by_k"].values()), marker="o", ms=3,
                            capsize=2, color=color, label=algorithm.upper())
                ax.plot([int(k) for k in floor["error_by_k"]], list(floor["error_by_k"].values()), ":", color=color,
                        label=f"{algorithm.upper()} no noise")
                ax.scatter([c["heuristic_k"]], [c["heuristic_error"]], s=140, facecolors="none", edgecolors=color,
                           linewidths=1.5)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set(xlabel="contribution bound k", title=f"ε = {eps:g}")
            ax.grid(alpha=0.3, which="both")
        axes[0][0].set_ylabel("‖θ_T − mean of user means‖²")
        axes[0][0].legend(title="circles: heuristic k", fontsize=7, title_fontsize=7)
        fig.suptitle(f"User-level DP mean estimation, {diversity} between-user diversity, equal compute")
        fig.tight_layout()
        path = out / f"error_vs_k_{diversity}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        files.append(path)
    return files


def write(out: Path, cfg: StudyConfig, rows: list[dict], extra: dict, seconds: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows, extra["picks"])
    counts = extra["counts"]
    report = {"config": asdict(cfg) | {"delta": cfg.delta}, "seconds": round(seconds, 1),
              "target": "mean of user means (each user's mean over all its examples)",
              "counts": {"users": len(counts), "examples": int(counts.sum()), "median": float(np.median(counts)),
                         "max": int(counts.max())},
              "ks": extra["ks"],
              "heuristic_picks": {name: {str(e): k for e, k in p.items()} for name, p in extra["picks"].items()},
              "noise_multipliers": {f"{a} k={k} eps={e:g}": v for (a, k, e), v in sorted(extra["sigmas"].items())},
              **summary}
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    (out / "table.md").write_text(table(summary) + "\n")
    plot(summary, out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bouquet.simulations.userdp_synthetic",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.csv, summary.json, plots")
    parser.add_argument("--quick", action="store_true", help="the small version (< 30 s)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 20; quick 2)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes for calibration and runs (default 2)")
    ns = parser.parse_args(argv)
    cfg = QUICK if ns.quick else StudyConfig()
    if ns.seeds is not None:
        if ns.seeds < 1:
            parser.error("--seeds must be >= 1")
        cfg = replace(cfg, seeds=ns.seeds)
    start = time.monotonic()
    rows, extra = run_study(cfg, workers=ns.workers)
    report = write(ns.out, cfg, rows, extra, time.monotonic() - start)
    print(table(report), f"\n{len(rows)} runs in {report['seconds']} s; outputs in {ns.out}", sep="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
