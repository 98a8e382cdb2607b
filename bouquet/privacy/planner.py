"""``bouquet privacy``: ε for a mechanism, or the σ for a target ε, before any training.

    bouquet privacy --algorithm uls --noise-multiplier 1 --sampling-rate 0.01 --steps 1000 --delta 1e-6
    bouquet privacy --algorithm els --epsilon 4 --sampling-rate 0.01 --steps 500 --delta 1e-6 --k 8
    bouquet privacy --table
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from bouquet.privacy.accounting import calibrate_noise, epsilon

# Chua et al. section's offline check (reference notes, 3.9; δ = 1e-6): (setting, published value)
REFERENCE = (
    ({"algorithm": "uls", "noise_multiplier": 1.0, "sampling_rate": 0.01, "steps": 1000, "delta": 1e-6}, 2.125),
    ({"algorithm": "els", "noise_multiplier": 2.0, "sampling_rate": 0.01, "steps": 1000, "delta": 1e-6, "k": 1}, 0.721),
    ({"algorithm": "els", "noise_multiplier": 2.0, "sampling_rate": 0.01, "steps": 1000, "delta": 1e-6, "k": 4}, 3.27),
    ({"algorithm": "els", "noise_multiplier": 2.0, "sampling_rate": 0.01, "steps": 1000, "delta": 1e-6, "k": 16}, 16.6),
    ({"algorithm": "els", "epsilon": 4.0, "sampling_rate": 0.01, "steps": 500, "delta": 1e-6, "k": 8}, 2.34),
    ({"algorithm": "uls", "epsilon": 4.0, "sampling_rate": 0.01, "steps": 500, "delta": 1e-6}, 0.72),
)


def solve(algorithm: str, sampling_rate: float, steps: int, delta: float, k: int = 1,
          noise_multiplier: float | None = None, epsilon_target: float | None = None) -> dict:
    """The full setting with the missing one of σ / ε filled in; exactly one of them must be given."""
    if (noise_multiplier is None) == (epsilon_target is None):
        raise ValueError("give exactly one of noise_multiplier (to get epsilon) or epsilon_target "
                         "(to get the noise multiplier)")
    record = {"algorithm": algorithm, "sampling_rate": sampling_rate, "steps": steps, "delta": delta}
    if algorithm == "els":
        record["k"] = k
    if noise_multiplier is None:
        record["epsilon"] = epsilon_target
        record["noise_multiplier"] = calibrate_noise(algorithm, epsilon_target, sampling_rate, steps, delta, k)
        record["solved"] = "noise_multiplier"
    else:
        record["noise_multiplier"] = noise_multiplier
        record["epsilon"] = epsilon(algorithm, noise_multiplier, sampling_rate, steps, delta, k)
        record["solved"] = "epsilon"
    return record


def describe(record: dict) -> str:
    """One line: the given values, then ``->`` the solved one."""
    given = "epsilon" if record["solved"] == "noise_multiplier" else "noise_multiplier"
    names = {"noise_multiplier": "sigma", "epsilon": "epsilon"}
    parts = [f"{names[given]}={record[given]:g}", f"q={record['sampling_rate']:g}", f"T={record['steps']}",
             f"delta={record['delta']:g}"]
    if "k" in record:
        parts.append(f"k={record['k']}")
    value = record[record["solved"]]
    shown = "inf" if math.isinf(value) else f"{value:.4g}"
    return f"{record['algorithm']}: {' '.join(parts)} -> {names[record['solved']]}={shown}"


def reference_table() -> list[dict]:
    """Each reference setting solved here, next to the published value."""
    rows = []
    for s, published in REFERENCE:
        row = solve(s["algorithm"], s["sampling_rate"], s["steps"], s["delta"], s.get("k", 1),
                    s.get("noise_multiplier"), s.get("epsilon"))
        rows.append({**row, "reference": published})
    return rows


def _as_option(message: str) -> str:
    """The accountant names Python arguments; say the option the user typed instead."""
    name, _, rest = message.partition(" ")
    options = {"target_epsilon": "--epsilon", "algorithm": "--algorithm", "noise_multiplier": "--noise-multiplier",
               "sampling_rate": "--sampling-rate", "steps": "--steps", "delta": "--delta", "k": "--k"}
    return f"{options[name]} {rest}" if name in options else message


def _error(prog: str):
    def error(message: str):
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    return error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.error = _error("bouquet privacy")  # one line, exit 2, also for argparse's own errors
    parser.add_argument("--algorithm", choices=("uls", "els"), help="uls: user-level sampling; els: example-level")
    parser.add_argument("--noise-multiplier", type=float, default=None, metavar="SIGMA", help="σ: prints ε")
    parser.add_argument("--epsilon", type=float, default=None, metavar="E", help="target ε: prints the σ needed")
    parser.add_argument("--sampling-rate", type=float, default=None, metavar="Q",
                        help="uls: per user per step; els: per example per step")
    parser.add_argument("--steps", type=int, default=None, metavar="T")
    parser.add_argument("--delta", type=float, default=None, metavar="D")
    parser.add_argument("--k", type=int, default=1, help="els: examples kept per user (default 1)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--table", action="store_true", help="the reference table's settings with their values here")


def run(ns: argparse.Namespace) -> int:
    error = _error("bouquet privacy")
    if ns.table:
        rows = reference_table()
        if ns.json:
            print(json.dumps(rows, indent=1))
        else:
            for row in rows:
                print(f"{describe(row)}  (reference {row['reference']:g})")
        return 0
    missing = [f"--{name.replace('_', '-')}" for name in ("algorithm", "sampling_rate", "steps", "delta")
               if getattr(ns, name) is None]
    if missing:
        error(f"missing {', '.join(missing)} (or use --table)")
    if (ns.noise_multiplier is None) == (ns.epsilon is None):
        error("give exactly one of --noise-multiplier (prints epsilon) or --epsilon (prints the noise multiplier)")
    try:
        record = solve(ns.algorithm, ns.sampling_rate, ns.steps, ns.delta, ns.k, ns.noise_multiplier, ns.epsilon)
    except ValueError as exc:
        error(_as_option(str(exc)))
    if ns.json:
        print(json.dumps({key: (None if isinstance(v, float) and math.isinf(v) else v) for key, v in record.items()}))
    else:
        print(describe(record))
    return 0
