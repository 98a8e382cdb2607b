"""Checks of the Docker Compose deployment in docker/ short of running it (docker/e2e.sh runs it:
real containers, TLS, node auth, a 3-round experiment with a SuperNode killed).

1. With a Compose CLI (``docker compose`` v2, ``docker-compose`` v1, or ``$BOUQUET_COMPOSE_BIN``),
   Compose's own ``config`` parses, validates, interpolates and merges every combination of the
   files: unknown keys, wrong types, undefined secrets/volumes/networks and variables without a
   default are its findings. The project it resolves is then checked for what Compose cannot
   know (``check_project``): every Flower flag against the installed binaries' ``--help``, the
   addresses and ports wiring, TLS on every hop or none, each SuperNode with its own certificate
   and auth key, each institution's partition mounted read-only into its own ClientApp SuperExec
   only, a file behind every file flag, bounded SuperExec restarts. Deliberately broken copies of
   the files must be rejected, by Compose or by these checks (``test_broken_copy_is_rejected``).
   Skipped without a Compose CLI.
2. Always: every command of every file against the Flower binaries' ``--help`` (variables at
   their defaults), the image defaults and the Dockerfile against the pin in pyproject.toml (its
   sed run by the real sed), the scripts' syntax, and gen-certs.sh.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
FILES = {"base": "compose.yml", "tls": "with-tls.yml", "auth": "with-auth.yml", "state": "with-state.yml",
         "e2e": "e2e-host.yml"}
COMBOS = {
    "base": ("base",),
    "base+tls": ("base", "tls"),
    "base+tls+auth": ("base", "tls", "auth"),
    "base+state": ("base", "state"),
    "base+tls+state": ("base", "tls", "state"),
    "base+tls+auth+state": ("base", "tls", "auth", "state"),
}
E2E_COMBO = ("base", "tls", "auth", "e2e")
# what docker/e2e.sh sets for the e2e overlay (any values do for `config`)
E2E_ENV = {"E2E_DIR": "/tmp/bouquet-e2e", "BOUQUET_SUPEREXEC_IMAGE": "bouquet-local/bouquet-superexec:test",
           "E2E_GATEWAY_PORT": "40001", "SUPERLINK_PORT": "40000", "LISTEN_HOST": "127.0.0.1",
           "SUPERLINK_HOST": "127.0.0.1", "FLEET_ADDRESS": "127.0.0.1:40001",
           **{f"SUPERNODE_{n}_HOST": "127.0.0.1" for n in (1, 2, 3)},
           **{f"SUPERNODE_{n}_PORT": str(40001 + n) for n in (1, 2, 3)}}
NUM_NODES = 3
SECRETS_DIR = "/run/secrets"
# flags whose value is a file the container must be able to read (or, for --database, write)
FILE_FLAGS = {
    "--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--root-certificates",
    "--auth-supernode-private-key", "--database", "--superexec-auth-secret-file",
    "--trusted-entities", "--executor-config",
}


def load_files(directory: Path = DOCKER) -> dict[str, dict]:
    return {key: yaml.safe_load((directory / name).read_text()) for key, name in FILES.items()}


def flwr_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d.split("==", 1)[1] for d in deps if re.match(r"flwr(\[[^\]]*\])?==", d)]
    assert len(pins) == 1, deps
    return pins[0]


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(obj, env: dict[str, str] | None = None):
    """Compose-style ${VAR:-default} / ${VAR-default} / ${VAR:?err} / ${VAR} / $$ substitution,
    for the checks that run without a Compose CLI."""
    env = env or {}

    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group(1) or match.group(4), match.group(2), match.group(3)
        value = env.get(name)
        if op in (":-", "-") and (value is None or (op == ":-" and not value)):
            return default
        return value or ""

    if isinstance(obj, str):
        return _VAR.sub(sub, obj)
    if isinstance(obj, list):
        return [interpolate(v, env) for v in obj]
    if isinstance(obj, dict):
        return {k: interpolate(v, env) for k, v in obj.items()}
    return obj


def variables_used() -> set[str]:
    return {m.group(1) or m.group(4) for name in FILES.values()
            for m in _VAR.finditer((DOCKER / name).read_text()) if m.group(0) != "$$"}


# --------------------------------------------------------------------------------------------
# Flower CLI specs from the installed binaries' --help


@lru_cache(maxsize=None)
def cli_spec(binary: str) -> dict[str, dict]:
    """{flag: {"value": bool, "choices": list|None, "required": bool, "deprecated": bool}}."""
    exe = Path(sys.executable).parent / binary
    exe = str(exe) if exe.exists() else shutil.which(binary)
    assert exe, f"{binary} not installed (flwr is a dependency)"
    env = {**os.environ, "FLWR_DISABLE_UPDATE_CHECK": "1", "NO_COLOR": "1", "COLUMNS": "100"}
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    usage, _, rest = proc.stdout.partition("\n\n")
    spec: dict[str, dict] = {}
    for m in re.finditer(r"(--[a-z0-9][a-z0-9-]*)(?: (\{[^}]*\}|[A-Z][A-Z0-9_]*))?", usage):
        flag, arg = m.groups()
        spec[flag] = {
            "value": arg is not None,
            "choices": arg[1:-1].split(",") if arg and arg.startswith("{") else None,
            "required": usage.count("[", 0, m.start(1)) <= usage.count("]", 0, m.start(1)),
            "deprecated": False,
        }
    # option help texts: "  --flag ARG   help ..." entries (continuation lines more indented);
    # the flags an entry documents are those before the first run of 2+ spaces
    for entry in re.split(r"\n(?=  -)", rest):
        head = re.split(r"\s{2,}", entry.strip(), maxsplit=1)[0]
        flags = re.findall(r"--[a-z0-9][a-z0-9-]*", head)
        if flags and re.search(r"\bdeprecated\b", entry, re.IGNORECASE):
            for flag in flags:
                if flag in spec:
                    spec[flag]["deprecated"] = True
    return spec


def check_argv(binary: str, argv: list[str], where: str) -> tuple[list[str], dict[str, str | bool]]:
    """Parse argv like argparse would; return (errors, {flag: value or True})."""
    spec = cli_spec(binary)
    errors: list[str] = []
    seen: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not isinstance(token, str):
            errors.append(f"{where}: argument {token!r} is not a string")
            i += 1
            continue
        flag, eq, inline = token.partition("=")
        if not flag.startswith("--"):
            errors.append(f"{where}: stray argument {token!r} (no flag takes it)")
        elif flag not in spec:
            errors.append(f"{where}: {binary} {flwr_pin()} has no flag {flag}")
        else:
            info = spec[flag]
            if info["deprecated"]:
                errors.append(f"{where}: {flag} is deprecated in {binary}")
            if flag in seen:
                errors.append(f"{where}: {flag} given twice")
            if info["value"]:
                if eq:
                    value = inline
                elif i + 1 < len(argv) and isinstance(argv[i + 1], str) and not argv[i + 1].startswith("--"):
                    value = argv[i + 1]
                    i += 1
                else:
                    errors.append(f"{where}: {flag} needs a value")
                    value = ""
                if info["choices"] and value not in info["choices"]:
                    errors.append(f"{where}: {flag} {value!r} not one of {info['choices']}")
                seen[flag] = value
            else:
                if eq:
                    errors.append(f"{where}: {flag} takes no value")
                seen[flag] = True
        i += 1
    errors += [f"{where}: required flag {flag} missing" for flag, info in spec.items()
               if info["required"] and flag not in seen]
    if "--insecure" in seen and "--root-certificates" in seen:
        errors.append(f"{where}: --insecure conflicts with --root-certificates (Flower exits)")
    ssl = [f for f in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile") if f in seen]
    if ssl and len(ssl) != 3:
        errors.append(f"{where}: needs all of --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile, has {ssl}")
    return errors, seen


def binary_of(name: str, svc: dict) -> str | None:
    """The Flower binary a service runs: its image's (flwr/superlink, <prefix>supernode, ...) or,
    for the SuperExecs built from superexec.Dockerfile, flower-superexec."""
    image = str(svc.get("image", "")).rsplit("/", 1)[-1].split(":")[0]
    if image in ("superlink", "supernode"):
        return f"flower-{image}"
    if name.startswith("superexec-") and ("build" in svc or image):
        return "flower-superexec"
    return None


# --------------------------------------------------------------------------------------------
# Compose itself


def compose_cli() -> list[str] | None:
    if os.environ.get("BOUQUET_COMPOSE_BIN"):
        return os.environ["BOUQUET_COMPOSE_BIN"].split()
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(cmd[0]):
            continue
        try:
            out = subprocess.run(cmd + ["version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and re.search(r"version v?[12]\.\d+", out.stdout):
            return cmd
    return None


COMPOSE = compose_cli()
needs_compose = pytest.mark.skipif(
    COMPOSE is None, reason="no Compose CLI (docker compose / docker-compose / $BOUQUET_COMPOSE_BIN): "
                            "the real `config` checks are skipped")


def resolve(directory: Path, combo: tuple[str, ...], extra_env: dict[str, str] | None = None) -> tuple[dict | None, str]:
    """(project, problems): the project `<compose> config` resolves from the files of ``combo``
    in ``directory`` (relative paths as if they were in docker/), with none of the files'
    variables set unless given; problems is Compose's error, or its warnings about variables
    without a default."""
    env = {k: v for k, v in os.environ.items() if k not in variables_used() and not k.startswith("COMPOSE_")}
    env.update(extra_env or {})
    files = [a for key in combo for a in ("-f", str(directory / FILES[key]))]
    proc = subprocess.run([*COMPOSE, "--project-directory", str(DOCKER), *files, "config"], env=env,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return None, f"compose config: {proc.stderr.strip()}"
    unset = [line for line in proc.stderr.splitlines() if "variable is not set" in line]
    return yaml.safe_load(proc.stdout), "; ".join(f"compose config: {line.strip()}" for line in unset)


@lru_cache(maxsize=None)
def _resolved_real(combo: tuple[str, ...]) -> tuple[dict | None, str]:
    return resolve(DOCKER, combo, E2E_ENV if "e2e" in combo else None)


def resolved(combo: tuple[str, ...]) -> dict:
    project, problems = _resolved_real(combo)
    assert project is not None and not problems, problems
    return copy.deepcopy(project)


# --------------------------------------------------------------------------------------------
# Normalising Compose's output (v1 keeps short strings, v2 writes long forms)


def norm_volume(entry) -> dict:
    if isinstance(entry, dict):
        return {"type": entry.get("type", "volume"), "source": entry.get("source"), "target": entry["target"],
                "read_only": bool(entry.get("read_only"))}
    parts = str(entry).split(":")
    source, target = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
    mode = parts[2] if len(parts) > 2 else "rw"
    kind = "bind" if source and source[:1] in "./~" else "volume"
    return {"type": kind, "source": source, "target": target, "read_only": "ro" in mode.split(",")}


def norm_secret(entry) -> dict:
    if isinstance(entry, str):
        entry = {"source": entry}
    target = entry.get("target") or entry["source"]
    return {"source": entry["source"], "target": target if target.startswith("/") else f"{SECRETS_DIR}/{target}"}


def norm_port(entry) -> tuple[str, str, str]:
    """(host ip, published port, container port)."""
    if isinstance(entry, dict):
        return str(entry.get("host_ip", "")), str(entry.get("published", "")), str(entry["target"])
    parts = str(entry).split("/")[0].split(":")
    parts = [""] * (3 - len(parts)) + parts
    return parts[0], parts[1], parts[2]


def _in_docker(path: str | None) -> str:
    """A resolved host path relative to docker/ (``./certificates/ca.crt``), else as is."""
    try:
        return "./" + str(Path(str(path)).resolve().relative_to(DOCKER))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# What Compose cannot know


def check_project(project: dict, name: str, *, tls: bool, auth: bool, state: bool) -> list[str]:
    from flwr.common.config import parse_config_args  # Flower's own --node-config parser

    errors: list[str] = []
    services: dict = project["services"]
    secret_file = {k: _in_docker(v.get("file")) for k, v in (project.get("secrets") or {}).items()}
    networks = set(project.get("networks") or {}) | {"default"}
    argvs: dict[str, dict] = {}
    mounts_of: dict[str, list[dict]] = {}

    for sname, svc in services.items():
        where = f"{name}:{sname}"
        volumes = [norm_volume(v) for v in svc.get("volumes", [])]
        secrets = [norm_secret(s) for s in svc.get("secrets", [])]
        mounts_of[sname] = volumes
        svc["_secrets"] = secrets
        # Compose v1's `config` lets an undefined network through (only `up` fails)
        errors += [f"{where}: network {net!r} is not defined" for net in svc.get("networks") or [] if net not in networks]
        environment = svc.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        if str(environment.get("FLWR_DISABLE_UPDATE_CHECK")) != "1":
            errors.append(f"{where}: FLWR_DISABLE_UPDATE_CHECK=1 missing (Flower calls home at start-up)")
        if str(environment.get("FLWR_TELEMETRY_ENABLED")) != "0":
            errors.append(f"{where}: FLWR_TELEMETRY_ENABLED=0 missing (every Flower process posts telemetry events)")
        if svc.get("stop_signal") != "SIGINT":
            errors.append(f"{where}: stop_signal must be SIGINT (flower-superlink ignores SIGTERM)")
        restart = str(svc.get("restart", ""))
        if sname.startswith("superexec-") and not re.fullmatch(r"on-failure:[1-9]\d*", restart):
            errors.append(f"{where}: restart must be bounded (on-failure:N), is {restart!r}: a config error "
                          "makes flower-superexec exit at once, and an unbounded policy loops forever")
        elif not restart:
            errors.append(f"{where}: no restart policy")
        if "build" in svc:
            build = svc["build"]
            if Path(str(build.get("context"))).resolve() != ROOT:
                errors.append(f"{where}: build context {build.get('context')} is not the repo root")
            elif not (ROOT / build.get("dockerfile", "Dockerfile")).is_file():
                errors.append(f"{where}: dockerfile {build.get('dockerfile')} not found in the context")
            if "dockerfile_inline" in build:
                errors.append(f"{where}: dockerfile_inline is Compose-v2-only; use docker/superexec.Dockerfile")
        binary = binary_of(sname, svc)
        if binary is None:
            errors.append(f"{where}: unknown kind of service (not a Flower image or superexec build)")
            continue
        extra: list[str] = []
        if "entrypoint" in svc:
            if not svc["entrypoint"] or svc["entrypoint"][0] != binary:
                errors.append(f"{where}: entrypoint must start with the image's binary {binary}")
            extra = list(svc["entrypoint"][1:])
        if not isinstance(svc.get("command"), list):
            errors.append(f"{where}: command must be a list of strings (exec form: its flags are checked)")
            continue
        argv_errors, flags = check_argv(binary, extra + svc["command"], where)
        errors += argv_errors
        argvs[sname] = flags
        targets = [s["target"] for s in secrets] + [v["target"] for v in volumes]
        for flag in sorted(FILE_FLAGS & set(flags)):
            path = str(flags[flag])
            if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in targets):
                errors.append(f"{where}: {flag} {path} is not mounted into the container")
    if errors:
        return errors

    # ---- wiring -------------------------------------------------------------------------------
    nodes = sorted(s for s in services if re.fullmatch(r"supernode-\d+", s))
    apps = sorted(s for s in services if re.fullmatch(r"superexec-clientapp-\d+", s))
    if len(nodes) != NUM_NODES or [a.rsplit("-", 1)[1] for a in apps] != [n.rsplit("-", 1)[1] for n in nodes]:
        errors.append(f"{name}: need {NUM_NODES} supernode-N, each with its superexec-clientapp-N: {nodes} {apps}")
    if "superlink" not in argvs or "superexec-serverapp" not in argvs:
        return errors + [f"{name}: superlink and superexec-serverapp are required"]
    lf = argvs["superlink"]
    link_port = str(lf.get("--port", "9093"))
    if lf.get("--isolation") != "process":
        errors.append(f"{name}:superlink: --isolation process required (apps run in SuperExec containers)")
    if lf.get("--host") != "0.0.0.0":
        errors.append(f"{name}:superlink: --host 0.0.0.0 required to be reachable from other containers")
    ports = [norm_port(p) for p in services["superlink"].get("ports", [])]
    if (link_port, link_port) not in [(pub, target) for _, pub, target in ports]:
        errors.append(f"{name}:superlink: port {link_port} is not published for the flwr CLI")
    errors += [f"{name}:superlink: port {pub} published on {ip or 'every interface'}, not 127.0.0.1"
               for ip, pub, _ in ports if ip != "127.0.0.1"]
    if argvs["superexec-serverapp"].get("--runtime-api-address") != f"superlink:{link_port}":
        errors.append(f"{name}:superexec-serverapp: --runtime-api-address must be superlink:{link_port}")
    link_tls = "--ssl-certfile" in lf
    ports_seen: set[str] = set()
    partitions: dict[int, str] = {}
    state_volumes: set[str] = set()
    for node in nodes:
        n = node.rsplit("-", 1)[1]
        nf = argvs[node]
        where = f"{name}:{node}"
        if nf.get("--superlink") != f"superlink:{link_port}":
            errors.append(f"{where}: --superlink must be superlink:{link_port}")
        if nf.get("--isolation") != "process":
            errors.append(f"{where}: --isolation process required")
        if nf.get("--host") != "0.0.0.0":
            errors.append(f"{where}: --host 0.0.0.0 required (its SuperExec is another container)")
        port = str(nf.get("--port", "9094"))
        if port in ports_seen:
            errors.append(f"{where}: Runtime API port {port} used by another SuperNode")
        ports_seen.add(port)
        try:
            cfg = parse_config_args([str(nf.get("--node-config", ""))])
        except Exception as err:  # noqa: BLE001 - any parse error is a finding
            errors.append(f"{where}: --node-config does not parse: {err}")
            continue
        pid, nparts, data_path = cfg.get("partition-id"), cfg.get("num-partitions"), cfg.get("data-path")
        if nparts != NUM_NODES or not isinstance(pid, int) or not 0 <= pid < NUM_NODES:
            errors.append(f"{where}: node-config {cfg} needs partition-id in 0..{NUM_NODES - 1}, num-partitions={NUM_NODES}")
            continue
        if pid in partitions:
            errors.append(f"{where}: partition-id {pid} also used by {partitions[pid]}")
        partitions[pid] = node
        if not isinstance(data_path, str) or not data_path.startswith("/"):
            errors.append(f"{where}: node-config needs an absolute string data-path, got {data_path!r}")
            continue
        app = f"superexec-clientapp-{n}"
        if app not in argvs:
            continue
        af = argvs[app]
        if af.get("--runtime-api-address") != f"{node}:{port}":
            errors.append(f"{name}:{app}: --runtime-api-address must be {node}:{port}")
        data = [v for v in mounts_of[app] if "/partitions/" in _in_docker(v["source"])]
        want = f"./partitions/partition_{pid}"
        if len(data) != 1 or _in_docker(data[0]["source"]) != want:
            errors.append(f"{name}:{app}: must mount exactly {want} (partition-id {pid}), "
                          f"has {[_in_docker(v['source']) for v in data]}")
        elif data[0]["target"] != data_path or not data[0]["read_only"]:
            errors.append(f"{name}:{app}: {want} must be mounted read-only at data-path {data_path}")
        own = [v for v in mounts_of[app] if v["target"] == cfg.get("state-dir")]
        if len(own) != 1 or own[0]["read_only"] or own[0]["type"] != "volume" or own[0]["source"] in state_volumes:
            errors.append(f"{name}:{app}: node-config state-dir {cfg.get('state-dir')!r} must be its own writable named volume")
        else:
            state_volumes.add(own[0]["source"])
        node_tls = "--ssl-certfile" in nf  # TLS on the SuperNode's Runtime API iff its SuperExec uses TLS
        if node_tls == ("--insecure" in af) or (node_tls and "--root-certificates" not in af):
            errors.append(f"{name}:{app}: TLS mismatch with {node}'s Runtime API (server TLS={node_tls})")
        if link_tls == ("--insecure" in nf) or (link_tls and "--root-certificates" not in nf):
            errors.append(f"{where}: TLS mismatch with the SuperLink (server TLS={link_tls})")
    for sname in services:  # the data of an institution goes to its ClientApps only
        if not sname.startswith("superexec-clientapp-") and any(
                "/partitions/" in _in_docker(v["source"]) for v in mounts_of[sname]):
            errors.append(f"{name}:{sname}: mounts partition data")
    sf = argvs["superexec-serverapp"]
    if link_tls == ("--insecure" in sf) or (link_tls and "--root-certificates" not in sf):
        errors.append(f"{name}:superexec-serverapp: TLS mismatch with the SuperLink (server TLS={link_tls})")

    # ---- per-overlay guarantees ----------------------------------------------------------------
    if tls:
        errors += [f"{name}:{s}: --insecure left in a TLS deployment" for s in argvs if "--insecure" in argvs[s]]
        if not link_tls:
            errors.append(f"{name}:superlink: TLS overlay without --ssl-* on the SuperLink")
        errors += [f"{name}:{node}: TLS overlay without TLS on the SuperNode Runtime API"
                   for node in nodes if "--ssl-certfile" not in argvs[node]]
    for sname, svc in services.items():
        for sec in svc["_secrets"]:
            if not re.fullmatch(r"\./(certificates|keys)/[\w.-]+", secret_file.get(sec["source"], "")):
                errors.append(f"{name}: secret {sec['source']} file {secret_file.get(sec['source'])!r} "
                              "not under ./certificates or ./keys")
        for flag in ("--ssl-keyfile", "--ssl-certfile"):
            if flag in argvs.get(sname, {}):
                src = _secret_source(svc, argvs[sname][flag])
                expected = "server" if sname == "superlink" else sname
                if not secret_file.get(src, "").startswith(f"./certificates/{expected}."):
                    errors.append(f"{name}:{sname}: {flag} must be its own certificates/{expected}.* file")
    if auth:
        if "--enable-supernode-auth" not in lf:
            errors.append(f"{name}:superlink: auth overlay without --enable-supernode-auth")
        if not link_tls:
            errors.append(f"{name}:superlink: SuperNode auth requires TLS")
        keys_used: dict[str, str] = {}
        for node in nodes:
            key_path = argvs[node].get("--auth-supernode-private-key")
            if not key_path:
                errors.append(f"{name}:{node}: no --auth-supernode-private-key")
                continue
            file = secret_file.get(_secret_source(services[node], key_path), "")
            n = node.rsplit("-", 1)[1]
            if file != f"./keys/supernode_{n}":
                errors.append(f"{name}:{node}: auth key must be its own ./keys/supernode_{n}, is {file!r}")
            if file in keys_used:
                errors.append(f"{name}:{node}: shares its auth key with {keys_used[file]}")
            keys_used[file] = node
    if state:
        db = str(lf.get("--database", ""))
        if not any(db.startswith(v["target"].rstrip("/") + "/") and _in_docker(v["source"]) == "./state"
                   and not v["read_only"] for v in mounts_of["superlink"]):
            errors.append(f"{name}:superlink: --database must live in the writable ./state volume")
    return errors


def _secret_source(svc: dict, path) -> str:
    return next((sec["source"] for sec in svc["_secrets"] if sec["target"] == path), "")


def validate(directory: Path, combo: tuple[str, ...]) -> list[str]:
    """Compose's findings for the files of ``combo`` in ``directory``, else ours."""
    project, problems = resolve(directory, combo)
    if project is None or problems:
        return [problems]
    return check_project(project, "+".join(combo), tls="tls" in combo, auth="auth" in combo, state="state" in combo)


# --------------------------------------------------------------------------------------------
# Always: the files against the Flower CLI, the pin, the Dockerfile, the scripts


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    return load_files()


def test_help_parser_sees_the_flower_flags():
    link, node, exe = cli_spec("flower-superlink"), cli_spec("flower-supernode"), cli_spec("flower-superexec")
    assert link["--isolation"]["choices"] == ["subprocess", "process"]
    assert link["--port"]["value"] and not link["--insecure"]["value"]
    assert link["--fleet-api-address"]["deprecated"] and not link["--database"]["deprecated"]
    assert node["--node-config"]["value"] and node["--root-certificates"]["value"]
    assert exe["--runtime-api-address"]["required"] and not exe["--root-certificates"]["required"]
    assert not any(info["required"] for info in link.values())


def file_commands(docs: dict[str, dict], env: dict[str, str] | None = None) -> list[tuple[str, str, list]]:
    """(where, binary, argv) of every command in every file, variables at their defaults; the
    state overlay's entrypoint is checked with the base command it is prepended to."""
    out = []
    for key, doc in docs.items():
        for name, svc in doc["services"].items():
            svc = interpolate(svc, env)
            base = docs["base"]["services"].get(name, {})
            binary = binary_of(name, {**interpolate(base, env), **svc})
            if binary is None:
                continue
            command = svc.get("command", interpolate(base.get("command"), env))
            extra = svc.get("entrypoint", [binary])[1:]
            out.append((f"{FILES[key]}:{name}", binary, extra + command))
    return out


def test_every_command_against_the_flower_binaries(docs):
    commands = file_commands(docs) + [(f"{w} (e2e env)", b, a) for w, b, a in file_commands(docs, E2E_ENV)]
    assert len(commands) >= 2 * (2 + 2 * NUM_NODES) * 3  # base, tls and auth, with and without the e2e env
    errors = [e for where, binary, argv in commands for e in check_argv(binary, argv, where)[0]]
    assert errors == []


def test_every_command_check_rejects_a_typo(docs):
    broken = copy.deepcopy(docs)
    broken["auth"]["services"]["supernode-2"]["command"][0] = "--root-certificate"
    errors = [e for where, binary, argv in file_commands(broken) for e in check_argv(binary, argv, where)[0]]
    assert any("with-auth.yml:supernode-2: flower-supernode" in e and "--root-certificate" in e for e in errors), errors


def test_images_default_to_the_official_ones_at_the_pin(docs):
    pin = flwr_pin()
    base = docs["base"]["services"]
    for name in ["superlink"] + [f"supernode-{n}" for n in range(1, NUM_NODES + 1)]:
        kind = name.split("-")[0]
        assert base[name]["image"] == f"${{FLWR_IMAGE_PREFIX:-flwr/}}{kind}:${{FLWR_VERSION:-{pin}}}", name
    for name, svc in base.items():
        if name.startswith("superexec-"):
            assert svc["build"]["args"] == {"FLWR_IMAGE_PREFIX": "${FLWR_IMAGE_PREFIX:-flwr/}",
                                            "FLWR_VERSION": f"${{FLWR_VERSION:-{pin}}}"}, name
            assert svc["build"]["dockerfile"] == "docker/superexec.Dockerfile"
    local = (DOCKER / "flwr-local.Dockerfile").read_text()
    assert re.search(rf"^ARG FLWR_VERSION={re.escape(pin)}$", local, re.M)
    for kind in ("superlink", "supernode", "superexec"):
        assert re.search(rf'^FROM base AS {kind}\nENTRYPOINT \["flower-{kind}"\]$', local, re.M), kind


def test_dockerfile(tmp_path):
    text = (DOCKER / "superexec.Dockerfile").read_text()
    pin = flwr_pin()
    assert re.search(rf"^ARG FLWR_VERSION={re.escape(pin)}$", text, re.M)
    assert re.search(r"^ARG FLWR_IMAGE_PREFIX=flwr/$", text, re.M)
    assert re.search(r"^FROM \$\{FLWR_IMAGE_PREFIX\}superexec:\$\{FLWR_VERSION\}$", text, re.M)
    assert re.search(r"^ENTRYPOINT \[\"flower-superexec\"\]$", text, re.M)
    assert '"--index-url https://download.pytorch.org/whl/cpu"' in text
    torch_at = text.index("torch==")
    assert torch_at < text.index("pip install --no-cache-dir ."), "CPU torch must be installed before the app's requirements"
    # the Dockerfile's sed, run by the real sed on a copy of pyproject.toml
    [sed] = re.findall(r"^RUN (sed -i .*? pyproject\.toml)", text, re.M)
    patched = tmp_path / "pyproject.toml"
    shutil.copy(ROOT / "pyproject.toml", patched)
    subprocess.run(["sh", "-c", sed], cwd=tmp_path, check=True, timeout=60)
    deps = tomllib.loads(patched.read_text())["project"]["dependencies"]
    original = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[=<>]", d)[0] for d in deps}
    assert not names & {"flwr", "ray", "opacus", "infomap"}, deps
    assert "dp-accounting==0.6.0" in deps  # flwr[dp]'s one extra, kept for the deployment
    # every other requirement unchanged, pins included
    assert sorted(deps) == sorted([d for d in original if re.split(r"[\[=<>]", d)[0] not in ("flwr", "opacus", "infomap")]
                                  + ["dp-accounting==0.6.0"])
    # every COPY source exists and is let through by the Dockerfile-specific .dockerignore
    ignore = (DOCKER / "superexec.Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[[i for i, line in enumerate(ignore) if line and not line.startswith("#")][0]] == "*"
    for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for src in line.split():
            assert (ROOT / src).exists(), src
            assert f"!{src.rstrip('/')}" in [i.rstrip("/") for i in ignore], f"{src} excluded by .dockerignore"


def test_generated_paths_are_gitignored():
    ignored = {line.strip().rstrip("/") for line in (DOCKER / ".gitignore").read_text().splitlines()}
    assert {"certificates", "keys", "partitions", "state", "server-data", "wheels/*.whl"} <= ignored


def test_readme_commands():
    readme = (DOCKER / "README.md").read_text()
    assert "docker compose -f compose.yml -f with-tls.yml -f with-auth.yml up --build -d" in readme
    for n in range(1, NUM_NODES + 1):
        assert f"flwr supernode register keys/supernode_{n}.pub" in readme
    assert 'address = "127.0.0.1:8000"' in readme and "--stream" in readme and "flwr ls" in readme
    assert "bash docker/e2e.sh" in readme and "build-local-images.sh" in readme


@pytest.mark.parametrize("script", ["e2e.sh", "build-local-images.sh", "gen-certs.sh"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(DOCKER / script)], capture_output=True).returncode == 0


# --------------------------------------------------------------------------------------------
# With a Compose CLI: its config, then what it cannot know


@needs_compose
@pytest.mark.parametrize("combo", list(COMBOS))
def test_combination_is_valid(combo):
    project = resolved(COMBOS[combo])
    assert set(project["services"]) == {"superlink", "superexec-serverapp"} | {
        f"{kind}-{n}" for kind in ("supernode", "superexec-clientapp") for n in range(1, NUM_NODES + 1)}
    assert check_project(project, combo, tls="tls" in combo, auth="auth" in combo, state="state" in combo) == []


@needs_compose
def test_e2e_overlay_runs_everything_on_loopback():
    """docker/e2e.sh's project: every service on host networking, every listening address and
    every address a client dials on 127.0.0.1, SuperNodes through the Fleet gateway."""
    services = resolved(E2E_COMBO)["services"]
    assert set(services) == set(load_files()["base"]["services"]) | {"fleet-gateway"}
    for name, svc in services.items():
        assert svc["network_mode"] == "host", name
        cmd = svc["command"]
        for flag in ("--host", "--runtime-api-address", "--superlink", "--listen", "--upstream"):
            if flag in cmd:
                assert cmd[cmd.index(flag) + 1].startswith("127.0.0.1"), (name, flag, cmd)
        assert "--insecure" not in cmd, name
    gateway = services["fleet-gateway"]["command"]
    assert gateway[gateway.index("--listen") + 1] == E2E_ENV["FLEET_ADDRESS"]
    assert gateway[gateway.index("--upstream") + 1] == f"127.0.0.1:{E2E_ENV['SUPERLINK_PORT']}"
    for n in range(1, NUM_NODES + 1):
        cmd = services[f"supernode-{n}"]["command"]
        assert cmd[cmd.index("--superlink") + 1] == E2E_ENV["FLEET_ADDRESS"]  # never the SuperLink itself
        assert "--auth-supernode-private-key" in cmd


def _cmd(docs, key, service):
    return docs[key]["services"][service]["command"]


def _replace_in(seq: list, old: str, new: str) -> None:
    seq[seq.index(old)] = new


def _drop_flag(seq: list, flag: str) -> None:
    i = seq.index(flag)
    del seq[i: i + 2]


NODE_CONFIG = "partition-id={} num-partitions=3 data-path='/data/partition' state-dir='/app/state'"
BROKEN = {  # case: (combination, mutation of the loaded files, expected finding)
    # Compose's own findings
    "typo in a service key": ("base", lambda d: d["base"]["services"]["superlink"].update(stop_signl="SIGINT"),
                              "stop_signl"),
    "undefined secret": ("base+tls", lambda d: d["tls"]["secrets"].pop("superlink-key"), "superlink-key"),
    "variable without a default": ("base", lambda d: d["base"]["services"]["supernode-1"].update(
        image="flwr/supernode:${FLWR_TAG}"), "FLWR_TAG"),
    "overlay adds an incomplete service": ("base+tls", lambda d: d["tls"]["services"].update(
        {"supernode-4": copy.deepcopy(d["tls"]["services"]["supernode-3"])}), "supernode-4"),
    # what it cannot know (or, for networks, what Compose v1's `config` lets through)
    "undefined network": ("base", lambda d: d["base"]["services"]["supernode-3"].update(networks=["flowr"]), "flowr"),
    "typo in a flag": ("base", lambda d: _replace_in(_cmd(d, "base", "supernode-1"), "--isolation", "--isolaton"),
                       "has no flag --isolaton"),
    "deprecated flag": ("base", lambda d: _cmd(d, "base", "superlink").extend(["--fleet-api-address", "0.0.0.0:9092"]),
                        "--fleet-api-address is deprecated"),
    "flag without value": ("base", lambda d: _cmd(d, "base", "supernode-2").remove("${SUPERNODE_2_PORT:-9095}"),
                           "--port needs a value"),
    "bad choice": ("base", lambda d: _replace_in(_cmd(d, "base", "superlink"), "process", "container"),
                   "--isolation 'container' not one of"),
    "command as a string": ("base", lambda d: d["base"]["services"]["superexec-serverapp"].update(command="--insecure"),
                            "command must be a list of strings"),
    "duplicate partition-id": ("base", lambda d: _replace_in(
        _cmd(d, "base", "supernode-2"), NODE_CONFIG.format(1), NODE_CONFIG.format(0)), "partition-id 0 also used by supernode-1"),
    "unquoted data-path": ("base", lambda d: _replace_in(
        _cmd(d, "base", "supernode-3"), NODE_CONFIG.format(2), NODE_CONFIG.format(2).replace("'/data/partition'", "/data/partition")),
        "--node-config does not parse"),
    "another institution's data": ("base", lambda d: d["base"]["services"]["superexec-clientapp-2"].update(
        volumes=["./partitions/partition_0:/data/partition:ro", "state-2:/app/state"]), "must mount exactly ./partitions/partition_1"),
    "writable data mount": ("base", lambda d: d["base"]["services"]["superexec-clientapp-1"].update(
        volumes=["./partitions/partition_0:/data/partition", "state-1:/app/state"]), "must be mounted read-only"),
    "two institutions share a state volume": ("base", lambda d: _replace_in(
        d["base"]["services"]["superexec-clientapp-2"]["volumes"], "state-2:/app/state", "state-1:/app/state"),
        "must be its own writable named volume"),
    "no data mount": ("base", lambda d: d["base"]["services"]["superexec-clientapp-3"].update(volumes=["state-3:/app/state"]),
                      "must mount exactly ./partitions/partition_2"),
    "partition data in the ServerApp": ("base", lambda d: d["base"]["services"]["superexec-serverapp"]["volumes"].append(
        "./partitions/partition_0:/data/p0:ro"), "superexec-serverapp: mounts partition data"),
    "ClientApp SuperExec on the wrong node": ("base", lambda d: _replace_in(
        _cmd(d, "base", "superexec-clientapp-1"), "${SUPERNODE_1_HOST:-supernode-1}:${SUPERNODE_1_PORT:-9094}",
        "supernode-2:9095"), "--runtime-api-address must be supernode-1:9094"),
    "dockerfile_inline": ("base", lambda d: d["base"]["services"]["superexec-serverapp"].update(build={
        "context": "..", "dockerfile_inline": "FROM flwr/superexec:1.41.0"}), "dockerfile_inline"),
    "update check left on": ("base", lambda d: d["base"]["services"]["supernode-1"].pop("environment"),
                             "supernode-1: FLWR_DISABLE_UPDATE_CHECK=1 missing"),
    "telemetry left on": ("base", lambda d: d["base"]["services"]["superexec-clientapp-1"]["environment"].pop(
        "FLWR_TELEMETRY_ENABLED"), "superexec-clientapp-1: FLWR_TELEMETRY_ENABLED=0 missing"),
    "no stop_signal": ("base", lambda d: d["base"]["services"]["supernode-3"].pop("stop_signal"),
                       "stop_signal must be SIGINT"),
    "SuperExec restarting forever": ("base", lambda d: d["base"]["services"]["superexec-clientapp-2"].update(
        restart="unless-stopped"), "superexec-clientapp-2: restart must be bounded"),
    "superlink not published": ("base", lambda d: d["base"]["services"]["superlink"].update(
        ports=["127.0.0.1:9999:9999"]), "port 8000 is not published"),
    "superlink published on every interface": ("base", lambda d: d["base"]["services"]["superlink"].update(
        ports=["8000:8000"]), "published on every interface"),
    "--insecure left in TLS": ("base+tls", lambda d: _cmd(d, "tls", "supernode-1").insert(0, "--insecure"),
                               "--insecure conflicts with --root-certificates"),
    "TLS client without CA": ("base+tls", lambda d: _drop_flag(_cmd(d, "tls", "superexec-serverapp"), "--root-certificates"),
                              "superexec-serverapp: TLS mismatch with the SuperLink"),
    "SuperNode Runtime API left insecure": ("base+tls", lambda d: [
        _drop_flag(_cmd(d, "tls", "supernode-2"), f) for f in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile")],
        "TLS mismatch with supernode-2's Runtime API"),
    "certificate not mounted": ("base+tls", lambda d: d["tls"]["services"]["superexec-clientapp-3"].pop("secrets"),
                                "--root-certificates /run/secrets/ca-cert is not mounted"),
    "SuperNode serving the SuperLink's certificate": ("base+tls", lambda d: d["tls"]["secrets"]["supernode-1-key"].update(
        file="./certificates/server.key"), "--ssl-keyfile must be its own certificates/supernode-1.*"),
    "auth without --enable-supernode-auth": ("base+tls+auth", lambda d: _cmd(d, "auth", "superlink").remove(
        "--enable-supernode-auth"), "auth overlay without --enable-supernode-auth"),
    "shared auth key": ("base+tls+auth", lambda d: d["auth"]["secrets"]["supernode-2-auth-key"].update(
        file="./keys/supernode_1"), "shares its auth key with supernode-1"),
    "auth key not mounted": ("base+tls+auth", lambda d: d["auth"]["services"]["supernode-1"].pop("secrets"),
                             "--auth-supernode-private-key /run/secrets/supernode-1-auth-key is not mounted"),
    "database outside the state volume": ("base+state", lambda d: d["state"]["services"]["superlink"].pop("volumes"),
                                          "--database /app/state/state.db is not mounted"),
    "state entrypoint of another binary": ("base+state", lambda d: _replace_in(
        d["state"]["services"]["superlink"]["entrypoint"], "flower-superlink", "flower-supernode"),
        "entrypoint must start with the image's binary flower-superlink"),
}


@needs_compose
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_copy_is_rejected(docs, tmp_path, case):
    combo, mutate, expected = BROKEN[case]
    broken = copy.deepcopy(docs)
    mutate(broken)
    for key, doc in broken.items():
        (tmp_path / FILES[key]).write_text(yaml.safe_dump(doc, sort_keys=False))
    errors = validate(tmp_path, COMBOS[combo])  # relative paths resolve as in docker/
    assert any(expected in e for e in errors), errors
    assert _resolved_real(COMBOS[combo])[0] is not None  # ... while the real files pass (test_combination_is_valid)


# --------------------------------------------------------------------------------------------
# gen-certs.sh produces what the overlays mount


needs_tools = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("ssh-keygen") and shutil.which("bash")),
    reason="openssl, ssh-keygen and bash are needed",
)


@needs_tools
def test_gen_certs(tmp_path, docs):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    script = DOCKER / "gen-certs.sh"

    def run() -> dict[str, bytes]:
        proc = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}

    first = run()
    # every secret file of the overlays is produced
    for key in ("tls", "auth"):
        for name, sec in docs[key]["secrets"].items():
            assert os.path.normpath(sec["file"]) in first, f"{name}: {sec['file']} not produced by gen-certs.sh"
    ca = x509.load_pem_x509_certificate(first["certificates/ca.crt"])

    def sans(name: str) -> set[str]:
        cert = x509.load_pem_x509_certificate(first[f"certificates/{name}.pem"])
        cert.verify_directly_issued_by(ca)
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {f"DNS:{d}" for d in ext.get_values_for_type(x509.DNSName)} | {
            f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)
        }

    assert {"DNS:superlink", "DNS:localhost", "IP:127.0.0.1", "IP:::1"} <= sans("server")
    for n in range(1, NUM_NODES + 1):
        assert {f"DNS:supernode-{n}", "IP:127.0.0.1"} <= sans(f"supernode-{n}")  # bridge and host networking
        key = serialization.load_ssh_private_key(first[f"keys/supernode_{n}"], password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
        pub = serialization.load_ssh_public_key(first[f"keys/supernode_{n}.pub"])
        assert pub.public_numbers() == key.public_key().public_numbers()
        assert (tmp_path / f"keys/supernode_{n}").stat().st_mode & 0o077 == 0
    assert run() == first  # idempotent
    # a new CA re-issues the certificates (they would no longer verify), keeps the auth keys
    for f in ("ca.crt", "ca.key"):
        (tmp_path / "certificates" / f).unlink()
    third = run()
    new_ca = x509.load_pem_x509_certificate(third["certificates/ca.crt"])
    x509.load_pem_x509_certificate(third["certificates/server.pem"]).verify_directly_issued_by(new_ca)
    assert third["keys/supernode_1"] == first["keys/supernode_1"]
