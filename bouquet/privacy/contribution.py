"""The contribution bound k: each user keeps at most k examples, which caps what one user can
change (ULS: one clipped update whatever k is; ELS: up to k clipped gradients a step) at the
price of the data left out. Two heuristics from Chua et al. choose k from the example counts."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np

from bouquet.privacy.accounting import calibrate_noise, check_delta, check_steps


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _counts(counts: Iterable[int]) -> np.ndarray:
    values = list(counts)
    if not values:
        raise ValueError("counts must hold at least one user's example count")
    for n in values:
        _count("counts", n, 0)
    arr = np.asarray(values, dtype=np.int64)
    if arr.sum() == 0:
        raise ValueError("counts must hold at least one example")
    return arr


def bounded_indices(n_examples: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform subset of min(n, k) of range(n); k = 0 keeps all.

    Uniform (not the first k) so that the kept examples are representative of the user's data;
    seeded so that every round of a run keeps the same ones (a user's bound holds across rounds).
    """
    n = _count("n_examples", n_examples, 0)
    k = _count("k", k, 0)
    seed = _count("seed", seed, 0)
    if k == 0 or k >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False)).astype(np.int64)


def els_default_k(counts: Iterable[int]) -> int:
    """The median number of examples per user, rounded up (at least 1): the paper's ELS rule."""
    return max(1, math.ceil(float(np.median(_counts(counts)))))


def default_candidates(counts: Iterable[int]) -> list[int]:
    """Powers of two up to the largest count, plus the median."""
    arr = _counts(counts)
    top = max(1, int(arr.max()))
    powers = [2**j for j in range(int(math.log2(top)) + 1)]
    return sorted(set(powers) | {els_default_k(arr)})


def uls_noise_prediction(counts: Iterable[int], examples_per_step: float, steps: int, epsilon: float,
                         delta: float, candidates: Iterable[int] | None = None, *,
                         divide_by_kept_fraction: bool = False) -> dict[int, float]:
    """Predicted noise of ULS's averaged update, in units of C, for each candidate k.

    At fixed compute -- B = ``examples_per_step`` expected example-gradients a step -- with N
    users holding n_u examples:

        kept(k) = Σ_u min(n_u, k)                 examples left after the bound
        q(k)    = min(1, B / kept(k))             user sampling rate that spends B a step
        σ(k)    = calibrate_noise("uls", ε, q(k), T, δ)
        noise(k) = σ(k) / (q(k)·N)                std of the noise in the update averaged over the
                                                  expected cohort (the default, the paper's "noise")

    It grows with the per-user compute k (fewer users a step, less amplification), so it favours
    small k. ``divide_by_kept_fraction=True`` divides by f(k) = kept(k)/Σ_u n_u (noise relative
    to the data kept); while q(k) < 1 the kept(k) terms then cancel, noise(k) = σ(k)·Σn/(B·N),
    and the largest candidate always wins: in the synthetic study (docs/results/userdp-synthetic)
    that pick was 2.5-6.9x worse than the best k, the default's 1.0-1.6x. The true trade-off
    (within-user averaging and clipping bias vs. noise) is data-dependent; both are counts-only.
    """
    arr = _counts(counts)
    budget = float(examples_per_step)
    if not 0 < budget < math.inf:
        raise ValueError(f"examples_per_step must be finite and > 0, got {examples_per_step!r}")
    steps = check_steps(steps)
    delta = check_delta(delta)
    chosen = default_candidates(arr) if candidates is None else sorted({_count("candidates", k, 1)
                                                                       for k in candidates})
    if not chosen:
        raise ValueError("candidates must hold at least one k")
    users, total = len(arr), float(arr.sum())
    prediction = {}
    for k in chosen:
        kept = float(np.minimum(arr, k).sum())
        q = min(1.0, budget / kept)
        sigma = calibrate_noise("uls", epsilon, q, steps, delta)
        noise = sigma / (q * users)
        prediction[k] = noise / (kept / total) if divide_by_kept_fraction else noise
    return prediction


def uls_default_k(counts: Iterable[int], examples_per_step: float, steps: int, epsilon: float, delta: float,
                  candidates: Iterable[int] | None = None, *, divide_by_kept_fraction: bool = False) -> int:
    """The candidate k of least predicted noise (:func:`uls_noise_prediction`; ties: smaller k)."""
    prediction = uls_noise_prediction(counts, examples_per_step, steps, epsilon, delta, candidates,
                                      divide_by_kept_fraction=divide_by_kept_fraction)
    return min(prediction, key=lambda k: (prediction[k], k))
