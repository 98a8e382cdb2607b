"""The bench's arithmetic (``bouquet.simulations.bench``): ratios and where a round goes, on
hand-made rows (the runs themselves are measured, never timed in tests)."""

from __future__ import annotations

import numpy as np
import pytest

from bouquet.simulations import bench


def _row(rounds, phases, total, dw=0.0):
    return {"round_s": rounds, "phase_s": phases, "total_s": total, "final_global_test": 0.5,
            "arrays": {"w": np.array([1.0 + dw, 2.0])}}


def test_ratios_use_rounds_two_on_and_the_rest_is_what_no_phase_holds():
    plain = _row([9.0, 4.0, 6.0], [{"train": 3.0, "aggregate": 0.5, "server-evaluate": 0.5}] * 3, 20.0)
    flower = _row([30.0, 5.0, 7.0], [{"train": 4.0, "aggregate": 0.5, "server-evaluate": 1.0, "evaluate": 0.0,
                                      "checkpoint": 0.25}] * 3, 30.0, dw=0.125)
    flower["total_in_sweep_s"] = 28.0
    out = bench.summarise(flower, plain)
    assert out["median_round_s"] == 6.0  # rounds 2+: median of 5 and 7; round 1's 30 s is left out
    assert out["ratio_per_round"] == pytest.approx(6.0 / 5.0)
    assert out["ratio_total"] == pytest.approx(1.5) and out["ratio_total_in_sweep"] == pytest.approx(1.4)
    assert out["median_phase_s"] == {"train": 4.0, "aggregate": 0.5, "server-evaluate": 1.0}
    assert out["median_rest_s"] == pytest.approx(6.0 - 5.5)  # the checkpoint (and the rest) is outside PHASES
    assert out["max_abs_dw_vs_bound"] == 0.125
    table = bench.tables({"overhead": {"setting": {"dataset": "d", "clients": 4, "num-server-rounds": 3, "workers": 2},
                                       "rows": {"bound": {**bench.summarise(plain, plain), "startup_s": 1.0},
                                                "flower": out}}})
    assert "| flower | 4.00 | 0.50 | 1.00 | 0.50 |" in table
    assert "| bound | 3.00 | 0.50 | 0.50 | 1.00 |" in table  # rounds 4 and 6 s around 4 s of phases
