"""Benchmark: the same local training in a plain single-process PyTorch loop and in a Flower
simulation (``flwr run``, Ray), reported as ratios measured in one run.

Both sides call the same pure client function (``FedAvgClient.train``) with the same seeds
and aggregate with Flower's own ``aggregate_arrayrecords`` in partition order, so they do the
same work and should reach the same global-test accuracy; the difference is Flower's cost.

    python -m bouquet.simulations.bench --clients 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path



def plain_loop(run_config: dict, clients: int) -> dict:
    """FedAvg rounds over all clients in one process; returns timings and the final score."""
    import torch  # noqa: PLC0415 (the CLI imports this module to build its --help)
    from tqdm import tqdm  # noqa: PLC0415
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict  # noqa: PLC0415
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords  # noqa: PLC0415

    from bouquet.clients.base import ClientCall, arrays_to_model  # noqa: PLC0415
    from bouquet.clients.fedavg import FedAvgClient  # noqa: PLC0415
    from bouquet.clients.training import evaluate_arrays  # noqa: PLC0415
    from bouquet.config import RunConfig, data_spec  # noqa: PLC0415
    from bouquet.datasets import client_data, data_root, global_test, load_dataset  # noqa: PLC0415
    from bouquet.models import build_model  # noqa: PLC0415
    from bouquet.seeding import seed_everything  # noqa: PLC0415

    t0 = time.monotonic()
    torch.set_num_threads(1)
    cfg = RunConfig.from_run_config(run_config)
    spec = data_spec(cfg, clients)
    dataset = load_dataset(cfg.dataset, data_root(cfg.data_dir))
    for cid in range(clients):
        client_data(spec, cid)
    seed_everything(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(dataset)
    arrays = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    startup = time.monotonic() - t0
    logic, rounds = FedAvgClient(), []
    bar = tqdm(total=cfg.num_server_rounds * clients, desc="plain loop", unit="client")
    for rnd in range(1, cfg.num_server_rounds + 1):
        t = time.monotonic()
        replies = []
        for cid in range(clients):
            bar.update()
            call = ClientCall(cid=cid, num_partitions=clients, server_round=rnd, run=cfg, arrays=arrays,
                              config={"lr": cfg.learning_rate, "server-round": rnd})
            out = logic.train(call)
            replies.append(RecordDict({
                "arrays": ArrayRecord({k: Array(v) for k, v in out.arrays.items()}),
                "metrics": MetricRecord({"num-examples": out.metrics["num-examples"]}),
            }))
        agg = aggregate_arrayrecords(replies, "num-examples")
        arrays = {k: v.numpy() for k, v in agg.items()}
        rounds.append(time.monotonic() - t)
    bar.close()
    test = global_test(spec)
    score = evaluate_arrays(arrays_to_model(build_model(dataset), arrays), *test).accuracy if test else float("nan")
    return {"startup_s": startup, "round_s": rounds, "total_s": time.monotonic() - t0, "final_global_test": score}


def flower_run(run_config: dict, clients: int, out_dir: Path) -> dict:
    from bouquet.simulations.launch import launch  # noqa: PLC0415

    t0 = time.monotonic()
    result = launch({**run_config, "output-dir": str(out_dir), "fraction-evaluate": 0.0},
                    num_supernodes=clients, echo=False)
    total = time.monotonic() - t0
    if not result.ok:
        raise RuntimeError(f"flower run failed ({result.status}):\n{result.output[-3000:]}")
    summary = json.loads(next(out_dir.glob("*/summary.json")).read_text())
    rounds = [summary["round_seconds"][k] for k in sorted(summary["round_seconds"], key=int)]
    return {"round_s": rounds, "total_s": total, "final_global_test": summary["final"].get("global_model@global_test")}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--clients", type=int, default=10, help="simulated clients, all trained every round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3; ratios use rounds 2+)")
    parser.add_argument("--dataset", default="fashion-mnist", help="any `bouquet list datasets` (default fashion-mnist)")
    parser.add_argument("--partitioner", default="iid", help="any `bouquet list partitioners` (default iid)")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return run(add_arguments(parser).parse_args(argv))


def run(args: argparse.Namespace) -> int:
    run_config = {"method": "fedavg", "dataset": args.dataset, "partitioner": args.partitioner,
                  "num-server-rounds": args.rounds, "seed": 0}
    print(f"[bench] plain loop: {args.clients} clients x {args.rounds} rounds on {args.dataset} ...", flush=True)
    plain = plain_loop(run_config, args.clients)
    print(f"[bench] flower simulation (flwr run, {args.clients} SuperNodes, 1 CPU each) ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        flower = flower_run(run_config, args.clients, Path(tmp))
    later = slice(1, None) if args.rounds > 1 else slice(None)
    per_round_plain = statistics.median(plain["round_s"][later])
    per_round_flower = statistics.median(flower["round_s"][later])
    report = {
        "setting": {**run_config, "clients": args.clients},
        "plain": plain,
        "flower": flower,
        "ratio_per_round": per_round_flower / per_round_plain,
        "ratio_total": flower["total_s"] / plain["total_s"],
        "same_result": math.isclose(plain["final_global_test"], flower["final_global_test"] or math.nan, rel_tol=1e-6),
    }
    print(f"| | plain loop (1 process) | Flower simulation | ratio |\n|---|---|---|---|\n"
          f"| median round (rounds 2+) | {per_round_plain:.2f} s | {per_round_flower:.2f} s | {report['ratio_per_round']:.2f} |\n"
          f"| total | {plain['total_s']:.1f} s | {flower['total_s']:.1f} s | {report['ratio_total']:.2f} |\n"
          f"| final global_model@global_test | {plain['final_global_test']:.4f} | {flower['final_global_test']:.4f} | same: {report['same_result']} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
