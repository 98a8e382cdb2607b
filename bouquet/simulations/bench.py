"""Benchmark: what a Flower simulation costs against the physical limit of this machine.

The bound is the same client function (``FedAvgClient.train``) in a plain loop run by as many
warmed worker processes as Flower runs clients in parallel (one per slot), each round's clients
dealt to the workers exactly as ``bouquet.multiplex`` deals them, aggregated with Flower's own
``aggregate_arrayrecords`` in client order, the global model scored on the test set every round
(and the initial model once before round 1, as the ServerApp scores round 0).
Both sides use the same seeds, so the final models must agree (max |Δw| is reported; expect 0).
A round is everything it costs on both sides: training, aggregation, the server's evaluation
(and on Flower's side the checkpoint). Both sides warm their workers up the same way while the
server sets up (``bouquet.client_app.warm_up``). Ratios come from one run, never from timed tests.

1. *Overhead*: the bound vs ``bouquet run`` with logical clients (``num-clients``, one SuperNode
   per slot), the same on a Ray head kept up (as a ``bouquet reproduce`` sweep runs it), and one
   SuperNode per client; per round (median of rounds 2+) and in total.
2. *Population*: 10², 10⁴, 10⁶ logical clients (``iid-draw``), the same number sampled a round:
   round time and the peak PSS summed over every process of the run (SuperLink, ServerApp,
   Ray and its workers), sampled every half second.

    python -m bouquet.simulations.bench --clients 100 --rounds 5 --out docs/results/bench
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path


# --- the bound: a plain loop on warmed worker processes ----------------------------------------
_WORKER: dict = {}


def _warm(run_config: dict, clients: int) -> None:
    """Worker start-up, outside the timed rounds: the warm-up a simulated client does while
    the server sets up (``bouquet.client_app.warm_up``), so both sides do the same work."""
    from bouquet.client_app import warm_up  # noqa: PLC0415
    from bouquet.config import RunConfig  # noqa: PLC0415

    warm_up(run_config, 0, clients)
    _WORKER.update(cfg=RunConfig.from_run_config(run_config), clients=clients)


def _train_batch(job: tuple[int, list[int], dict]) -> list[tuple[int, dict, float]]:
    from bouquet.clients.base import ClientCall  # noqa: PLC0415
    from bouquet.clients.fedavg import FedAvgClient  # noqa: PLC0415

    rnd, cids, arrays = job
    cfg, out = _WORKER["cfg"], []
    for cid in cids:
        call = ClientCall(cid=cid, num_partitions=_WORKER["clients"], server_round=rnd, run=cfg, arrays=arrays,
                          config={"lr": cfg.learning_rate, "server-round": rnd})
        reply = FedAvgClient().train(call)
        out.append((cid, reply.arrays, float(reply.metrics["num-examples"])))
    return out


def bound(run_config: dict, clients: int, workers: int) -> dict:
    """FedAvg rounds over ``clients`` sampled clients on ``workers`` warmed processes."""
    import multiprocessing as mp  # noqa: PLC0415

    import torch  # noqa: PLC0415
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict  # noqa: PLC0415
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords  # noqa: PLC0415

    from bouquet.clients.base import arrays_to_model  # noqa: PLC0415
    from bouquet.clients.training import evaluate_arrays  # noqa: PLC0415
    from bouquet.config import RunConfig, data_spec  # noqa: PLC0415
    from bouquet.datasets import data_root, global_test, load_dataset  # noqa: PLC0415
    from bouquet.models import build_model  # noqa: PLC0415
    from bouquet.multiplex import assign  # noqa: PLC0415
    from bouquet.seeding import seed_everything  # noqa: PLC0415

    t0 = time.monotonic()
    cfg = RunConfig.from_run_config(run_config)
    population = cfg.num_clients or clients
    rounds, phases, score = [], [], float("nan")
    # the workers warm up while this process sets up, as Flower's actors do while its server does
    with mp.get_context("spawn").Pool(workers, initializer=_warm, initargs=(run_config, population)) as pool:
        dataset = load_dataset(cfg.dataset, data_root(cfg.data_dir))
        seed_everything(cfg.seed)
        torch.manual_seed(cfg.seed)
        arrays = {k: v.numpy().copy() for k, v in build_model(dataset).state_dict().items()}
        test = global_test(data_spec(cfg, population))  # once, as the server's evaluator holds it
        # the initial model's score, which `bouquet run` reports as round 0 before round 1
        evaluate_arrays(arrays_to_model(build_model(dataset), arrays), *test)
        pool.map(time.sleep, [0.0] * workers)  # every worker warmed before round 1
        startup = time.monotonic() - t0
        for rnd in range(1, cfg.num_server_rounds + 1):
            t = time.monotonic()
            cids = list(range(clients))  # fraction-train 1 (the overhead part) samples everyone
            jobs = [(rnd, batch, arrays) for batch in assign(cids, list(range(workers)), rnd).values()]
            replies = sorted((r for batch in pool.map(_train_batch, jobs) for r in batch), key=lambda r: r[0])
            t_train = time.monotonic()
            agg = aggregate_arrayrecords([RecordDict({
                "arrays": ArrayRecord({k: Array(v) for k, v in a.items()}),
                "metrics": MetricRecord({"num-examples": n})}) for _, a, n in replies], "num-examples")
            arrays = {k: v.numpy() for k, v in agg.items()}
            t_agg = time.monotonic()
            # the server's evaluation too; the last one is the final score
            score = evaluate_arrays(arrays_to_model(build_model(dataset), arrays), *test).accuracy
            rounds.append(time.monotonic() - t)
            phases.append({"train": t_train - t, "aggregate": t_agg - t_train, "server-evaluate": t + rounds[-1] - t_agg})
    return {"startup_s": startup, "round_s": rounds, "phase_s": phases, "total_s": time.monotonic() - t0,
            "final_global_test": score, "arrays": arrays}


# --- Flower, with every process of the run measured ----------------------------------------
class PssMonitor:
    """Peak of the summed PSS (proportional set size: shared pages split between sharers) of
    processes and all their descendants (``pid_of`` returns their pids, None for one not started:
    e.g. the SuperLink and a Ray head), sampled every ``every_s`` seconds in a thread."""

    def __init__(self, pid_of, every_s: float = 0.5) -> None:
        self.pid_of, self.every_s, self.peak, self.samples = pid_of, every_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        import psutil  # noqa: PLC0415

        while not self._stop.wait(self.every_s):
            tree = []
            for pid in filter(None, self.pid_of()):
                try:
                    root = psutil.Process(pid)
                    tree += [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    pass
            if not tree:
                continue
            total = 0
            for proc in tree:
                try:
                    total += proc.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak, self.samples = max(self.peak, total), self.samples + 1


def flower(run_config: dict, num_supernodes: int, out_dir: Path, head=None) -> dict:
    """One ``bouquet run``-equivalent on a private SuperLink; timings, final model, peak PSS.
    ``head``: a ``launch.RayNode`` already up that the run joins, as a ``bouquet reproduce`` sweep's
    runs do (its processes count in the PSS; its start is not timed)."""
    from bouquet import checkpoint  # noqa: PLC0415
    from bouquet.simulations.launch import SuperLink, launch  # noqa: PLC0415

    t0, t0w = time.monotonic(), time.time()
    roots = lambda: [link.proc.pid if link.proc else None, head.proc.pid if head else None]  # noqa: E731
    with SuperLink(say=lambda *_: None, ray_address=head.address if head else None) as link, PssMonitor(roots) as pss:
        link_up = time.monotonic() - t0  # a sweep's later runs find their SuperLink up
        result = launch({**run_config, "output-dir": str(out_dir)}, num_supernodes=num_supernodes, echo=False,
                        superlink=link)
        total = time.monotonic() - t0  # the run's status is known: its SuperLink's shutdown is not counted
        t_stop = time.monotonic()
    teardown = time.monotonic() - t_stop
    if not result.ok:
        raise RuntimeError(f"flower run failed ({result.status}): {result.reason}\n{result.output[-3000:]}")
    run_dir = next(out_dir.glob("*/summary.json")).parent
    summary = json.loads((run_dir / "summary.json").read_text())
    rounds = [summary["round_seconds"][k] for k in sorted(summary["round_seconds"], key=int)]
    phases = [summary["phase_seconds"][k] for k in sorted(summary["phase_seconds"], key=int)]
    line = summary.get("timeline", {})
    first = line.get("first_round_started", line.get("rounds_started", t0w))
    fixed = {"superlink_start_s": link_up,
             "submit_to_serverapp_s": line.get("serverapp_started", t0w) - t0w - link_up,  # flwr run, FAB, imports
             "serverapp_to_clients_s": line.get("clients_found", 0) - line.get("serverapp_started", 0),  # Ray, actors
             "clients_to_round1_s": first - line.get("clients_found", 0),  # data, model, round-0 evaluation
             "after_rounds_s": total - (first - t0w) - sum(rounds),  # results, Flower's shutdown, status
             "superlink_stop_s": teardown}  # not in total
    return {"round_s": rounds, "phase_s": phases, "total_s": total, "total_in_sweep_s": total - link_up, "fixed": fixed, "final_global_test": summary["final"].get("global_model@global_test"),
            "peak_pss_bytes": pss.peak, "pss_samples": pss.samples, "arrays": checkpoint.load(run_dir).arrays}


PHASES = ("train", "aggregate", "server-evaluate")  # of a round; the bench's runs have no client evaluation


def _later(xs: list[float]) -> float:
    return statistics.median(xs[1:] if len(xs) > 1 else xs)


def _max_dw(a: dict, b: dict) -> float:
    import numpy as np  # noqa: PLC0415

    return max(float(np.max(np.abs(np.asarray(a[k], dtype=np.float64) - np.asarray(b[k], dtype=np.float64))))
               for k in a)


def summarise(row: dict, plain: dict) -> dict:
    """One bench row against the bound (``plain``): medians of rounds 2+, ratios, where a round goes
    (``PHASES``; rest: what the round spent outside them, e.g. Flower's checkpoint), |Δw|."""
    per_round, total = _later(row["round_s"]), row.get("total_in_sweep_s", row["total_s"])
    return {"round_s": row["round_s"], "phase_s": row["phase_s"], "median_round_s": per_round,
            "total_s": row["total_s"], "ratio_per_round": per_round / _later(plain["round_s"]),
            "ratio_total": row["total_s"] / plain["total_s"],
            "total_in_sweep_s": total, "ratio_total_in_sweep": total / plain["total_s"],
            "final_global_test": row["final_global_test"], "max_abs_dw_vs_bound": _max_dw(plain["arrays"], row["arrays"]),
            "peak_pss_gb": row.get("peak_pss_bytes", 0) / 2**30 or None, "fixed": row.get("fixed"),
            "median_phase_s": {k: _later([p.get(k, 0.0) for p in row["phase_s"]]) for k in PHASES},
            "median_rest_s": _later([r - sum(p.get(k, 0.0) for k in PHASES) for r, p in zip(row["round_s"], row["phase_s"])])}


def overhead(args: argparse.Namespace, workers: int, tmp: Path) -> dict:
    from bouquet.preflight import usable_cpus  # noqa: PLC0415
    from bouquet.simulations.launch import RayNode  # noqa: PLC0415

    base = {"method": "fedavg", "dataset": args.dataset, "partitioner": args.partitioner, "seed": 0,
            "num-server-rounds": args.rounds, "fraction-evaluate": 0.0}
    print(f"[bench] bound: {args.clients} clients x {args.rounds} rounds on {workers} warmed processes ...", flush=True)
    plain = bound(base, args.clients, workers)
    rows = {"bound": plain}
    print(f"[bench] flower, {args.clients} logical clients on {workers} SuperNodes ...", flush=True)
    rows["flower-logical"] = flower({**base, "num-clients": args.clients}, workers, tmp / "logical")
    print("[bench] the same twice on one Ray head kept up, as a `bouquet reproduce` sweep runs them ...", flush=True)
    with RayNode(num_cpus=usable_cpus()) as head:
        for name in ("warm Ray, 1st run", "warm Ray, 2nd run"):  # Ray prestarts workers for a head's first job only
            rows[f"flower-logical, {name}"] = flower({**base, "num-clients": args.clients}, workers,
                                                     tmp / name.replace(" ", "-").replace(",", ""), head=head)
    if not args.skip_per_node:
        print(f"[bench] flower, {args.clients} SuperNodes (one per client) ...", flush=True)
        rows["flower-per-node"] = flower(base, args.clients, tmp / "per-node")
    out = {name: summarise(row, plain) for name, row in rows.items()}
    out["bound"]["startup_s"] = plain["startup_s"]
    return {"setting": {**base, "clients": args.clients, "workers": workers}, "rows": out}


def population(args: argparse.Namespace, workers: int, tmp: Path) -> dict:
    rows = {}
    for n in args.populations:
        print(f"[bench] population {n:,}: {args.sampled} sampled a round, {args.pop_rounds} rounds ...", flush=True)
        cfg = {"method": "fedavg", "dataset": args.dataset, "partitioner": "iid-draw", "seed": 0,
               "examples-per-client": args.examples, "num-clients": n, "fraction-train": args.sampled / n,
               "fraction-evaluate": 0.0, "num-server-rounds": args.pop_rounds}
        row = flower(cfg, workers, tmp / f"pop-{n}")
        rows[str(n)] = {"median_round_s": _later(row["round_s"]), "round_s": row["round_s"], "total_s": row["total_s"],
                        "peak_pss_gb": row["peak_pss_bytes"] / 2**30, "final_global_test": row["final_global_test"]}
    first = rows[str(args.populations[0])]["median_round_s"]
    for row in rows.values():
        row["round_vs_smallest"] = row["median_round_s"] / first
    return {"setting": {"sampled": args.sampled, "examples-per-client": args.examples, "workers": workers},
            "rows": rows}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def tables(report: dict) -> str:
    lines = []
    if "overhead" in report:
        o = report["overhead"]
        s = o["setting"]
        lines += [f"### Overhead: FedAvg, {s['dataset']}, {s['clients']} clients, {s['num-server-rounds']} rounds, "
                  f"{s['workers']} parallel slots", ""]
        lines += _table(["", "median round (2+)", "per-round ratio", "total", "total ratio",
                         "total ratio in a sweep (its SuperLink up)", "final accuracy", "max abs dw vs bound", "peak PSS"],
                        [[name, f"{r['median_round_s']:.2f} s", f"{r['ratio_per_round']:.3f}", f"{r['total_s']:.1f} s",
                          f"{r['ratio_total']:.3f}", f"{r['ratio_total_in_sweep']:.3f}", f"{r['final_global_test']:.4f}", f"{r['max_abs_dw_vs_bound']:.3g}",
                          f"{r['peak_pss_gb']:.2f} GB" if r["peak_pss_gb"] else "-"] for name, r in o["rows"].items()])
        lines += ["", "Where a round goes (seconds, median of rounds 2+; train: from sampling to the last reply; "
                  "rest: the round's other parts, e.g. a checkpoint):", ""]
        lines += _table(["", *PHASES, "rest"],
                        [[name, *(f"{r['median_phase_s'][k]:.2f}" for k in PHASES),
                          f"{r['median_rest_s']:.2f}"]
                         for name, r in o["rows"].items() if r.get("median_phase_s")])
        lines += ["", "Where the fixed cost goes (seconds, outside the rounds):", ""]
        keys = ("superlink_start_s", "submit_to_serverapp_s", "serverapp_to_clients_s", "clients_to_round1_s",
                "after_rounds_s", "superlink_stop_s")
        lines += _table(["", "SuperLink start", "submit → ServerApp", "ServerApp → clients found",
                         "→ round 1 (incl. round-0 evaluation)", "after the rounds", "(SuperLink stop, not in total)"],
                        [[name, *(f"{f[k]:.1f}" for k in keys)] for name, r in o["rows"].items() if (f := r.get("fixed"))]
                        + [["bound", f"{o['rows']['bound']['startup_s']:.1f} (pool start and warm-up, all of it)",
                            "", "", "", "", ""]])
        lines.append("")
    if "population" in report:
        p = report["population"]
        lines += [f"### Population: {p['setting']['sampled']} clients sampled a round, iid-draw "
                  f"{p['setting']['examples-per-client']} examples each", ""]
        lines += _table(["logical clients", "median round (2+)", "vs the smallest", "peak PSS (all processes)", "total"],
                        [[f"{int(n):,}", f"{r['median_round_s']:.2f} s", f"{r['round_vs_smallest']:.3f}",
                          f"{r['peak_pss_gb']:.2f} GB", f"{r['total_s']:.1f} s"] for n, r in p["rows"].items()])
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    if "overhead" in report:
        rows = report["overhead"]["rows"]
        names = list(rows)
        axes[0].bar(names, [rows[n]["median_round_s"] for n in names], color=["grey", "tab:green", "tab:olive", "tab:olive", "tab:orange"][:len(names)])
        for i, n in enumerate(names):
            axes[0].text(i, rows[n]["median_round_s"], f"×{rows[n]['ratio_per_round']:.2f}", ha="center", va="bottom")
        axes[0].set(ylabel="median round, rounds 2+ (s)", title="Flower vs the plain-loop bound")
    if "population" in report:
        rows = report["population"]["rows"]
        ns = [int(n) for n in rows]
        ax = axes[1]
        ax.plot(ns, [rows[str(n)]["median_round_s"] for n in ns], "o-", color="tab:blue", label="round time")
        ax.set(xscale="log", xlabel="logical clients", ylabel="median round (s)", title="Population (same sample a round)")
        ax.set_ylim(bottom=0)
        ax2 = ax.twinx()
        ax2.plot(ns, [rows[str(n)]["peak_pss_gb"] for n in ns], "s--", color="tab:red", label="peak PSS")
        ax2.set_ylabel("peak PSS, all processes (GB)")
        ax2.set_ylim(bottom=0)
        ax.legend(handles=[*ax.get_lines(), *ax2.get_lines()], loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--clients", type=int, default=100, help="clients, all trained every round (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5; per-round ratios use rounds 2+)")
    parser.add_argument("--dataset", default="fashion-mnist", help="an image dataset (default fashion-mnist)")
    parser.add_argument("--partitioner", default="iid", help="the overhead part's partitioner (default iid)")
    parser.add_argument("--populations", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                        default=[100, 10_000, 1_000_000],
                        help="logical-client populations (default 100,10000,1000000; empty skips)")
    parser.add_argument("--sampled", type=int, default=100, help="clients sampled a round in the population part")
    parser.add_argument("--examples", type=int, default=60, help="iid-draw examples per client (population part)")
    parser.add_argument("--pop-rounds", type=int, default=8,
                        help="rounds per population run (default 8: the median of 7 rounds; 4 left it to noise)")
    parser.add_argument("--skip-overhead", action="store_true", help="only the population part")
    parser.add_argument("--skip-per-node", action="store_true", help="no one-SuperNode-per-client row")
    parser.add_argument("--out", type=Path, default=None, help="folder for bench.json, bench.md, bench.png")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return run(add_arguments(parser).parse_args(argv))


def run(args: argparse.Namespace) -> int:
    from bouquet.preflight import slots  # noqa: PLC0415

    workers = slots(1)
    report: dict = {"device": _device()}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_overhead:
            report["overhead"] = overhead(args, workers, Path(tmp))
        if args.populations:
            report["population"] = population(args, workers, Path(tmp))
    text = tables(report)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.json").write_text(json.dumps(report, indent=2))
        (args.out / "bench.md").write_text(f"Device: {report['device']}\n\n{text}\n")
        plot(report, args.out / "bench.png")
    return 0


def _device() -> str:
    import torch  # noqa: PLC0415

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


if __name__ == "__main__":
    raise SystemExit(main())
