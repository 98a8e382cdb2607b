"""``bouquet privacy``: ε or σ on one line, JSON, the reference table, one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from bouquet.cli import main

ULS = ["privacy", "--algorithm", "uls", "--sampling-rate", "0.01", "--steps", "1000", "--delta", "1e-6"]


def run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr().out.strip().splitlines()
    return code, out


def test_prints_epsilon_for_the_reference_uls_setting(capsys):
    code, out = run(capsys, [*ULS, "--noise-multiplier", "1"])
    assert code == 0 and len(out) == 1
    assert out[0].startswith("uls: sigma=1 q=0.01 T=1000 delta=1e-06 -> epsilon=")
    assert float(out[0].rsplit("=", 1)[1]) == pytest.approx(2.125, rel=0.01)


def test_epsilon_round_trip(capsys):
    args = ["privacy", "--algorithm", "els", "--sampling-rate", "0.02", "--steps", "300", "--delta", "1e-6",
            "--k", "4", "--json"]
    _, out = run(capsys, [*args, "--epsilon", "3"])
    sigma = json.loads(out[0])["noise_multiplier"]
    _, out = run(capsys, [*args, "--noise-multiplier", str(sigma)])
    record = json.loads(out[0])
    assert record["solved"] == "epsilon" and record["k"] == 4
    assert 3 * 0.97 < record["epsilon"] <= 3


def test_table_lists_the_reference_values(capsys):
    code, out = run(capsys, ["privacy", "--table", "--json"])
    rows = json.loads("\n".join(out))
    assert code == 0 and len(rows) == 6
    for row in rows:
        assert row[row["solved"]] == pytest.approx(row["reference"], rel=0.01)


@pytest.mark.parametrize(("extra", "pattern"), [
    (["--noise-multiplier", "1", "--epsilon", "2"], "exactly one of --noise-multiplier"),
    ([], "exactly one of --noise-multiplier"),
    (["--noise-multiplier", "-1"], "--noise-multiplier must be"),
    (["--noise-multiplier", "abc"], "invalid float value"),
    (["--epsilon", "0"], "--epsilon must be"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, extra, pattern):
    with pytest.raises(SystemExit) as exc:
        main([*ULS, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("bouquet privacy: error: ") and pattern in err[0]


def test_missing_arguments_exit_2_from_the_shell():
    proc = subprocess.run([sys.executable, "-m", "bouquet.cli", "privacy", "--algorithm", "els", "--sampling-rate",
                           "2", "--steps", "5", "--delta", "1e-5", "--noise-multiplier", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.fullmatch(r"bouquet privacy: error: --sampling-rate must be in \(0, 1\], got 2\.0\n", proc.stderr)
