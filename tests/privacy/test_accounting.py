"""The user-level accountant against dp-accounting used directly, and against the reference
table (reference notes 3.9, computed independently with dp-accounting at δ = 1e-6)."""

from __future__ import annotations

import math

import pytest
from dp_accounting import dp_event as events
from dp_accounting.pld import pld_privacy_accountant
from scipy.stats import binom

from bouquet.privacy import PrivacyLedger, calibrate_noise, epsilon


def direct_epsilon(algorithm: str, sigma: float, q: float, steps: int, delta: float, k: int = 1) -> float:
    """The mechanism written out here, on a fine PLD (1e-4)."""
    if algorithm == "uls":
        event = events.PoissonSampledDpEvent(q, events.GaussianDpEvent(sigma))
    else:
        event = events.MixtureOfGaussiansDpEvent(sigma, list(range(k + 1)), [binom.pmf(i, k, q) for i in range(k + 1)])
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("setting", [
    ("uls", 1.2, 0.02, 300, 1e-5, 1),
    ("uls", 4.0, 0.01, 1000, 1e-6, 1),
    ("els", 3.0, 0.02, 200, 1e-5, 2),
    ("els", 5.0, 0.01, 500, 1e-6, 8),
])
def test_matches_dp_accounting(setting):
    ours, reference = epsilon(*setting), direct_epsilon(*setting)
    assert ours >= reference * (1 - 1e-6)  # pessimistic: never below the finer computation
    assert ours == pytest.approx(reference, rel=3e-3)


@pytest.mark.parametrize(("algorithm", "sigma", "k", "published"), [
    ("uls", 1.0, 1, 2.125), ("els", 2.0, 1, 0.721), ("els", 2.0, 4, 3.27), ("els", 2.0, 16, 16.6)])
def test_reference_table_epsilon(algorithm, sigma, k, published):
    assert epsilon(algorithm, sigma, 0.01, 1000, 1e-6, k) == pytest.approx(published, rel=0.01)


@pytest.mark.parametrize(("algorithm", "k", "published"), [("els", 8, 2.34), ("uls", 1, 0.72)])
def test_reference_table_calibration(algorithm, k, published):
    assert calibrate_noise(algorithm, 4.0, 0.01, 500, 1e-6, k) == pytest.approx(published, rel=0.01)


def test_els_with_one_example_per_user_is_uls():
    # one example per user: sampling examples is sampling users, one clipped gradient each
    assert epsilon("els", 1.5, 0.03, 400, 1e-6, 1) == pytest.approx(epsilon("uls", 1.5, 0.03, 400, 1e-6), rel=2e-3)


def test_more_examples_per_user_cost_more_privacy():
    eps = [epsilon("els", 3.0, 0.01, 300, 1e-6, k) for k in (1, 2, 4)]
    assert eps[0] < eps[1] < eps[2]


@pytest.mark.parametrize("setting", [("uls", 2.0, 0.05, 200, 1e-5, 1), ("els", 3.0, 0.02, 300, 1e-6, 4)])
def test_calibrate_is_smallest_on_the_safe_side(setting):
    algorithm, target, q, steps, delta, k = setting
    sigma = calibrate_noise(algorithm, target, q, steps, delta, k)
    assert epsilon(algorithm, sigma, q, steps, delta, k) <= target
    assert epsilon(algorithm, 0.98 * sigma, q, steps, delta, k) > target
    assert sigma == float(f"{sigma:.3g}")  # 3 significant digits


def test_edge_values():
    assert epsilon("uls", 0.0, 0.1, 10, 1e-5) == math.inf
    assert epsilon("els", 0.0, 0.1, 0, 1e-5, 3) == 0.0
    assert epsilon("uls", 1.0, 0.1, 0, 1e-5) == 0.0
    assert calibrate_noise("uls", 1.0, 0.1, 0, 1e-5) == 0.0
    assert epsilon("uls", 1.0, 0.1, 10, 1e-5, k=0) > 0  # k is not used by ULS


def test_ledger_is_monotone_and_agrees_with_epsilon():
    ledger = PrivacyLedger("els", 2.5, 0.02, 1e-6, 4)
    steps = [0, 1, 2, 3, 10, 50, 51, 200, 400]
    values = [ledger.epsilon_after(t) for t in reversed(steps)][::-1]  # asked out of order
    assert values[0] == 0.0
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[1] < values[-1]
    assert ledger.epsilon_after(200) == epsilon("els", 2.5, 0.02, 200, 1e-6, 4)


def test_ledger_max_steps():
    ledger = PrivacyLedger("uls", 1.0, 0.05, 1e-5)
    budget = 0.5 * (ledger.epsilon_after(100) + ledger.epsilon_after(101))
    t = ledger.max_steps(budget, 500)
    assert ledger.epsilon_after(t) <= budget < ledger.epsilon_after(t + 1)
    assert ledger.max_steps(1e9, 500) == 500
    assert ledger.max_steps(ledger.epsilon_after(1) / 2, 500) == 0
    assert PrivacyLedger("uls", 0.0, 0.05, 1e-5).max_steps(100.0, 50) == 0


@pytest.mark.parametrize(("call", "name"), [
    (lambda: epsilon("dp", 1.0, 0.1, 10, 1e-5), "algorithm"),
    (lambda: epsilon("uls", -1.0, 0.1, 10, 1e-5), "noise_multiplier"),
    (lambda: epsilon("uls", float("nan"), 0.1, 10, 1e-5), "noise_multiplier"),
    (lambda: epsilon("uls", 1.0, 0.0, 10, 1e-5), "sampling_rate"),
    (lambda: epsilon("uls", 1.0, 1.5, 10, 1e-5), "sampling_rate"),
    (lambda: epsilon("uls", 1.0, 0.1, -1, 1e-5), "steps"),
    (lambda: epsilon("uls", 1.0, 0.1, 2.5, 1e-5), "steps"),
    (lambda: epsilon("uls", 1.0, 0.1, 10, 0.0), "delta"),
    (lambda: epsilon("uls", 1.0, 0.1, 10, 1.0), "delta"),
    (lambda: epsilon("els", 1.0, 0.1, 10, 1e-5, 0), "k"),
    (lambda: calibrate_noise("uls", 0.0, 0.1, 10, 1e-5), "target_epsilon"),
    (lambda: calibrate_noise("uls", -2.0, 0.1, 10, 1e-5), "target_epsilon"),
    (lambda: PrivacyLedger("uls", 1.0, 2.0, 1e-5), "sampling_rate"),
    (lambda: PrivacyLedger("uls", 1.0, 0.1, 1e-5).max_steps(-1.0, 10), "budget_epsilon"),
    (lambda: PrivacyLedger("uls", 1.0, 0.1, 1e-5).epsilon_after(-3), "steps"),
])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
