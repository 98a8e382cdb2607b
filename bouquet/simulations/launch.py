"""Run ``flwr run`` the way flwr 1.41 needs on this kind of machine, and check the result.

Why a wrapper: ``flwr run --stream`` exits 0 even when the run failed, the managed SuperLink
outlives the run and leaks its cwd and environment into later runs, and runtime dependency
installation would download a CUDA torch. This module isolates ``FLWR_HOME`` and ports,
launches from a neutral directory, streams the log, and reads the real status with
``flwr ls``. Tests, benchmarks and ``bouquet run`` all go through it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_HOME = REPO / ".flwr"
DEFAULT_PORT = 39391
RUN_STARTED = re.compile(r"Successfully started run (\d+)")  # what `flwr run` prints once the run exists


@dataclass(frozen=True)
class LaunchResult:
    run_id: int | None
    status: str
    output: str

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "") + "'"


def run_config_arg(overrides: dict[str, Any]) -> str:
    return " ".join(f"{k}={toml_value(v)}" for k, v in overrides.items())


def flwr_env(home: Path, port: int) -> dict[str, str]:
    """An environment whose managed SuperLink is private to ``home`` and ``port``."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.toml"
    if not config.exists():
        config.write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local-in-memory:"\n')
    return {
        **os.environ,
        # the flwr / flower-superlink of this interpreter, also when its venv is not activated
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(port + 2),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "PYTHONUNBUFFERED": "1",
    }


def _flwr() -> str:
    candidate = Path(sys.executable).with_name("flwr")
    return str(candidate) if candidate.exists() else "flwr"


def launch(
    run_config: dict[str, Any] | None = None,
    *,
    num_supernodes: int = 3,
    cpus_per_client: float = 1,
    gpus_per_client: float = 0.0,
    app_dir: Path = REPO,
    home: Path = DEFAULT_HOME,
    port: int = DEFAULT_PORT,
    echo: bool = True,
    timeout: float | None = None,
    keep_superlink: bool = False,
) -> LaunchResult:
    """``flwr run <app> --stream`` with overrides; returns the run's real final status."""
    env = flwr_env(home, port)
    stop_superlink(port, unless_home=home)  # never reuse a SuperLink of another home (stale env/code)
    cwd = home / "cwd"  # neutral: the managed SuperLink's cwd ends up on the actors' sys.path
    cwd.mkdir(parents=True, exist_ok=True)
    federation = f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus_per_client} client-resources-num-gpus={gpus_per_client}"
    cmd = [_flwr(), "run", str(app_dir), "--stream", "--federation-config", federation]
    if run_config:
        cmd += ["--run-config", run_config_arg(run_config)]
    lines: list[str] = []
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    run_id = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
            if run_id is None and (m := RUN_STARTED.search(line)):
                run_id = int(m.group(1))
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                break
        proc.wait()
        status = run_status(run_id, env, cwd) if run_id is not None else "not-started"
    finally:
        if proc.poll() is None:
            proc.kill()
        if not keep_superlink:
            stop_superlink(port)
    return LaunchResult(run_id, status, "".join(lines))


def run_status(run_id: int, env: dict[str, str], cwd: Path) -> str:
    out = subprocess.run(
        [_flwr(), "ls", "--run-id", str(run_id), "--format", "json"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
    )
    try:
        return str(json.loads(out.stdout)["runs"][0]["status"])
    except (ValueError, KeyError, IndexError):
        return f"unknown ({out.stdout.strip()[:200]} {out.stderr.strip()[:200]})"


def stop_superlink(port: int, grace_s: float = 5.0, unless_home: Path | None = None) -> None:
    """Stop the managed SuperLink listening on ``port`` (flwr has no command for it);
    with ``unless_home``, leave it running if it belongs to that FLWR_HOME.

    flower-superlink ignores SIGTERM; SIGINT shuts it down cleanly, SIGKILL if it lingers."""
    import psutil  # noqa: PLC0415 (ships with ray)

    procs = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port in (port, port + 2) and conn.status == psutil.CONN_LISTEN and conn.pid:
            try:
                proc = psutil.Process(conn.pid)
                if unless_home is not None and str(Path(unless_home) / "local-superlink") in " ".join(proc.cmdline()):
                    continue
                procs += [*proc.children(recursive=True), proc]
            except psutil.NoSuchProcess:
                pass
    for proc in procs:
        try:
            proc.send_signal(signal.SIGINT)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
