"""User-level (ε, δ) for the two algorithms of Chua et al. (arXiv 2407.07737), with the PLD
accountant of ``dp-accounting`` under add/remove-one-user.

- ULS: each step is a Poisson-subsampled Gaussian over users (sensitivity C, noise σC).
- ELS: each step, the added user's ≤ k examples enter the batch I ~ Binomial(k, q) times and in
  the worst case all point the same way, so one step is the mixture of Gaussians
  N(0, σ²) vs Σ_i P(I = i)·N(i, σ²) (sensitivity in units of C) -- the paper's tight accountant.

Accuracy/speed: a PLD is discretised with an interval h. Pessimistic rounding always
over-estimates ε (the safe side); the excess shrinks like h². Building the one-step PLD costs
~ (range of the privacy loss) / h, which is huge exactly where the excess is negligible (small σ,
large ε). So h is chosen per mechanism: halve it from 2e-2 until two successive ε differ by
< 3·RTOL (error of the finer one ≈ diff / 3, i.e. ≲ 0.1 %), judged at a fixed reference horizon
(the relative excess barely depends on T; measured for T = 100..3000) once per half-octave of σ,
and every T then reuses that one-step PLD. Because h does not depend on T, :func:`epsilon` and
:class:`PrivacyLedger` agree exactly and ε is monotone in T.
"""

from __future__ import annotations

import math
import numbers
from functools import lru_cache

ALGORITHMS = ("uls", "els")
RTOL = 1e-3  # target relative excess of ε from the discretisation
_COARSEST, _FINEST = 2e-2, 5e-5  # discretisation intervals tried: 2e-2, 1e-2, 5e-3, ...
_REFERENCE_STEPS = 1000  # horizon at which the interval is judged


# --- validation ---------------------------------------------------------------------------------
def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)


def check_algorithm(algorithm: object) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    return str(algorithm)


def check_noise_multiplier(value: object) -> float:
    sigma = _real("noise_multiplier", value)
    if not 0 <= sigma < math.inf:
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {value!r}")
    return sigma


def check_sampling_rate(value: object) -> float:
    q = _real("sampling_rate", value)
    if not 0 < q <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {value!r}")
    return q


def check_delta(value: object) -> float:
    delta = _real("delta", value)
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {value!r}")
    return delta


def check_steps(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"steps must be an integer >= 0, got {value!r}")
    return int(value)


def check_k(algorithm: str, value: object) -> int:
    """k matters only for ELS (ULS's sensitivity is one clipped user update whatever k is)."""
    if algorithm == "uls":
        return 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"k must be an integer >= 1 for els, got {value!r}")
    return int(value)


def _check_all(algorithm, noise_multiplier, sampling_rate, delta, k) -> tuple[str, float, float, float, int]:
    algorithm = check_algorithm(algorithm)
    return (algorithm, check_noise_multiplier(noise_multiplier), check_sampling_rate(sampling_rate),
            check_delta(delta), check_k(algorithm, k))


# --- the one-step PLD ---------------------------------------------------------------------------
def binomial_pmf(k: int, q: float) -> list[float]:
    """P(I = i), i = 0..k, for I ~ Binomial(k, q): how often the added user's ≤ k examples are drawn."""
    from scipy.stats import binom  # noqa: PLC0415 (scipy is slow to import)

    return [float(p) for p in binom.pmf(range(k + 1), k, q)]


def dp_event(algorithm: str, noise_multiplier: float, sampling_rate: float, k: int = 1):
    """One step as a ``dp_accounting`` event (for callers composing it with other events)."""
    from dp_accounting import dp_event as events  # noqa: PLC0415

    algorithm = check_algorithm(algorithm)
    sigma, q = check_noise_multiplier(noise_multiplier), check_sampling_rate(sampling_rate)
    k = check_k(algorithm, k)
    if algorithm == "uls":
        return events.PoissonSampledDpEvent(q, events.GaussianDpEvent(sigma))
    return events.MixtureOfGaussiansDpEvent(sigma, list(range(k + 1)), binomial_pmf(k, q))


@lru_cache(maxsize=8)  # a fine MoG PLD can hold millions of points
def _step_pld(algorithm: str, sigma: float, q: float, k: int, interval: float):
    """The pessimistic PLD of one step (σ > 0) -- what ``PLDAccountant`` builds for the event."""
    from dp_accounting.pld import privacy_loss_distribution as pld  # noqa: PLC0415

    try:
        if algorithm == "uls":
            return pld.from_gaussian_mechanism(sigma, sampling_prob=q, value_discretization_interval=interval)
        return pld.from_mixture_gaussian_mechanism(sigma, list(range(k + 1)), binomial_pmf(k, q),
                                                   value_discretization_interval=interval)
    except MemoryError:  # the PLD's support grows as the noise shrinks: tens of GB at σ = 0.5 with k = 8
        raise ValueError(f"dp-noise-multiplier={sigma:g}: too little noise for the {algorithm} accountant "
                         f"(k={k}, q={q:g}) to fit in memory; raise dp-noise-multiplier or set dp-epsilon "
                         "so that it is calibrated") from None


def _compose(step, steps: int, delta: float) -> float:
    return float(step.self_compose(steps).get_epsilon_for_delta(delta))


def _composed_epsilon(algorithm: str, sigma: float, q: float, k: int, interval: float, steps: int,
                      delta: float) -> float:
    return _compose(_step_pld(algorithm, sigma, q, k, interval), steps, delta)


def _interval(algorithm: str, sigma: float, q: float, k: int, delta: float) -> float:
    """The coarsest interval whose ε is within ~RTOL of the converged value (see module doc).

    Judged once per half-octave of σ, at its top (the excess grows with σ), so that nearby σ --
    a calibration's last steps -- share one judgement and one interval.
    """
    return _judged_interval(algorithm, 2.0 ** (math.ceil(2 * math.log2(sigma)) / 2), q, k, delta)


@lru_cache(maxsize=256)
def _judged_interval(algorithm: str, sigma: float, q: float, k: int, delta: float) -> float:
    h = _COARSEST
    previous = _composed_epsilon(algorithm, sigma, q, k, h, _REFERENCE_STEPS, delta)
    while h / 2 >= _FINEST:
        current = _composed_epsilon(algorithm, sigma, q, k, h / 2, _REFERENCE_STEPS, delta)
        if previous - current <= 3 * RTOL * current:
            # the finer value's excess ≈ (previous - current) / 3; keep the coarser one when the
            # coarser is already that close (its excess ≈ 4/3 of the difference)
            return h if previous - current <= 0.75 * RTOL * current else h / 2
        h, previous = h / 2, current
    return h


def _epsilon(algorithm: str, sigma: float, q: float, k: int, steps: int, delta: float) -> float:
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    return _composed_epsilon(algorithm, sigma, q, k, _interval(algorithm, sigma, q, k, delta), steps, delta)


# --- public API ---------------------------------------------------------------------------------
def epsilon(algorithm: str, noise_multiplier: float, sampling_rate: float, steps: int, delta: float,
            k: int = 1) -> float:
    """User-level ε after ``steps`` steps at ``delta`` (an upper bound, tight to ~0.1 %).

    ``k`` (examples kept per user) is used by ELS only. σ = 0 gives inf; steps = 0 gives 0.
    """
    algorithm, sigma, q, delta, k = _check_all(algorithm, noise_multiplier, sampling_rate, delta, k)
    return _epsilon(algorithm, sigma, q, k, check_steps(steps), delta)


def _initial_sigma(algorithm: str, target: float, q: float, steps: int, delta: float, k: int) -> float:
    """A rough root from the large-σ (Gaussian-DP) limit: μ ≈ √T·E[I]/σ, ε ≈ μ·√(2 ln(1/δ))."""
    mean_sensitivity = q * (k if algorithm == "els" else 1)
    return max(0.3, math.sqrt(steps) * mean_sensitivity * math.sqrt(2 * math.log(1 / delta)) / target)


Bracket = tuple[float, float, float, float]  # lo, g(lo) > 0, hi, g(hi) <= 0


def _bracket(g, sigma: float, factor: float) -> Bracket:
    """Step from ``sigma`` by ``factor`` (squared after every step, so a poor start costs few
    evaluations) until g, decreasing in σ, changes sign."""
    lo = hi = None
    value = g(sigma)
    while True:
        if value > 0:
            lo, g_lo = sigma, value
            if hi is not None:
                return lo, g_lo, hi, g_hi
            sigma *= factor
        else:
            hi, g_hi = sigma, value
            if lo is not None:
                return lo, g_lo, hi, g_hi
            sigma /= factor
        factor *= factor
        if not 1e-6 < sigma < 1e9:
            raise ValueError("target_epsilon is out of reach for noise multipliers in [1e-6, 1e9]")
        value = g(sigma)


def _narrow(g, bracket: Bracket, rtol: float) -> Bracket:
    """Shrink the bracket until hi/lo <= 1 + rtol: bisection in log σ with a secant guess
    (ε is close to a power law in σ), kept to the middle 80 % so that it always shrinks."""
    lo, g_lo, hi, g_hi = bracket
    while hi / lo > 1 + rtol:
        a, b = math.log(lo), math.log(hi)
        sigma = math.exp(a + (b - a) * min(0.9, max(0.1, g_lo / (g_lo - g_hi))))
        value = g(sigma)
        if value > 0:
            lo, g_lo = sigma, value
        else:
            hi, g_hi = sigma, value
    return lo, g_lo, hi, g_hi


# σ is returned on the grid of 3-significant-digit numbers, indexed by integers: n = 900·e + m - 100
# stands for m·10^(e-2), 100 <= m <= 999, so that neighbours on the grid are n and n + 1.
def _grid_value(n: int) -> float:
    e, r = divmod(n, 900)
    return float(f"{100 + r}e{e - 2}")


def _grid_index_up(x: float) -> int:
    """The index of the smallest grid value >= x (up to float noise; callers evaluate it)."""
    e = math.floor(math.log10(x))
    m = math.ceil(x / 10.0 ** (e - 2) - 1e-7)
    if m >= 1000:
        e, m = e + 1, 100
    return 900 * e + m - 100


def _grid_search(eps_at, target: float, sigma: float, slope: float) -> float:
    """The smallest grid σ with ``eps_at(σ) <= target`` (ε decreasing in σ), starting near
    ``sigma``: Newton steps in log σ with ``slope`` (d log ε / d log σ) to bracket, then secant
    guesses rounded to the grid, with bisection whenever a step fails to halve the bracket."""
    known: dict[int, float] = {}

    def g(n: int) -> float:  # log(ε / target) at grid point n
        if n not in known:
            value = _grid_value(n)
            if value > 1e9:
                raise ValueError("target_epsilon is out of reach for noise multipliers up to 1e9")
            known[n] = math.log(max(eps_at(value), 1e-300) / target)
        return known[n]

    def bracket() -> tuple[int, int] | None:
        enough = [m for m, v in known.items() if v <= 0]
        short = [m for m, v in known.items() if v > 0 and enough and m < min(enough)]
        return (max(short), min(enough)) if short else None

    n, push = _grid_index_up(sigma), 1
    g(n)
    while bracket() is None:
        newton = _grid_index_up(_grid_value(n) * math.exp(-g(n) / slope))
        n = max(newton, n + 1) + push if g(n) > 0 else min(newton, n - 1) - push
        push *= 2
        g(n)
    lo, hi = bracket()
    width = math.inf
    while hi - lo > 1:
        if hi - lo > width / 2:  # the last step did not halve it: bisect
            n = (lo + hi) // 2
        else:
            a, b = math.log(_grid_value(lo)), math.log(_grid_value(hi))
            n = _grid_index_up(math.exp(a + (b - a) * g(lo) / (g(lo) - g(hi))))
            n = min(max(n, lo + 1), hi - 1)
        width = hi - lo
        if g(n) > 0:
            lo = n
        else:
            hi = n
    return _grid_value(hi)


def calibrate_noise(algorithm: str, target_epsilon: float, sampling_rate: float, steps: int, delta: float,
                    k: int = 1) -> float:
    """The smallest σ on the 3-significant-digit grid with ``epsilon(σ) <= target_epsilon``.

    A coarse PLD (cheap; it over-estimates ε, so its root is high) brackets and roughly solves
    first; the final search evaluates :func:`epsilon` itself on grid points, so the guarantee
    holds exactly for the value returned. steps = 0 needs no noise: 0.0. Cached per arguments.
    """
    algorithm, _, q, delta, k = _check_all(algorithm, 0.0, sampling_rate, delta, k)
    target = _real("target_epsilon", target_epsilon)
    if not 0 < target < math.inf:
        raise ValueError(f"target_epsilon must be finite and > 0, got {target_epsilon!r}")
    steps = check_steps(steps)
    if steps == 0:
        return 0.0
    return _calibrated(algorithm, target, q, steps, delta, k)


@lru_cache(maxsize=1024)
def _calibrated(algorithm: str, target: float, q: float, steps: int, delta: float, k: int) -> float:
    def coarse(s: float) -> float:  # log(ε / target) on the coarsest PLD
        return math.log(max(_composed_epsilon(algorithm, s, q, k, _COARSEST, steps, delta), 1e-300) / target)

    # Evaluations are cheap above the root and dear below it (small σ: wide privacy loss), so
    # start high and step down gently.
    start = 2 * _initial_sigma(algorithm, target, q, steps, delta, k)
    lo, g_lo, hi, g_hi = _narrow(coarse, _bracket(coarse, start, 1.3), 1e-2)
    # The coarse root is high by the coarse excess (a few % at small σ, up to ~3x at large σ). ε
    # falls at least like 1/σ (like 1/σ² at small σ); a flatter coarse slope is discretisation.
    slope = min(-1.0, (g_lo - g_hi) / (math.log(lo) - math.log(hi)))
    return _grid_search(lambda s: _epsilon(algorithm, s, q, k, steps, delta), target, hi, slope)


class PrivacyLedger:
    """ε spent after T steps of one fixed mechanism, for a run that reports it every round.

    The one-step PLD is built once (see the module doc) and composed per T on demand; results are
    cached. ``epsilon_after(T)`` equals ``epsilon(..., T, ...)`` exactly, and is monotone in T.
    """

    def __init__(self, algorithm: str, noise_multiplier: float, sampling_rate: float, delta: float,
                 k: int = 1) -> None:
        self.algorithm, self.noise_multiplier, self.sampling_rate, self.delta, self.k = _check_all(
            algorithm, noise_multiplier, sampling_rate, delta, k)
        self._cache: dict[int, float] = {0: 0.0}
        self._step = None  # the one-step PLD, built on first use and kept (the module cache is small)

    def __repr__(self) -> str:
        return (f"PrivacyLedger({self.algorithm!r}, noise_multiplier={self.noise_multiplier:g}, "
                f"sampling_rate={self.sampling_rate:g}, delta={self.delta:g}, k={self.k})")

    def epsilon_after(self, steps: int) -> float:
        steps = check_steps(steps)
        if steps not in self._cache:
            if self.noise_multiplier == 0:
                self._cache[steps] = math.inf
            else:
                if self._step is None:
                    args = (self.algorithm, self.noise_multiplier, self.sampling_rate, self.k)
                    self._step = _step_pld(*args, _interval(*args, self.delta))
                self._cache[steps] = _compose(self._step, steps, self.delta)
        return self._cache[steps]

    def max_steps(self, budget_epsilon: float, upper: int) -> int:
        """The largest T <= ``upper`` with ε(T) <= ``budget_epsilon`` (0 if even one step exceeds it)."""
        budget = _real("budget_epsilon", budget_epsilon)
        if budget < 0:
            raise ValueError(f"budget_epsilon must be >= 0, got {budget_epsilon!r}")
        upper = check_steps(upper)
        if self.epsilon_after(upper) <= budget:
            return upper
        lo, hi = 0, upper  # ε(lo) <= budget < ε(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.epsilon_after(mid) <= budget:
                lo = mid
            else:
                hi = mid
        return lo
