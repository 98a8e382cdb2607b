"""``bouquet deploy-local``: one SuperLink and N SuperNodes on 127.0.0.1, the process twin of
the docker-compose demo (``docker/``) and what CI exercises.

Everything lives in one folder (default ``.bouquet-deploy/``): ``certificates/`` (openssl CA
and a server certificate whose SANs cover localhost/127.0.0.1/::1), ``keys/`` (one EC P-384
OpenSSH key pair per SuperNode, as Flower's node authentication wants), ``flwr-home/config.toml``
(the connection ``bouquet-local``, so your own ``~/.flwr`` is untouched), ``logs/`` and
``processes.json`` (what ``--stop`` kills). With ``--auth`` the SuperLink only admits
SuperNodes whose public keys were registered with ``flwr supernode register`` (done here);
Flower requires TLS for that.

Two addresses: the SuperLink itself listens on loopback (the operator's ``flwr`` CLI: runs,
node-key registration), and institutions get only the Fleet gateway's address
(``bouquet.deploy.gateway``), which forwards the Fleet API and refuses the Control API.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bouquet.simulations.launch import NO_CALL_HOME

CONNECTION = "bouquet-local"
DEFAULT_DIR = Path(".bouquet-deploy")


def _bin(name: str) -> str:
    """The Flower executable next to this interpreter (works without an activated venv)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def make_certificates(folder: Path) -> dict[str, Path]:
    """A private CA and a server certificate signed by it (SANs: localhost, 127.0.0.1, ::1)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {n: folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.pem", "san.ext")}
    if files["server.pem"].exists() and files["ca.crt"].exists():
        return files
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files["ca.key"]),
          "-out", str(files["ca.crt"]), "-days", "365", "-subj", "/O=Bouquet local CA"])
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files["server.key"]),
          "-out", str(files["server.csr"]), "-subj", "/O=Bouquet/CN=localhost"])
    files["san.ext"].write_text("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n")
    _run(["openssl", "x509", "-req", "-in", str(files["server.csr"]), "-CA", str(files["ca.crt"]),
          "-CAkey", str(files["ca.key"]), "-CAcreateserial", "-out", str(files["server.pem"]), "-days", "365",
          "-sha256", "-extfile", str(files["san.ext"])])
    return files


def make_node_key(folder: Path, name: str) -> Path:
    """An EC P-384 key pair in OpenSSH format (``name`` and ``name.pub``)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / name
    if not key.exists():
        _run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(key)])
    return key


def write_connection(home: Path, port: int, ca: Path | None) -> Path:
    """``FLWR_HOME/config.toml`` with the ``bouquet-local`` connection (absolute CA path)."""
    home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{ca.resolve()}"' if ca is not None else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\n{security}\n')
    return home


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass
class Deployment:
    """What ``deploy-local`` started; enough to print the run command and to stop it."""

    folder: Path
    port: int  # the Fleet gateway: the address institutions' SuperNodes connect to
    tls: bool
    auth: bool
    pids: dict[str, int] = field(default_factory=dict)
    link_port: int = 0  # the SuperLink on loopback: the operator's Control API
    warm: bool = True  # ClientApp processes forked from a warm zygote (False: Flower's own SuperExec)
    idle_poll: float = 0.2  # warm: a SuperNode's longest wait between polls (Flower's: 3 s idle, 0.5 s for a reply)

    @property
    def num_nodes(self) -> int:
        return sum(1 for name in self.pids if name.startswith("supernode-") and not name.endswith("-superexec"))

    @property
    def home(self) -> Path:
        return self.folder / "flwr-home"

    def env(self) -> dict[str, str]:
        return {**os.environ, "FLWR_HOME": str(self.home.resolve()), **NO_CALL_HOME,
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "PYTHONUNBUFFERED": "1",
                # SuperExec asks its SuperNode for a task every 1 s by default; 0.1 s costs nothing here
                "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": os.environ.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1"),
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}

    def save(self) -> None:
        (self.folder / "processes.json").write_text(json.dumps(
            {"port": self.port, "link_port": self.link_port, "tls": self.tls, "auth": self.auth,
             "warm": self.warm, "idle_poll": self.idle_poll, "pids": self.pids}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> Deployment:
        meta = json.loads((folder / "processes.json").read_text())
        return cls(folder, meta["port"], meta["tls"], meta["auth"], {k: int(v) for k, v in meta["pids"].items()},
                   meta.get("link_port", 0), meta.get("warm", True), meta.get("idle_poll", 3.0))

    def run_command(self, app: Path, partitions: Path | None = None) -> str:
        """The next step to print; with exported partitions, the run config they were exported
        with (the ClientApps refuse any other)."""
        config: dict[str, object] = {"method": "fedavg", "num-server-rounds": 3, "federation-size": self.num_nodes}
        if partitions is not None:
            config |= exported_run_config(partitions / "partition_0")
        text = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in config.items())
        return (f"FLWR_HOME={self.home.resolve()} FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 "
                f"flwr run {app} {CONNECTION} --stream --run-config \"{text}\"")


def exported_run_config(folder: Path) -> dict[str, object]:
    """The run-config keys (dataset, partitioner, and each setting that is not the default) a
    run needs to match the partition exported into ``folder``."""
    from bouquet.config import RunConfig  # noqa: PLC0415
    from bouquet.datasets.exported import MANIFEST, SPEC_KEYS  # noqa: PLC0415

    spec = json.loads((folder / MANIFEST).read_text())["spec"]
    defaults = RunConfig().to_run_config()
    keys = {k: v for k, v in SPEC_KEYS.items() if k != "num_partitions"}
    return {key: spec[field] for field, key in keys.items()
            if key in ("dataset", "partitioner") or spec[field] != defaults[key]}


def _spawn(dep: Deployment, name: str, cmd: list[str]) -> subprocess.Popen:
    logs = dep.folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = (logs / f"{name}.log").open("w")
    # a new session per process, so Ctrl-C in the terminal reaches only us and we stop them in order
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dep.env(), cwd=dep.folder,
                            start_new_session=True)
    dep.pids[name] = proc.pid
    dep.save()
    return proc


def start_superlink(dep: Deployment, certs: dict[str, Path] | None) -> None:
    """The SuperLink on loopback only (``--host 127.0.0.1``), then the Fleet gateway on the
    institutions' address in front of it."""
    cmd = [_bin("flower-superlink"), "--host", "127.0.0.1", "--port", str(dep.link_port),
           "--disable-runtime-dependency-installation"]
    if certs is None:
        cmd.append("--insecure")
    else:
        cmd += ["--ssl-ca-certfile", str(certs["ca.crt"].resolve()), "--ssl-certfile", str(certs["server.pem"].resolve()),
                "--ssl-keyfile", str(certs["server.key"].resolve())]
    if dep.auth:
        cmd.append("--enable-supernode-auth")
    _spawn(dep, "superlink", cmd)
    wait_for_port(dep.link_port)
    gate = [sys.executable, "-m", "bouquet.deploy.gateway", "--listen", f"127.0.0.1:{dep.port}",
            "--upstream", f"127.0.0.1:{dep.link_port}"]
    if certs is not None:
        gate += ["--certfile", str(certs["server.pem"].resolve()), "--keyfile", str(certs["server.key"].resolve()),
                 "--ca", str(certs["ca.crt"].resolve())]
    _spawn(dep, "gateway", gate)
    wait_for_port(dep.port)


def register_key(dep: Deployment, public_key: Path) -> str:
    """``flwr supernode register``; returns the node id Flower assigned."""
    out = _run([_bin("flwr"), "supernode", "register", str(public_key.resolve()), CONNECTION, "--format", "json"],
               env=dep.env(), cwd=dep.folder)
    return out.stdout.strip()


def start_supernode(dep: Deployment, index: int, num_nodes: int, *, ca: Path | None, key: Path | None,
                    data_path: Path | None = None, name: str | None = None) -> subprocess.Popen:
    # each institution's own writable folder for its clients' state snapshots (resume)
    state_dir = dep.folder / "state" / f"node-{index}"
    node_config = f"partition-id={index} num-partitions={num_nodes} state-dir='{state_dir}'"
    if data_path is not None:
        node_config += f" data-path='{data_path.resolve()}'"
    from bouquet.simulations.launch import free_port  # noqa: PLC0415

    runtime_port = free_port()
    # warm: Flower's SuperNode with its idle waits capped at idle_poll (bouquet.deploy.supernode)
    node = [sys.executable, "-P", "-m", "bouquet.deploy.supernode", "--idle-poll", f"{dep.idle_poll:g}"] if dep.warm \
        else [_bin("flower-supernode")]
    cmd = [*node, "--superlink", f"127.0.0.1:{dep.port}", "--port", str(runtime_port), "--node-config", node_config]
    cmd += ["--insecure"] if ca is None else ["--root-certificates", str(ca.resolve())]
    if key is not None:
        cmd += ["--auth-supernode-private-key", str(key.resolve())]
    name = name or f"supernode-{index}"
    if not dep.warm:
        return _spawn(dep, name, cmd)
    # the SuperNode leaves its apps to a separate process (Flower's `process` isolation): ours,
    # whose ClientApp processes are forked warm (bouquet.deploy.superexec); it exits with the SuperNode.
    # A shared secret (0600) so that no other local process can take this node's tasks from its
    # Runtime API (Flower's SuperExec authentication; with `subprocess` isolation it has none).
    secret = dep.folder / "secrets" / f"{name}.superexec"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.touch(mode=0o600)
    secret.chmod(0o600)
    secret.write_bytes(os.urandom(32))
    auth = ["--superexec-auth-secret-file", str(secret.resolve())]
    proc = _spawn(dep, name, [*cmd, "--isolation", "process", *auth])
    _spawn(dep, f"{name}-superexec", [sys.executable, "-P", "-m", "bouquet.deploy.superexec", "--runtime-api-address",
                                      f"127.0.0.1:{runtime_port}", "--insecure", "--parent-pid", str(proc.pid),
                                      "--pull-wait", f"{dep.idle_poll:g}", *auth])
    return proc


def deploy(folder: Path, num_nodes: int, *, tls: bool, auth: bool, port: int | None = None,
           partitions: Path | None = None, warm: bool = True, idle_poll: float = 0.2) -> Deployment:
    """Certificates, keys, connection, SuperLink, registrations, SuperNodes — in that order.
    Without ``port``, a free one (never a fixed port another deployment may hold)."""
    from bouquet.simulations.launch import free_port  # noqa: PLC0415

    port = free_port() if port is None else port
    for given in (folder, partitions):  # they travel inside Flower's quoted node-config strings
        if given is not None and set(str(given.resolve())) & {"'", '"'}:
            raise ValueError(f"{given}: a path with a quote cannot be passed in a SuperNode's node config; use another")
    if auth and not tls:
        raise ValueError("--auth needs --tls: Flower only manages SuperNode keys over TLS")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "processes.json").exists():
        stop(folder)
    dep = Deployment(folder, port, tls, auth, link_port=free_port(), warm=warm, idle_poll=idle_poll)
    certs = make_certificates(folder / "certificates") if tls else None
    ca = certs["ca.crt"] if certs else None
    write_connection(dep.home, dep.link_port, ca)  # the operator's CLI talks to the SuperLink itself
    start_superlink(dep, certs)
    for i in range(num_nodes):
        key = make_node_key(folder / "keys", f"supernode_{i}") if tls else None
        if auth:
            register_key(dep, key.with_suffix(".pub"))
        start_supernode(dep, i, num_nodes, ca=ca, key=key,
                        data_path=None if partitions is None else partitions / f"partition_{i}")
    return dep


def stop(folder: Path, grace_s: float = 10.0) -> list[str]:
    """SIGINT to everything ``deploy`` started (SuperNodes first), SIGKILL what lingers."""
    try:
        dep = Deployment.load(folder.resolve())
    except FileNotFoundError:
        return []
    stopped = []
    # SuperNodes (and their SuperExecs), gateway, SuperLink
    order = sorted(dep.pids, key=lambda n: (n == "superlink", n == "gateway"))
    stale = [name for name in order if not _ours(dep, dep.pids[name])]  # gone, or its pid now someone else's
    order = [name for name in order if name not in stale]
    for name in order:
        try:
            os.killpg(dep.pids[name], signal.SIGINT)  # the process and its SuperExec children
            stopped.append(name)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    for name in order:
        while _alive(dep.pids[name]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(dep.pids[name]):
            try:
                os.killpg(dep.pids[name], signal.SIGKILL)
            except ProcessLookupError:
                pass
    (dep.folder / "processes.json").unlink(missing_ok=True)
    return stopped


def _ours(dep: Deployment, pid: int) -> bool:
    """Whether ``pid`` is still a process this deployment started: each was started as the
    leader of its own session with the deployment folder as its working directory, which a
    later process that reused the number would not be."""
    try:
        return os.getsid(pid) == pid and Path(os.readlink(f"/proc/{pid}/cwd")) == dep.folder.resolve()
    except OSError:  # gone, not ours to inspect, or no /proc
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        return not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def flwr_run(dep: Deployment, app: Path, run_config: dict | None = None, timeout: float = 600.0):
    """``flwr run <app> bouquet-local --stream`` against this deployment; the real status
    comes from ``flwr ls`` (``--stream`` exits 0 even when a run fails)."""
    from bouquet.simulations.launch import LaunchResult, run_status, started_run_id, write_run_config  # noqa: PLC0415

    cmd = [_bin("flwr"), "run", str(app), CONNECTION, "--stream"]
    run_config = {"federation-size": dep.num_nodes, **(run_config or {})}
    if run_config:
        cmd += ["--run-config", str(write_run_config(dep.folder / "run-config.toml", run_config))]
    cwd = dep.folder / "cwd"  # neutral: never the repository
    cwd.mkdir(exist_ok=True)
    try:
        out = subprocess.run(cmd, env=dep.env(), cwd=cwd, capture_output=True, text=True, timeout=timeout)
        output = out.stdout + out.stderr
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    run_id = started_run_id(output)
    status, details = run_status(run_id, dep.env(), cwd) if run_id is not None else ("not-started", "")
    return LaunchResult(run_id, status, output, details)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bouquet deploy-local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3, help="number of SuperNodes (institutions; default 3)")
    parser.add_argument("--tls", action="store_true", help="TLS with a generated CA")
    parser.add_argument("--auth", action="store_true", help="SuperNode authentication (needs --tls)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="certificates, keys, Flower config, logs")
    parser.add_argument("--port", type=int, default=None,
                        help="the Fleet gateway's port, which SuperNodes connect to (default: a free one)")
    parser.add_argument("--partitions", type=Path, default=None,
                        help="folder from `bouquet export-partitions`: node i reads only partition_<i>/")
    parser.add_argument("--superexec", choices=("warm", "flower"), default="warm",
                        help="who starts the ClientApp processes: Bouquet's warm zygote (default) or Flower's "
                             "SuperExec (a fresh process with all imports per message)")
    parser.add_argument("--idle-poll", type=float, default=0.2,
                        help="with --superexec warm: a SuperNode's longest wait between asking the SuperLink for work "
                             "(Flower's SuperNode waits 3 s when idle; 3 restores that)")
    parser.add_argument("--detach", action="store_true", help="return once started (stop with --stop)")
    parser.add_argument("--stop", action="store_true", help="stop a deployment started with --detach")
    ns = parser.parse_args(argv)
    if ns.stop:
        if not ns.dir.is_dir():
            parser.error(f"--dir {ns.dir}: no such folder, so no deployment to stop there")
        stopped = stop(ns.dir)
        print(f"[deploy-local] stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    if ns.nodes < 1:
        parser.error("--nodes must be >= 1")
    if not 0 < ns.idle_poll <= 60:
        parser.error("--idle-poll must be in (0, 60] seconds")
    try:
        dep = deploy(ns.dir, ns.nodes, tls=ns.tls, auth=ns.auth, port=ns.port, partitions=ns.partitions,
                     warm=ns.superexec == "warm", idle_poll=ns.idle_poll)
    except (ValueError, TimeoutError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"[deploy-local] failed: {exc} {detail}".strip(), file=sys.stderr)
        stop(ns.dir)
        return 1
    repo = Path(__file__).resolve().parents[2]
    print(f"[deploy-local] Fleet gateway 127.0.0.1:{dep.port} (what institutions connect to), SuperLink "
          f"127.0.0.1:{dep.link_port} (operator only; {'TLS' if dep.tls else 'insecure'}"
          f"{', node auth' if dep.auth else ''}), {ns.nodes} SuperNodes; logs in {dep.folder / 'logs'}")
    print(f"[deploy-local] run:\n  {dep.run_command(repo, ns.partitions)}\n  FLWR_HOME={dep.home} flwr ls")
    if ns.detach:
        return 0
    print("[deploy-local] Ctrl-C stops everything")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        print(f"[deploy-local] stopped: {', '.join(stop(dep.folder))}")
    return 0
