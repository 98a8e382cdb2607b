"""``bouquet`` command line: run an experiment through Flower simulation, or benchmark."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


def _parse_overrides(texts: list[str] | None) -> dict[str, object]:
    """``--run-config`` strings (or a .toml file) -> dict, with Flower's own parser."""
    from bouquet.preflight import parse_overrides  # noqa: PLC0415

    return parse_overrides(texts or [])


def _export(ns: argparse.Namespace) -> int:
    """Validate the settings as a run would (same keys, same DataSpec), then write."""
    import json  # noqa: PLC0415

    from bouquet.config import RunConfig, data_spec  # noqa: PLC0415
    from bouquet.datasets import DataFileError, export_partitions  # noqa: PLC0415

    keys = ("seed", "dirichlet_alpha", "classes_per_client", "min_partition_size",
            "graph_unseen_fraction", "graph_missing_classes", "graph_missing_rule", "graph_train_fraction",
            "data_dir")
    overrides = {k.replace("_", "-"): getattr(ns, k) for k in keys if getattr(ns, k) is not None}
    try:
        # fedavg accepts every dataset, so only the data keys are judged here
        cfg = RunConfig.from_run_config({"method": "fedavg", "dataset": ns.dataset,
                                         "partitioner": ns.partitioner, **overrides})
        folders = export_partitions(data_spec(cfg, ns.num_partitions), ns.out, force=ns.force)
    except (ValueError, FileExistsError, DataFileError) as exc:
        print(f"bouquet export-partitions: error: {exc}", file=sys.stderr)
        return 2
    for folder in folders:
        size = json.loads((folder / "manifest.json").read_text())["sizes"]
        print(f"{folder}  " + " ".join(f"{k}={v}" for k, v in size.items()))
    return 0


def _seeds(text: str) -> int | tuple[int, ...]:
    if "," not in text:
        return int(text)
    return tuple(int(x) for x in text.split(",") if x.strip())


def _ray_address(text: str) -> str:
    """``--ray-address``: HOST:PORT of a Ray head, its form checked while the options are parsed."""
    from bouquet.simulations.launch import parse_ray_address  # noqa: PLC0415

    try:
        return parse_ray_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _no_ray_cluster(command: str, address: str | None) -> bool:
    """True (after one error line) when ``--ray-address`` names a port where nothing answers."""
    if not address:
        return False
    from bouquet.simulations.launch import check_ray_cluster  # noqa: PLC0415

    try:
        check_ray_cluster(address)
    except ConnectionError as exc:
        print(f"bouquet {command}: error: --ray-address: {exc}", file=sys.stderr)
        return True
    return False


def _version() -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return f"{version('bouquet')} (flwr {version('flwr')}, torch {version('torch')})"


def _run(ns: argparse.Namespace) -> int:
    """Preflight (a second or two), then one simulation; the last line says how it ended."""
    import os  # noqa: PLC0415

    if _no_ray_cluster("run", ns.ray_address):
        return 2
    from bouquet.preflight import PreflightError, check_run, slots  # noqa: PLC0415

    try:
        overrides = _parse_overrides(ns.run_config)
        # Explicit paths: a SuperLink's environment may not be this shell's.
        for key, env in (("data-dir", "BOUQUET_DATA"), ("output-dir", "BOUQUET_OUTPUT")):
            if key not in overrides and os.environ.get(env):
                overrides[key] = os.path.abspath(os.path.expanduser(os.environ[env]))
        if ns.num_clients is not None:
            overrides["num-clients"] = ns.num_clients
        if ns.num_supernodes is None and overrides.get("num-clients") and ns.ray_address:
            raise PreflightError("--num-clients on a Ray cluster: give --num-supernodes (the cluster's parallel "
                                 "slots; this machine's cores say nothing about it) and an output-dir every node "
                                 "shares (the logical clients' state store)")
        if ns.num_supernodes is None:  # logical clients: one SuperNode per parallel slot serves them all
            ns.num_supernodes = slots(ns.cpus_per_client) if overrides.get("num-clients") else 3
        # on a Ray cluster its nodes, not this machine, must fit a client (Ray refuses a run none fits)
        machine = (ns.cpus_per_client, ns.gpus_per_client) if ns.ray_address is None else (1, 0.0)
        cfg = check_run(overrides, ns.num_supernodes, *machine)
    except PreflightError as exc:
        print(f"bouquet run: error: {exc}", file=sys.stderr)
        return 2
    from bouquet.results import output_root  # noqa: PLC0415
    from bouquet.simulations.launch import launch  # noqa: PLC0415

    who = (f"{cfg.num_clients} logical clients on {ns.num_supernodes} SuperNodes" if cfg.num_clients
           else f"{ns.num_supernodes} clients")
    print(f"[bouquet] checked: {cfg.method} on {cfg.dataset} ({cfg.partitioner}, {who}, "
          f"{cfg.num_server_rounds} rounds, seed {cfg.seed}); results under {output_root(cfg)}", flush=True)
    if ns.check:
        return 0
    try:
        result = launch(overrides, num_supernodes=ns.num_supernodes, cpus_per_client=ns.cpus_per_client,
                        gpus_per_client=ns.gpus_per_client, echo="bouquet" if ns.quiet else True,
                        verbose=ns.verbose, ray_address=ns.ray_address)
    except KeyboardInterrupt:
        print("\n[bouquet] interrupted: the run and its SuperLink were stopped", file=sys.stderr)
        return 130
    if result.ok:
        print(f"[bouquet] run {result.run_id}: {result.status}")
        return 0
    print(f"[bouquet] run {result.run_id}: {result.status}: {result.reason}", file=sys.stderr)
    return 1


def _list(what: str) -> int:
    """Every valid choice, from the same tables the config validates against."""
    import dataclasses  # noqa: PLC0415

    from bouquet.config import RunConfig  # noqa: PLC0415
    from bouquet.datasets import DATASETS, PARTITIONERS  # noqa: PLC0415
    from bouquet.registry import METHODS  # noqa: PLC0415
    from bouquet.simulations.reproduce import PRESETS  # noqa: PLC0415

    sections = {
        "methods": [f"{name:10s} {m.summary}" + ("" if m.datasets == DATASETS else f" [{', '.join(m.datasets)}]")
                    for name, m in METHODS.items()],
        "datasets": list(DATASETS),
        "partitioners": list(PARTITIONERS),
        "presets": list(PRESETS),
        "keys": [f"{f.name.replace('_', '-'):24s} {f.default!r}" + _choices(f.metadata.get("choices"))
                 for f in dataclasses.fields(RunConfig)],
    }
    for name, lines in sections.items():
        if what in ("all", name):
            print(f"{name}:" if what == "all" else "", *[f"  {ln}" for ln in lines], sep="\n")
    return 0


def _choices(choices) -> str:
    if choices is None or choices == "methods":  # methods have their own section
        return ""
    return f"  (one of: {', '.join(choices)})"


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler, `timeout`, `kill`) as Ctrl-C: the private SuperLink, its simulation
    and Ray are stopped on the way out instead of being left running."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    if argv[:1] == ["deploy-local"]:  # its own parser (bouquet.deploy.local)
        from bouquet.deploy.local import main as deploy_main  # noqa: PLC0415

        return deploy_main(argv[1:])
    parser = argparse.ArgumentParser(prog="bouquet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bouquet {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one federated experiment via `flwr run` (simulation)",
                         description="Check the config, data and machine, start a private SuperLink on a free "
                         "port, run one simulation through `flwr run`, print its real status.")
    run.add_argument("--run-config", action="append", metavar="'KEY=VALUE ...' | FILE.toml",
                     help="run-config overrides in Flower's syntax (strings in quotes), or a TOML file; "
                     "repeatable, later wins; keys: `bouquet list keys`")
    run.add_argument("--num-supernodes", type=int, default=None,
                     help="simulated SuperNodes (default 3, one per client; with --num-clients: one per parallel slot)")
    run.add_argument("--num-clients", type=int, default=None,
                     help="logical clients served in batches by the SuperNodes (run-config num-clients; "
                     "simulation only), e.g. 1000000 with partitioner=iid-draw")
    run.add_argument("--cpus-per-client", type=int, default=1,
                     help="CPU cores per client (default 1: as many parallel clients as cores)")
    run.add_argument("--gpus-per-client", type=float, default=0.0, help="GPU share per client (needs a CUDA GPU)")
    run.add_argument("--ray-address", type=_ray_address, default=None, metavar="HOST:PORT",
                     help="run the clients on this existing Ray cluster (the head's address from `ray start "
                     "--head`) instead of a Ray started for this run; see README, Simulation on a Ray cluster")
    run.add_argument("--check", action="store_true",
                     help="only check the config, data, output folder and machine, then exit (0 = ready)")
    noise = run.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="print only Bouquet's lines and errors")
    noise.add_argument("-v", "--verbose", action="store_true", help="Flower's DEBUG log with timestamps")
    rep = sub.add_parser("reproduce", help="a paper's comparison as a sweep of Flower simulations")
    rep.add_argument("preset", help="e.g. fedlog")
    rep.add_argument("--quick", action="store_true", help="the small version (minutes)")
    rep.add_argument("--seeds", type=_seeds, default=None,
                     help="N: seeds 0..N-1; a comma list (e.g. 1,2 or 2,): exactly those seeds")
    rep.add_argument("--out", type=Path, default=None, help="results folder")
    rep.add_argument("--datasets", default="", help="comma-separated subset")
    rep.add_argument("--methods", default="", help="comma-separated subset")
    rep.add_argument("--clients", default="", help="comma-separated subset, e.g. 3,5")
    rep.add_argument("--run-config", action="append", metavar="'KEY=VALUE ...'",
                     help="overrides for every run, e.g. \"local-epochs=5\" (repeatable)")
    rep.add_argument("--ray-address", type=_ray_address, default=None, metavar="HOST:PORT",
                     help="run every simulation of the sweep on this existing Ray cluster (as for `bouquet run`)")
    rep.add_argument("--no-warm-ray", dest="warm_ray", action="store_false",
                     help="start Ray inside every run, as `bouquet run` does (default: one private Ray head on "
                     "this machine serves the whole sweep; same numbers, 2-3 s less a run)")
    rep.add_argument("--supernode-per-client", action="store_true",
                     help="one SuperNode per client (default: a cell with more clients than cores runs them as "
                     "logical clients on one SuperNode per core; same numbers, less overhead)")
    rep.add_argument("--rebuild", action="store_true", help="only rebuild results.csv/table.md/plots from --out")
    rep.add_argument("--export-toml", type=Path, default=None, metavar="DIR",
                     help="run nothing: write one run-config TOML per (dataset, method, clients) cell to DIR, "
                          "for `flwr run <app> --run-config DIR/<cell>.toml`")
    exp = sub.add_parser("export-partitions", help="write each client's partition to DIR/partition_<i>/ "
                         "for a SuperNode started with --node-config \"data-path='DIR/partition_<i>'\"")
    exp.add_argument("--dataset", required=True)
    exp.add_argument("--partitioner", required=True)
    exp.add_argument("--num-partitions", type=int, required=True, help="= the run's num-supernodes")
    exp.add_argument("--out", type=Path, required=True, help="DIR")
    exp.add_argument("--seed", type=int, default=None)
    exp.add_argument("--dirichlet-alpha", type=float, default=None)
    exp.add_argument("--classes-per-client", type=int, default=None)
    exp.add_argument("--min-partition-size", type=int, default=None)
    exp.add_argument("--graph-unseen-fraction", type=float, default=None)
    exp.add_argument("--graph-missing-classes", type=int, default=None)
    exp.add_argument("--graph-missing-rule", default=None, help="choices: `bouquet list keys`")
    exp.add_argument("--graph-train-fraction", type=float, default=None)
    exp.add_argument("--data-dir", default=None, help="raw data root (default: $BOUQUET_DATA)")
    exp.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    from bouquet.simulations.bench import add_arguments as bench_arguments  # noqa: PLC0415 (light)

    bench_arguments(sub.add_parser("bench", help="plain PyTorch loop vs Flower simulation, same local training",
                                   description="Plain PyTorch loop vs Flower simulation, same local training."))
    lst = sub.add_parser("list", help="the valid choices: methods, datasets, partitioners, presets, run-config keys")
    lst.add_argument("what", nargs="?", default="all", choices=("all", "methods", "datasets", "partitioners",
                                                                  "presets", "keys"))
    sub.add_parser("deploy-local", help="SuperLink + N SuperNodes on 127.0.0.1 (TLS and node auth opt-in: --tls --auth); see its --help")
    from bouquet.privacy import planner  # noqa: PLC0415 (light: dp-accounting is imported on use)

    planner.add_arguments(sub.add_parser("privacy", help="user-level DP: epsilon for a noise multiplier, or the "
                                         "noise multiplier for a target epsilon (ULS/ELS, PLD accountant)",
                                         description=planner.__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter))
    ns = parser.parse_args(argv)

    if ns.command == "run":
        return _run(ns)
    if ns.command == "list":
        return _list(ns.what)
    if ns.command == "reproduce":
        from bouquet.simulations.reproduce import PRESETS, reproduce  # noqa: PLC0415

        if ns.preset not in PRESETS:
            parser.error(f"unknown preset {ns.preset!r}; choose one of {', '.join(PRESETS)}")
        import os  # noqa: PLC0415

        from bouquet.preflight import PreflightError  # noqa: PLC0415

        split = lambda text: tuple(x for x in text.split(",") if x)  # noqa: E731
        try:
            overrides = _parse_overrides(ns.run_config)
        except PreflightError as exc:
            print(f"bouquet reproduce: error: {exc}", file=sys.stderr)
            return 2
        subset = {"quick": ns.quick, "seeds": ns.seeds, "datasets": split(ns.datasets), "methods": split(ns.methods),
                  "clients": tuple(int(k) for k in split(ns.clients)), "overrides": overrides}
        if ns.export_toml is not None:
            from bouquet.config import ConfigError  # noqa: PLC0415
            from bouquet.simulations.reproduce import export_run_configs  # noqa: PLC0415

            try:
                written = export_run_configs(ns.preset, ns.export_toml, **subset)
            except ConfigError as exc:
                parser.error(str(exc))
            print(f"[reproduce] {len(written)} run-config files in {ns.export_toml} (the command is in each file's header)")
            return 0
        if "data-dir" not in overrides and os.environ.get("BOUQUET_DATA"):
            # as `bouquet run` does: the runs' processes do not start in this shell's folder, and on a
            # Ray cluster its workers have the environment of `ray start`, not this shell's
            overrides["data-dir"] = os.path.abspath(os.path.expanduser(os.environ["BOUQUET_DATA"]))
        if not ns.rebuild and _no_ray_cluster("reproduce", ns.ray_address):
            return 2
        try:
            reproduce(ns.preset, out=ns.out, rebuild_only=ns.rebuild, ray_address=ns.ray_address,
                      supernode_per_client=ns.supernode_per_client, warm_ray=ns.warm_ray, **subset)
        except PreflightError as exc:
            print(f"bouquet reproduce: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\n[reproduce] interrupted: the sweep's own SuperLink and Ray head (if it started one) were "
                  "stopped; the same command continues it (finished runs are kept)", file=sys.stderr)
            return 130
        return 0
    if ns.command == "export-partitions":
        return _export(ns)
    if ns.command == "privacy":
        return planner.run(ns)

    from bouquet.simulations.bench import run as bench_run  # noqa: PLC0415

    return bench_run(ns)


if __name__ == "__main__":
    sys.exit(main())
