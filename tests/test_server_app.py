"""The server's global forgetting: round 1 against the initial model (Bouquet) or against an
all-wrong model (``forgetting-first-visit='zero'``, FedKPer's code)."""

import numpy as np
import pytest

from bouquet.config import RunConfig
from bouquet.server_app import ServerEvaluator


def _evaluator(first_visit: str) -> ServerEvaluator:
    ev = ServerEvaluator.__new__(ServerEvaluator)  # only the scoring state; no data needed
    ev.cfg, ev.previous = RunConfig.from_run_config({"forgetting-first-visit": first_visit}), {}
    return ev


@pytest.mark.parametrize("first_visit, nfr1", [("skip", 0.25), ("zero", 0.0)])
def test_round_one_global_flips(first_visit, nfr1):
    ev, key = _evaluator(first_visit), "global_model@global_test"
    scores: dict = {}
    ev._score(scores, key, np.array([1, 1, 0, 0], bool), 0)  # the initial model
    assert "nfr:" + key not in scores
    ev._score(scores, key, np.array([1, 0, 1, 0], bool), 1)
    assert scores["nfr:" + key] == pytest.approx(nfr1)
    ev._score(scores, key, np.array([0, 0, 1, 0], bool), 2)  # later rounds: always the previous model
    assert scores["nfr:" + key] == pytest.approx(0.25)
