"""``bouquet`` command line: run an experiment through Flower simulation, or benchmark."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parse_overrides(text: str) -> dict[str, object]:
    """``"method='fedprox' num-server-rounds=5"`` -> dict, using TOML value syntax."""
    import tomllib  # noqa: PLC0415

    return tomllib.loads("\n".join(f'"{k}" = {v}' for k, v in (p.split("=", 1) for p in text.split()))) if text else {}


def _export(ns: argparse.Namespace) -> int:
    """Validate the settings as a run would (same keys, same DataSpec), then write."""
    import json  # noqa: PLC0415

    from bouquet.config import RunConfig, data_spec  # noqa: PLC0415
    from bouquet.datasets import DataFileError, export_partitions  # noqa: PLC0415

    keys = ("seed", "dirichlet_alpha", "classes_per_client", "min_partition_size",
            "graph_unseen_fraction", "graph_missing_classes", "data_dir")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["deploy-local"]:  # its own parser (bouquet.deploy.local)
        from bouquet.deploy.local import main as deploy_main  # noqa: PLC0415

        return deploy_main(argv[1:])
    parser = argparse.ArgumentParser(prog="bouquet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one federated experiment via `flwr run` (simulation)")
    run.add_argument("--run-config", default="", help="overrides, e.g. \"method='fedprox' dataset='digits'\"")
    run.add_argument("--num-supernodes", type=int, default=3, help="number of (virtual) clients")
    run.add_argument("--cpus-per-client", type=float, default=1)
    run.add_argument("--gpus-per-client", type=float, default=0.0)
    run.add_argument("--keep-superlink", action="store_true", help="leave the managed SuperLink running")
    rep = sub.add_parser("reproduce", help="a paper's comparison as a sweep of Flower simulations")
    rep.add_argument("preset", help="e.g. fedlog")
    rep.add_argument("--quick", action="store_true", help="the small version (minutes)")
    rep.add_argument("--seeds", type=_seeds, default=None,
                     help="N: seeds 0..N-1; a comma list (e.g. 1,2 or 2,): exactly those seeds")
    rep.add_argument("--out", type=Path, default=None, help="results folder")
    rep.add_argument("--datasets", default="", help="comma-separated subset")
    rep.add_argument("--methods", default="", help="comma-separated subset")
    rep.add_argument("--clients", default="", help="comma-separated subset, e.g. 3,5")
    rep.add_argument("--run-config", default="", help="overrides for every run, e.g. \"local-epochs=5\"")
    rep.add_argument("--rebuild", action="store_true", help="only rebuild results.csv/table.md/plots from --out")
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
    exp.add_argument("--data-dir", default=None, help="raw data root (default: $BOUQUET_DATA)")
    exp.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    bench = sub.add_parser("bench", help="plain PyTorch loop vs Flower simulation, same local training")
    bench.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("deploy-local", help="SuperLink + N SuperNodes on 127.0.0.1 (TLS, node auth); see its --help")
    ns = parser.parse_args(argv)

    if ns.command == "run":
        import os  # noqa: PLC0415

        from bouquet.simulations.launch import launch  # noqa: PLC0415

        overrides = _parse_overrides(ns.run_config)
        # Explicit paths: a SuperLink's environment may not be this shell's.
        for key, env in (("data-dir", "BOUQUET_DATA"), ("output-dir", "BOUQUET_OUTPUT")):
            if key not in overrides and os.environ.get(env):
                overrides[key] = os.path.abspath(os.environ[env])
        result = launch(
            overrides,
            num_supernodes=ns.num_supernodes,
            cpus_per_client=ns.cpus_per_client,
            gpus_per_client=ns.gpus_per_client,
            keep_superlink=ns.keep_superlink,
        )
        print(f"[bouquet] run {result.run_id}: {result.status}")
        return 0 if result.ok else 1
    if ns.command == "reproduce":
        from bouquet.simulations.reproduce import PRESETS, reproduce  # noqa: PLC0415

        if ns.preset not in PRESETS:
            parser.error(f"unknown preset {ns.preset!r}; choose one of {', '.join(PRESETS)}")
        split = lambda text: tuple(x for x in text.split(",") if x)  # noqa: E731
        reproduce(ns.preset, quick=ns.quick, seeds=ns.seeds, out=ns.out, datasets=split(ns.datasets),
                  methods=split(ns.methods), clients=tuple(int(k) for k in split(ns.clients)),
                  overrides=_parse_overrides(ns.run_config), rebuild_only=ns.rebuild)
        return 0
    if ns.command == "export-partitions":
        return _export(ns)

    from bouquet.simulations.bench import main as bench_main  # noqa: PLC0415

    return bench_main(ns.args)


if __name__ == "__main__":
    sys.exit(main())
