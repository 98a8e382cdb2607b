"""Run ``flwr run`` the way flwr 1.41 needs on this kind of machine, and check the result.

Why a wrapper: ``flwr run --stream`` exits 0 even when the run failed; Flower's managed
SuperLink sits on one fixed port per machine, outlives the run and leaks its cwd and
environment into later runs; runtime dependency installation would download a CUDA torch.
So every ``bouquet run`` (or one ``bouquet reproduce`` sweep) starts a private SuperLink: its
own Flower home in a fresh temporary folder, a free port on 127.0.0.1, a neutral cwd; runs are
submitted to it by address, their real status is read from its Control API (what ``flwr ls``
prints), and at the end only that SuperLink and its own descendants are stopped. The app Flower
bundles is a copy of ``pyproject.toml`` and the ``bouquet`` package staged once per SuperLink:
``flwr run`` on the repository itself walks every file under it (the venv, results) before
filtering, seconds per run, and a sweep's runs all use the code as it was when the sweep began. Two runs on one machine (two terminals,
two users, a test suite beside an experiment) therefore never meet.

With ``ray_address`` the simulation joins an existing Ray cluster instead of starting its own
Ray: flwr 1.41's federation config has no field for it (its Ray ``init-args`` are only num-cpus,
num-gpus, logging-level and log-to-driver, and ``ray.init`` gets no address), so the address goes
to the SuperLink's environment as ``RAY_ADDRESS``, which ``ray.init()`` in the simulation
process (a child of that SuperLink) honours.
"""

from __future__ import annotations

import json
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bouquet import provenance

REPO = Path(__file__).resolve().parents[2]
CONNECTION = "bouquet"  # the connection name in the private Flower home's config.toml
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LaunchResult:
    run_id: int | None
    status: str
    output: str
    details: str = ""  # Flower's status details (the exception of a failed run)

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"

    @property
    def reason(self) -> str:
        """One line saying why a run failed: Bouquet's own error line, else Flower's details."""
        for line in reversed(self.output.splitlines()):
            if "[bouquet] error:" in line:
                return line.split("[bouquet] error:", 1)[1].strip()
        return self.details or self.status


def _bin(name: str) -> str:
    """The flwr / flower-superlink of this interpreter, also when its venv is not activated."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


# Flower calls home unless told not to: an update check when a process starts, and a telemetry event
# (to telemetry.flower.ai) when any of its processes starts and ends, every ClientApp included.
# Every Flower process Bouquet starts gets both off; traffic stays on 127.0.0.1.
NO_CALL_HOME = {"FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0"}


def flwr_env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        **NO_CALL_HOME,
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "PYTHONUNBUFFERED": "1",
        # the SuperExec looks for a submitted run every second by default: 0.2 s takes 0.4 s off a
        # run's start on average, for 5 small polls a second
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": os.environ.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2"),
    }


def free_port() -> int:
    """A port nobody listens on now (the OS picks it); the SuperLink binds it right after,
    and a lost race is retried with another port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_ray_address(text: str) -> str:
    """A Ray cluster's GCS address as ``ray start --head`` prints it: HOST:PORT (an IPv6 host in
    brackets). ValueError, naming what is wrong, for anything else (``ray://`` client
    addresses and ``auto`` included: the run must join exactly the cluster named)."""
    address = text.strip()
    form = "the Ray head's HOST:PORT, as `ray start --head --port PORT` prints it, e.g. 10.0.0.5:6379"
    if "://" in address or address == "auto":
        raise ValueError(f"{text!r}: Ray Client (ray://) addresses and 'auto' are not supported; give {form}")
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})", address)
    if match is None:
        raise ValueError(f"{text!r} is not HOST:PORT ({form})")
    host, port = match.group(1), int(match.group(2))
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{text!r}: {host} is not an IPv6 address ({form})") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is not in 1..65535")
    return address


def check_ray_cluster(address: str, timeout: float = 3.0) -> None:
    """Something listens at the address (Ray itself would retry for a minute, then fail the run)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConnectionError(f"no Ray head answers at {address} ({exc.strerror or exc}); start one with "
                              "`ray start --head --port PORT` and pass the address it prints") from None


class RayNode:
    """One Ray node this process starts with ``ray start --block`` (node address 127.0.0.1) and
    alone stops: a head (``address=None``; its GCS on a free port) or a worker joining ``address``.

    Why: a sweep's runs each start and stop a Ray of their own inside Flower (Ray's daemons, then
    its shutdown: about 2 s a run here, docs/results/bench-2026-12-05b); on one head kept up for
    the sweep only the actors are new each run. Its own session, cwd and temp dir (under
    ``$RAY_TMPDIR``, else /tmp), no dashboard; ``stop`` signals only its own process group and
    tree, never ``ray stop`` (which would stop every Ray of this user, e.g. another sweep's)."""

    def __init__(self, *, num_cpus: int, address: str | None = None, temp_dir: Path | None = None,
                 env: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> None:
        self.own_tmp = temp_dir is None
        if temp_dir is None:  # short: Ray's socket paths must fit 107 bytes
            temp_dir = Path(tempfile.mkdtemp(prefix="bqray-", dir=os.environ.get("RAY_TMPDIR") or "/tmp"))
        self.temp_dir = temp_dir
        self.log = self.temp_dir.with_name(self.temp_dir.name + ".log")
        self.address = address
        self.num_cpus, self.env, self.extra = int(num_cpus), env, extra
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> RayNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def environment(self) -> dict[str, str]:
        """The node's environment, which its workers (the simulation's actors) inherit."""
        env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", **NO_CALL_HOME, **(self.env or {})}
        env.pop("RAY_ADDRESS", None)
        return env

    def start(self, timeout: float = 120.0) -> str:
        """Starts the node; returns the cluster's address once the node says it is up. Whatever
        stops the start (a failure, Ctrl-C) stops what it started."""
        args = [_bin("ray"), "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                f"--num-cpus={self.num_cpus}", f"--dashboard-agent-listen-port={free_port()}",
                f"--temp-dir={self.temp_dir / 'ray'}", *self.extra]
        if self.address is None:
            self.address = f"127.0.0.1:{free_port()}"
            args += ["--head", f"--port={self.address.rsplit(':', 1)[1]}", f"--ray-client-server-port={free_port()}",
                     "--include-dashboard=false"]
        else:
            args.append(f"--address={self.address}")
        try:
            with self.log.open("wb") as out:
                self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.environment(),
                                             cwd=self.temp_dir,
                                             start_new_session=True)
            deadline = time.monotonic() + timeout
            while "Ray runtime started" not in self.log.read_text(errors="replace"):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"`ray start` did not come up:\n{self.log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        return self.address

    def stop(self, grace_s: float = 20.0, keep_logs: bool = False) -> None:
        """SIGTERM to the node's process group, then SIGKILL to the group and to whatever of its
        process tree (recorded before) is left, also when interrupted while waiting.
        ``keep_logs``: leave the temp dir (Ray's logs) in place."""
        import psutil  # noqa: PLC0415

        if self.proc is not None:
            try:
                root = psutil.Process(self.proc.pid)
                tree = [*root.children(recursive=True), root]
            except psutil.NoSuchProcess:
                tree = []
            try:
                self._signal_group(signal.SIGTERM)
                psutil.wait_procs(tree, timeout=grace_s)
            finally:
                self._signal_group(signal.SIGKILL)
                for proc in tree:
                    try:
                        proc.kill()
                    except psutil.NoSuchProcess:
                        pass
                self.proc.wait(timeout=30)
        if self.own_tmp and not keep_logs:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.log.unlink(missing_ok=True)

    def _signal_group(self, sig: int) -> None:
        try:  # its own session: the group is the node's (also its daemons once `ray start` has exited)
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class SuperLink:
    """A simulation SuperLink this process starts on a free port and alone stops.

    Use as a context manager; ``stop`` signals only the process started here and its own
    descendants (the SuperExec, the simulation, Ray), never a SuperLink found on a port.
    ``ray_address``: its simulations join that Ray cluster (``RAY_ADDRESS``) instead of starting
    a Ray of their own; stopping the SuperLink then leaves that cluster running."""

    def __init__(self, *, say=print, env: dict[str, str] | None = None, ray_address: str | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="bouquet-flwr-"))
        self.cwd = self.home / "cwd"  # neutral: the SuperLink's cwd ends up on the actors' sys.path
        self.cwd.mkdir()
        self.log = self.home / "superlink.log"
        self.env = {**flwr_env(self.home), **(env or {})}  # env: e.g. BOUQUET_ADVERSARY for attack tests
        self.ray_address = ray_address
        if ray_address:
            self.env["RAY_ADDRESS"] = parse_ray_address(ray_address)
        else:  # a RAY_ADDRESS left in the shell must not silently send the run to some cluster
            self.env.pop("RAY_ADDRESS", None)
        self.say = say
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._runs = 0
        self._apps: dict[Path, Path] = {}

    def __enter__(self) -> SuperLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> None:
        import httpx  # noqa: PLC0415 (a flwr dependency)

        for _ in range(attempts):
            port = free_port()
            self.say(f"[bouquet] starting a private SuperLink on 127.0.0.1:{port} (Flower home {self.home})")
            with (self.home / "superlink.out").open("ab") as out:
                self.proc = subprocess.Popen(
                    [_bin("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
                     "--host", "127.0.0.1", "--port", str(port), "--log-file", str(self.log),
                     "--disable-runtime-dependency-installation"],
                    env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C reaches bouquet, which then stops it cleanly
                )
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).is_success:
                        self.port = port
                        (self.home / "config.toml").write_text(
                            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                            f'address = "127.0.0.1:{port}"\ninsecure = true\n')
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            self._terminate()  # exited (port taken meanwhile) or never healthy: try another port
        raise RuntimeError(f"could not start a SuperLink; see {self.home / 'superlink.out'}")

    def _terminate(self, grace_s: float = 10.0) -> None:
        """SIGINT (flower-superlink ignores SIGTERM) to it, then SIGKILL to whatever of its
        own process tree is left."""
        import psutil  # noqa: PLC0415

        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            root = psutil.Process(self.proc.pid)
            tree = [*root.children(recursive=True), root]
        except psutil.NoSuchProcess:
            return
        root.send_signal(signal.SIGINT)
        psutil.wait_procs([root], timeout=grace_s)
        for proc in tree:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait()

    def stop(self) -> None:
        self._terminate()
        shutil.rmtree(self.home, ignore_errors=True)

    # --- runs ---------------------------------------------------------------------------
    def flwr(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return subprocess.run([_bin("flwr"), *args], env=self.env, cwd=self.cwd, capture_output=True,
                              text=True, **kw)

    def status(self, run_id: int) -> tuple[str, str]:
        """(status, details) of a run, from the Control API in-process; ``flwr ls`` if that fails."""
        try:
            return control_status(self.port, run_id)
        except Exception:  # noqa: BLE001 (an API change in a later flwr: the CLI still says it)
            return run_status(run_id, self.env, self.cwd)

    def app(self, app_dir: Path) -> Path:
        """``app_dir``'s Flower app staged once for this SuperLink (see the module docstring)."""
        if app_dir not in self._apps:
            self._apps[app_dir] = stage_app(app_dir, self.home / f"app-{len(self._apps)}")
        return self._apps[app_dir]

    def run_config_file(self, run_config: dict[str, Any]) -> Path:
        self._runs += 1
        return write_run_config(self.home / f"run-config-{self._runs}.toml", run_config)


APP_FILES = ("pyproject.toml", "README.md")  # beside the package: all a ServerApp/ClientApp reads


def stage_app(app_dir: Path, dest: Path) -> Path:
    """The files a FAB of ``app_dir`` needs (``APP_FILES`` and its top-level package folders,
    without caches), copied to ``dest``."""
    import tomllib  # noqa: PLC0415

    app_dir = Path(app_dir).resolve()
    components = tomllib.loads((app_dir / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"]
    packages = sorted({ref.split(":")[0].split(".")[0] for ref in components.values()})
    dest.mkdir(parents=True)
    for name in APP_FILES:
        if (app_dir / name).is_file():
            shutil.copy2(app_dir / name, dest / name)
    for package in packages:
        shutil.copytree(app_dir / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        provenance.stamp(dest / package, app_dir)  # the copy is no checkout: it says which commit it is
    return dest


def control_status(port: int | None, run_id: int) -> tuple[str, str]:
    """(status, details) of ``run_id`` from the SuperLink's Control API, as ``flwr ls`` shows them."""
    from flwr.cli.run_utils import format_runs  # noqa: PLC0415
    from flwr.common.serde import run_from_proto  # noqa: PLC0415
    from flwr.proto.control_pb2 import ListRunsRequest  # noqa: PLC0415
    from flwr.supercore.control import ControlHttpClient  # noqa: PLC0415

    client = ControlHttpClient.from_server_address(server_address=f"127.0.0.1:{port}", insecure=True,
                                                   root_certificates=None, interceptors=[])
    try:
        res = client.ListRuns(ListRunsRequest(run_id=int(run_id)))
    finally:
        client.close()
    row = format_runs([run_from_proto(proto) for proto in res.run_dict.values()], res.now)[0]
    details = str(row.details or "")
    return str(row.status_text), "" if details == "N/A" else details


def run_status(run_id: int, env: dict[str, str], cwd: Path) -> tuple[str, str]:
    """(status, details) as ``flwr ls`` reports them (``--stream`` exits 0 even on failure)."""
    out = subprocess.run([_bin("flwr"), "ls", "--run-id", str(run_id), "--format", "json"], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    try:
        run = json.loads(out.stdout)["runs"][0]
        details = str(run.get("status-details", ""))
        return str(run["status"]), "" if details == "N/A" else details
    except (ValueError, KeyError, IndexError):
        return f"unknown ({out.stdout.strip()[:200]} {out.stderr.strip()[:200]})", ""


def write_run_config(path: Path, run_config: dict[str, Any]) -> Path:
    """The overrides as a TOML file: Flower parses it itself, so no value is re-quoted."""
    import tomli_w  # noqa: PLC0415 (a flwr dependency)

    path.write_text(tomli_w.dumps(run_config))
    return path


def started_run_id(output: str) -> int | None:
    """The run id `flwr run` prints once the SuperLink accepted the run."""
    for line in output.splitlines():
        if "Successfully started run" in line:
            return int(line.rsplit("run", 1)[1].split()[0])
    return None


def federation_config(num_supernodes: int, cpus_per_client: int, gpus_per_client: float, verbose: bool) -> str:
    parts = [f"num-supernodes={int(num_supernodes)}", f"client-resources-num-cpus={int(cpus_per_client)}",
             f"client-resources-num-gpus={float(gpus_per_client)!r}"]
    return " ".join(parts + (["verbose=true"] if verbose else []))


def launch(
    run_config: dict[str, Any] | None = None,
    *,
    num_supernodes: int = 3,
    cpus_per_client: int = 1,
    gpus_per_client: float = 0.0,
    app_dir: Path = REPO,
    echo: bool | str = True,
    timeout: float | None = None,
    superlink: SuperLink | None = None,
    verbose: bool = False,
    env: dict[str, str] | None = None,
    ray_address: str | None = None,
) -> LaunchResult:
    """``flwr run <app> --stream`` with overrides; returns the run's real final status.

    ``echo``: True prints Flower's log, ``"bouquet"`` only Bouquet's own lines, False nothing.
    Without ``superlink`` a private one is started for this run and stopped after it.
    ``ray_address``: run on that existing Ray cluster (a given ``superlink`` must carry it)."""
    say = print if echo else (lambda *_: None)
    if superlink is None:
        with SuperLink(say=say, env=env, ray_address=ray_address) as link:
            return launch(run_config, num_supernodes=num_supernodes, cpus_per_client=cpus_per_client,
                          gpus_per_client=gpus_per_client, app_dir=app_dir, echo=echo, timeout=timeout,
                          superlink=link, verbose=verbose, ray_address=ray_address)
    if ray_address and superlink.ray_address != ray_address:
        raise ValueError(f"ray_address={ray_address!r} but the given SuperLink runs on {superlink.ray_address!r}")
    cmd = [_bin("flwr"), "run", str(superlink.app(app_dir)), CONNECTION, "--stream", "--federation-config",
           federation_config(num_supernodes, cpus_per_client, gpus_per_client, verbose)]
    run_config = {"federation-size": num_supernodes, **(run_config or {})}  # the nodes' claims are checked against it
    if run_config:
        cmd += ["--run-config", str(superlink.run_config_file(run_config))]
    say(f"[bouquet] submitting the run ({num_supernodes} simulated clients); Ray starts the client "
        "processes, so the first round can take a minute to appear"
        + (f"; Flower's Ray joins the Ray cluster at {superlink.ray_address}" if superlink.ray_address else ""))
    lines: list[str] = []
    proc = subprocess.Popen(cmd, env=superlink.env, cwd=superlink.cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    run_id = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo is True or (echo and ("[bouquet]" in line or "ERROR" in line)):
                sys.stdout.write(line)
                sys.stdout.flush()
            if run_id is None:
                run_id = started_run_id(line)
            if deadline is not None and time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if run_id is None:
        return LaunchResult(None, "not-started", "".join(lines), _last_error(lines))
    if deadline is not None and time.monotonic() > deadline:
        superlink.flwr("stop", str(run_id), timeout=60)
        return LaunchResult(run_id, "timed-out", "".join(lines), f"no result within {timeout:.0f} s")
    status, details = superlink.status(run_id)
    return LaunchResult(run_id, status, "".join(lines), details)


def _last_error(lines: list[str]) -> str:
    """What `flwr run` said before it gave up (e.g. an invalid run config)."""
    text = [ln.strip() for ln in lines if ln.strip() and not set(ln.strip()) <= set("─╭╮╰╯│ ")]
    return text[-1].strip("│ ") if text else "flwr run printed nothing"
