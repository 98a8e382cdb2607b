"""The contribution bound k: the subset kept per user, and the two heuristics."""

from __future__ import annotations

import numpy as np
import pytest

from bouquet.privacy import bounded_indices, calibrate_noise, els_default_k, uls_default_k, uls_noise_prediction
from bouquet.privacy.contribution import default_candidates


@pytest.mark.parametrize(("n", "k"), [(10, 3), (10, 10), (10, 25), (7, 0), (0, 4), (1, 1)])
def test_bounded_indices_invariants(n, k):
    idx = bounded_indices(n, k, seed=3)
    assert len(idx) == (n if k == 0 else min(n, k))
    assert len(set(idx.tolist())) == len(idx)
    assert np.all(np.diff(idx) > 0) and (len(idx) == 0 or (idx[0] >= 0 and idx[-1] < n))


def test_bounded_indices_seeded():
    assert np.array_equal(bounded_indices(100, 10, 7), bounded_indices(100, 10, 7))
    subsets = {tuple(bounded_indices(100, 10, seed)) for seed in range(5)}
    assert len(subsets) > 1


@pytest.mark.parametrize(("args", "name"), [((-1, 2, 0), "n_examples"), ((5, -2, 0), "k"), ((5, 2, -1), "seed"),
                                            ((5.5, 2, 0), "n_examples")])
def test_bounded_indices_bad_arguments(args, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        bounded_indices(*args)


def test_els_default_k_is_the_rounded_up_median():
    assert els_default_k([1, 2, 3, 10]) == 3  # median 2.5
    assert els_default_k([4, 9, 1]) == 4
    assert els_default_k([5]) == 5
    assert els_default_k([0, 0, 1]) == 1  # at least one
    with pytest.raises(ValueError, match="^counts"):
        els_default_k([])
    with pytest.raises(ValueError, match="^counts"):
        els_default_k([3, -1])


def test_default_candidates():
    assert default_candidates([1, 3, 5, 20, 40]) == [1, 2, 4, 5, 8, 16, 32]


COUNTS = [1, 1, 2, 3, 3, 4, 6, 9, 15, 40] * 10  # 100 users, heavy tail
ARGS = (COUNTS, 20.0, 50, 2.0, 1e-4)


def test_uls_prediction_is_the_documented_formula():
    prediction = uls_noise_prediction(*ARGS, candidates=[1, 4, 16], divide_by_kept_fraction=True)
    plain = uls_noise_prediction(*ARGS, candidates=[1, 4, 16])
    total, users = sum(COUNTS), len(COUNTS)
    for k in (1, 4, 16):
        kept = sum(min(n, k) for n in COUNTS)
        q = min(1.0, 20.0 / kept)
        sigma = calibrate_noise("uls", 2.0, q, 50, 1e-4)
        assert plain[k] == pytest.approx(sigma / (q * users))
        assert prediction[k] == pytest.approx(sigma / (q * users) / (kept / total))


def test_uls_default_k_is_the_argmin():
    prediction = uls_noise_prediction(*ARGS, divide_by_kept_fraction=True)
    assert set(prediction) == set(default_candidates(COUNTS))
    k = uls_default_k(*ARGS, divide_by_kept_fraction=True)
    assert k in prediction and prediction[k] == min(prediction.values())
    plain = uls_noise_prediction(*ARGS)
    k_plain = uls_default_k(*ARGS)
    assert plain[k_plain] == min(plain.values())
    assert uls_default_k(*ARGS, candidates=[3]) == 3


def test_uls_prediction_bad_arguments():
    with pytest.raises(ValueError, match="^examples_per_step"):
        uls_noise_prediction(COUNTS, 0.0, 50, 2.0, 1e-4)
    with pytest.raises(ValueError, match="^candidates"):
        uls_noise_prediction(*ARGS, candidates=[0, 2])
    with pytest.raises(ValueError, match="^target_epsilon"):
        uls_noise_prediction(COUNTS, 20.0, 50, -1.0, 1e-4)
