"""The synthetic ELS-vs-ULS study: a tiny run end to end, exact recovery without noise, and
error that grows as ε falls."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bouquet.simulations import userdp_synthetic as study

TINY = study.StudyConfig(users=60, steps=40, examples_per_step=15.0, epsilons=(2.0,), seeds=1, ks=(1, 4),
                         diversities=(("low", 0.1),))


def test_tiny_study_runs_and_writes(tmp_path):
    rows, extra = study.run_study(TINY)
    ks = extra["ks"]
    assert set(ks) >= {1, 4} and len(rows) == len(ks) * 2 * 2  # k x algorithm x (ε, no noise)
    assert all(math.isfinite(r["error"]) and r["error"] >= 0 for r in rows)
    assert {r["noise_multiplier"] for r in rows if math.isinf(r["epsilon"])} == {0.0}
    report = study.write(tmp_path, TINY, rows, extra, 1.0)
    assert {p.name for p in tmp_path.iterdir()} >= {"results.csv", "summary.json", "table.md", "error_vs_k_low.png"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["heuristic_picks"]["els"]["2.0"] == int(np.ceil(np.median(extra["counts"])))
    assert {c["algorithm"] for c in report["cells"]} == {"els", "uls"}


@pytest.fixture(scope="module")
def population():
    counts = study.example_counts(40, 5.0, 1.0, seed=1)
    return study.make_population(counts, dim=4, diversity=2.0, mean_norm=3.0, seed=2)


def test_without_noise_or_clipping_uls_finds_the_mean_of_user_means(population):
    kept = study.keep(population, int(population.counts.max()), seed=0)
    theta = study.train(study.units_for("uls", kept), 1.0, 0.0, 80, 0.5, 1e9, np.random.default_rng(0))
    by_hand = np.mean([population.examples[a:b].mean(axis=0)
                       for a, b in zip(population.offsets[:-1], population.offsets[1:])], axis=0)
    assert np.allclose(theta, by_hand, atol=1e-10)
    assert np.allclose(population.target, by_hand)


def test_without_noise_or_clipping_els_finds_the_mean_of_kept_examples(population):
    kept = study.keep(population, 3, seed=0)
    assert len(kept.examples) == np.minimum(population.counts, 3).sum()
    theta = study.train(study.units_for("els", kept), 1.0, 0.0, 80, 0.5, 1e9, np.random.default_rng(0))
    assert np.allclose(theta, kept.examples.mean(axis=0), atol=1e-10)
    full = study.keep(population, 0, seed=0)  # k = 0 keeps everything: the example mean
    theta = study.train(study.units_for("els", full), 1.0, 0.0, 80, 0.5, 1e9, np.random.default_rng(0))
    assert np.allclose(theta, population.examples.mean(axis=0), atol=1e-10)


def test_error_grows_as_epsilon_falls():
    cfg = study.StudyConfig(users=100, steps=60, examples_per_step=20.0, epsilons=(0.5, 8.0), seeds=3, ks=(2,),
                            diversities=(("low", 0.1),))
    rows, _ = study.run_study(cfg)
    for algorithm in ("els", "uls"):
        error = {eps: np.mean([r["error"] for r in rows
                               if (r["algorithm"], r["epsilon"], r["k"]) == (algorithm, eps, 2)])
                 for eps in (0.5, 8.0, math.inf)}
        assert error[0.5] > 2 * error[8.0] > error[math.inf]


@pytest.mark.parametrize(("change", "name"), [({"users": 0}, "users"), ({"clip": 0.0}, "clip"),
                                              ({"epsilons": (1.0, math.inf)}, "epsilons"), ({"ks": (0,)}, "ks")])
def test_bad_config_is_named(change, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        study.StudyConfig(**change)
