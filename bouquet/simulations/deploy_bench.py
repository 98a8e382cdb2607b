"""Round time of ``bouquet deploy-local`` by who starts the ClientApp processes.

    python -m bouquet.simulations.deploy_bench --out docs/results/deploy-bench

Each run: a fresh deployment on 127.0.0.1 (3 SuperNodes, no TLS), FedAvg on digits for
``--rounds`` rounds (train and evaluate phases), then stopped. Modes: ``flower-1s`` (Flower's
SuperExec at its default 1 s task poll: deploy-local before the warm SuperExec), ``flower``
(Flower's SuperExec, 0.1 s poll), ``warm-3s`` (``bouquet.deploy.superexec`` beside a SuperNode
that keeps Flower's 3 s idle wait), ``warm`` (the same with the idle wait capped at 0.2 s,
``bouquet.deploy.supernode``: deploy-local's default). The figure is the
median of rounds 2+ from the run's ``summary.json``; modes are interleaved so a drift of the
machine hits all of them. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bouquet.deploy.local import deploy, flwr_run, stop

MODES = ("flower-1s", "flower", "warm-3s", "warm")
REPO = Path(__file__).resolve().parents[2]


def one_run(mode: str, rounds: int, data_dir: str) -> dict:
    env_before = os.environ.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL")
    if mode == "flower-1s":
        os.environ["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "1.0"
    tmp = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    cfg = {"method": "fedavg", "dataset": "digits", "partitioner": "iid", "batch-size": 32, "data-dir": data_dir,
           "num-server-rounds": rounds, "output-dir": str(tmp / "out")}
    t0 = time.perf_counter()
    try:
        dep = deploy(tmp / "deploy", 3, tls=False, auth=False, warm=mode.startswith("warm"),
                     idle_poll=3.0 if mode == "warm-3s" else 0.2)
        result = flwr_run(dep, REPO, cfg, timeout=60.0 * rounds + 300)
    finally:
        stop(tmp / "deploy")
        if env_before is None:
            os.environ.pop("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", None)
        else:
            os.environ["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = env_before
    summaries = [json.loads(p.read_text()) for p in (tmp / "out").glob("*/summary.json")]
    if result.status != "finished:completed" or not summaries:
        raise RuntimeError(f"{mode}: the run ended {result.status}; logs in {tmp}")
    seconds = list(summaries[0]["round_seconds"].values())
    return {"mode": mode, "round_seconds": seconds, "median_rounds_2plus": statistics.median(seconds[1:]),
            "wall_seconds": round(time.perf_counter() - t0, 1)}


def table(runs: list[dict]) -> str:
    base = statistics.fmean(r["median_rounds_2plus"] for r in runs if r["mode"] == "flower-1s")
    lines = ["| mode | median round (2+), each run | mean | vs flower-1s | whole runs |", "|---|---|---|---|---|"]
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        if mine:
            mean = statistics.fmean(r["median_rounds_2plus"] for r in mine)
            rounds = " / ".join(f"{r['median_rounds_2plus']:.1f} s" for r in mine)
            walls = " / ".join(f"{r['wall_seconds']:.0f} s" for r in mine)
            lines.append(f"| {mode} | {rounds} | {mean:.1f} s | {mean / base:.2f} | {walls} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bouquet.simulations.deploy_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--order", default="flower-1s,warm-3s,warm,warm,warm-3s,flower-1s",
                        help="the runs, in order (modes: " + ", ".join(MODES) + ")")
    parser.add_argument("--out", type=Path, default=Path("results/deploy-bench"))
    ns = parser.parse_args(argv)
    order = ns.order.split(",")
    if bad := [m for m in order if m not in MODES]:
        parser.error(f"--order: unknown mode(s) {', '.join(bad)} (one of {', '.join(MODES)})")
    if "flower-1s" not in order:
        parser.error("--order must contain flower-1s: it is the reference")
    data_dir = os.environ.get("BOUQUET_DATA", str(REPO.parent / "shared" / "data"))
    runs = []
    for i, mode in enumerate(order, 1):
        runs.append(one_run(mode, ns.rounds, data_dir))
        print(f"[deploy-bench] {i}/{len(order)} {mode}: {runs[-1]['median_rounds_2plus']:.2f} s a round", flush=True)
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "deploy-bench.json").write_text(json.dumps(runs, indent=1))
    (ns.out / "deploy-bench.md").write_text(table(runs))
    print(table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
