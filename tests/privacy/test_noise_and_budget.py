"""DP randomness (seeded vs CSPRNG) and the run's privacy plan from a config."""

import math

import numpy as np
import pytest

from bouquet.config import RunConfig
from bouquet.privacy.accounting import epsilon
from bouquet.privacy.budget import plan
from bouquet.privacy.noise import Randomness


def test_seeded_noise_repeats_secure_noise_does_not_and_both_are_standard_normal():
    seeded = Randomness(7, secure=False)
    a, b = seeded.gaussian((100_000,), 2.0, 3, "w"), Randomness(7, False).gaussian((100_000,), 2.0, 3, "w")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, seeded.gaussian((100_000,), 2.0, 4, "w"))  # another round, other noise
    secure = Randomness(7, secure=True)
    s1, s2 = secure.gaussian((100_000,), 2.0, 3, "w"), secure.gaussian((100_000,), 2.0, 3, "w")
    assert not np.array_equal(s1, s2)
    for x in (a, s1):
        assert abs(x.mean()) < 0.03 and x.std() == pytest.approx(2.0, rel=0.01)
        assert abs(np.mean(np.abs(x) > 2 * 1.96) - 0.05) < 0.004  # the tails of a Gaussian, not a uniform
    u = secure.uniform(100_000)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01


def test_poisson_sample_rate():
    r = Randomness(0, secure=False)
    sizes = [len(r.poisson_sample(list(range(200)), 0.1, rnd)) for rnd in range(200)]
    assert np.mean(sizes) == pytest.approx(20, rel=0.05) and np.std(sizes) > 2  # Binomial(200, 0.1)


def test_plan_calibrates_sigma_to_the_budget_and_fixes_the_denominators():
    counts = {i: n for i, n in enumerate([10, 20, 30, 40, 50, 60, 70, 80])}
    cfg = RunConfig.from_run_config({"method": "els", "dataset": "digits", "partitioner": "iid", "dp-epsilon": 4.0,
                                     "num-server-rounds": 50, "dp-sampling-rate": 0.05})
    p = plan(cfg, counts)
    assert p.k == 45 and p.delta == pytest.approx(1 / 64)  # median of the counts; 1/users²
    assert p.denominator == pytest.approx(0.05 * sum(min(n, 45) for n in counts.values()))
    assert epsilon("els", p.noise_multiplier, 0.05, 50, p.delta, 45) <= 4.0
    uls = plan(RunConfig.from_run_config({"method": "uls", "dataset": "digits", "partitioner": "iid",
                                          "dp-noise-multiplier": 1.5, "dp-k": 16, "dp-sampling-rate": 0.25}), counts)
    assert (uls.noise_multiplier, uls.k, uls.denominator, uls.budget) == (1.5, 16, 0.25 * 8, math.inf)


def test_uls_auto_k_minimises_the_predicted_noise_at_the_configured_compute():
    from bouquet.privacy.contribution import uls_noise_prediction

    counts = {i: n for i, n in enumerate([2, 3, 5, 8, 13, 21, 34, 55, 89, 144] * 4)}
    cfg = RunConfig.from_run_config({"method": "uls", "dataset": "digits", "partitioner": "iid", "dp-epsilon": 4.0,
                                     "num-server-rounds": 30, "dp-sampling-rate": 0.02})
    p = plan(cfg, counts)
    sizes = list(counts.values())
    budget = 0.02 * len(sizes) * 17  # q·N·median examples a round
    prediction = uls_noise_prediction(sizes, budget, 30, 4.0, p.delta)
    assert p.k in prediction and prediction[p.k] == min(prediction.values())
    kept = sum(min(n, p.k) for n in sizes)
    assert p.sampling_rate == pytest.approx(min(1.0, budget / kept))  # the same compute at the chosen k
    assert epsilon("uls", p.noise_multiplier, p.sampling_rate, 30, p.delta) <= 4.0


def test_an_accountant_too_large_for_memory_is_a_config_error_before_round_one(monkeypatch):
    """σ = 0.5 with ELS's mixture of Gaussians asks dp-accounting for a ~43 GB PLD: the run
    must refuse at once, naming the key, not crash in its first aggregation."""
    from dp_accounting.pld import privacy_loss_distribution as pld

    from bouquet.privacy import accounting
    from bouquet.privacy.budget import PrivacyRun

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 43.3 GiB")

    monkeypatch.setattr(pld, "from_mixture_gaussian_mechanism", too_big)
    accounting._step_pld.cache_clear()
    accounting._judged_interval.cache_clear()
    cfg = RunConfig.from_run_config({"method": "els", "dataset": "fashion-mnist", "partitioner": "iid",
                                     "dp-noise-multiplier": 0.5, "dp-k": 8})
    with pytest.raises(ValueError, match="dp-noise-multiplier=0.5"):
        PrivacyRun(plan(cfg, {0: 100, 1: 100, 2: 100}), cfg)
    accounting._step_pld.cache_clear()
    accounting._judged_interval.cache_clear()
