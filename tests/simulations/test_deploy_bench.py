"""deploy_bench's table against hand arithmetic, and its refusals (no deployment is started)."""

import pytest

from bouquet.simulations.deploy_bench import main, table


def test_table_means_and_ratio_against_flower_1s():
    runs = [{"mode": "flower-1s", "median_rounds_2plus": 20.0, "wall_seconds": 130.0},
            {"mode": "warm", "median_rounds_2plus": 10.0, "wall_seconds": 80.0},
            {"mode": "flower-1s", "median_rounds_2plus": 18.0, "wall_seconds": 120.0},
            {"mode": "warm", "median_rounds_2plus": 9.0, "wall_seconds": 70.0}]
    text = table(runs)
    assert "| flower-1s | 20.0 s / 18.0 s | 19.0 s | 1.00 | 130 s / 120 s |" in text
    assert "| warm | 10.0 s / 9.0 s | 9.5 s | 0.50 | 80 s / 70 s |" in text
    assert "| flower |" not in text  # a mode that did not run has no row


@pytest.mark.parametrize("order, message", [("warm,cold", "unknown mode(s) cold"), ("warm,flower", "must contain flower-1s")])
def test_bad_order_fails_before_anything_starts(order, message, capsys):
    with pytest.raises(SystemExit):
        main(["--order", order])
    assert message in capsys.readouterr().err
