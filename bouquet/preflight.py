"""What a run needs, checked in the ``bouquet`` CLI before a SuperLink or Ray starts.

A misspelled key, a wrong type, a missing data file or a federation this machine cannot
host would otherwise surface 30-45 s later at the bottom of Flower tracebacks; here each is
one :class:`PreflightError` whose message names the key, file or resource, within a second
or two. The ServerApp runs the same config and data checks again (the ``flwr run`` path).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bouquet.config import ConfigError, RunConfig, data_spec

_KEY = re.compile(r"(\S+?)=")  # a key as Flower's parse_config_args reads it


class PreflightError(ValueError):
    """A run that cannot start; the message names what is wrong and how to fix it."""


def parse_overrides(texts: Sequence[str]) -> dict[str, Any]:
    """``--run-config`` strings -> dict with Flower's own parser (TOML values, quotes kept);
    a later string overrides an earlier one, a key twice in one string is an error."""
    import click  # noqa: PLC0415 (a flwr dependency)
    from flwr.common.config import parse_config_args  # noqa: PLC0415

    out: dict[str, Any] = {}
    for text in texts:
        if text.strip().endswith(".toml"):
            if not Path(text).expanduser().is_file():
                raise PreflightError(f"--run-config {text}: no such file")
            out.update(parse_config_args([text.strip()]))
            continue
        keys = _KEY.findall(text)
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise PreflightError(f"run-config key {twice[0]!r} is given twice in {text!r}")
        try:
            out.update(parse_config_args([text]))
        except click.ClickException as exc:
            raise PreflightError(f"cannot parse --run-config {text!r}: write key=value pairs separated by "
                                 "spaces, strings in quotes (e.g. \"method='fedprox' num-server-rounds=5\")") from exc
        if not keys and text.strip():
            raise PreflightError(f"cannot parse --run-config {text!r}: expected key=value pairs")
    return out


def check_data(dataset: str, data_dir: str = "") -> Path:
    """Every file the dataset needs is in the data root with its pinned sha256 (one message
    lists every missing file; nothing is downloaded unless BOUQUET_DOWNLOAD=1)."""
    from bouquet.datasets import CHECKSUMS, DataFileError, data_root, dataset_files  # noqa: PLC0415

    root = data_root(data_dir)
    if dataset in CHECKSUMS:  # the others ship with scikit-learn
        try:
            dataset_files(dataset, root)
        except DataFileError as exc:
            raise PreflightError(f"dataset {dataset!r}: {exc}") from None
    return root


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's
    ``--cpus``), as Ray counts them when it starts on its own."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(int(int(quota) / int(period)), 1))
    except (OSError, ValueError):  # no cgroup v2 file, or one we cannot read: no quota known
        pass
    return cpus


def slots(cpus_per_client: Any = 1) -> int:
    """Clients Ray can train at once here: usable cores // cores per client (at least 1)."""
    return max(usable_cpus() // cpus_per_client, 1) if isinstance(cpus_per_client, int) and cpus_per_client > 0 else 1


def check_federation(num_supernodes: int, cpus_per_client: Any, gpus_per_client: float) -> None:
    """The simulated federation fits this machine (Ray would otherwise wait or fail mid-run)."""
    if not isinstance(num_supernodes, int) or num_supernodes < 1:
        raise PreflightError(f"--num-supernodes must be an integer >= 1, got {num_supernodes!r}")
    cpus = usable_cpus()
    if not isinstance(cpus_per_client, int) or not 1 <= cpus_per_client <= cpus:
        raise PreflightError(f"--cpus-per-client must be an integer in 1..{cpus} (this machine has {cpus} "
                             f"usable CPU cores), got {cpus_per_client!r}")
    if not gpus_per_client >= 0:
        raise PreflightError(f"--gpus-per-client must be >= 0, got {gpus_per_client!r}")
    if gpus_per_client > 0:
        import torch  # noqa: PLC0415

        gpus = torch.cuda.device_count()
        if gpus == 0:
            raise PreflightError(f"--gpus-per-client {gpus_per_client:g}: this machine has no CUDA GPU that "
                                 "torch can see; leave it at 0 to train on the CPU")
        if gpus_per_client > gpus:
            raise PreflightError(f"--gpus-per-client {gpus_per_client:g} is more than the {gpus} GPU(s) here")
    from bouquet.device import device  # noqa: PLC0415 (torch)

    try:
        device()  # BOUQUET_DEVICE: a bad value stops the run here, not in every client at round 1
    except ValueError as exc:
        raise PreflightError(str(exc)) from None


def check_run(overrides: dict[str, Any], num_supernodes: int, cpus_per_client: Any = 1,
              gpus_per_client: float = 0.0) -> RunConfig:
    """Config keys and values, the dataset/partitioner/federation combination, the data files,
    the output folder and the machine: everything a run needs, before it starts."""
    from bouquet import checkpoint  # noqa: PLC0415
    from bouquet.datasets import check_spec  # noqa: PLC0415
    from bouquet.results import output_root  # noqa: PLC0415

    check_federation(num_supernodes, cpus_per_client, gpus_per_client)
    try:
        cfg = RunConfig.from_run_config(overrides)
    except ConfigError as exc:
        raise PreflightError(str(exc)) from None
    clients = cfg.num_clients or num_supernodes  # logical clients (bouquet.multiplex), else one per SuperNode
    try:
        check_spec(data_spec(cfg, clients))
        cfg.check_federation(clients)
    except ValueError as exc:
        raise PreflightError(str(exc)) from None
    check_data(cfg.dataset, cfg.data_dir)
    if cfg.resume_from and not (Path(cfg.resume_from) / checkpoint.FOLDER / "round.json").is_file():
        raise PreflightError(f"resume-from={cfg.resume_from!r}: no {checkpoint.FOLDER}/round.json there "
                             "(a run folder that finished at least one round)")
    out = output_root(cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreflightError(f"output-dir {str(out)!r} cannot be created: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise PreflightError(f"output-dir {str(out)!r} is not writable")
    return cfg
