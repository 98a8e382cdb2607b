"""Offline validation of the Docker Compose deployment in docker/ (no Docker engine needed).

Layers, each able to fail on its own:
1. Compose specification: every file and every merged overlay combination is parsed by
   ``compose_spec`` (Rust compose-spec parser, test extra ``compose-spec``), plus our own
   structural checks (known keys, value types) that always run.
2. Flower 1.41 argv: each container's entrypoint+command is checked against the ``--help``
   of the installed ``flower-superlink``/``flower-supernode``/``flower-superexec`` (unknown,
   deprecated, repeated and value-less flags, choices, required flags), so a flag that drifts
   with a Flower upgrade fails here.
3. Deployment semantics: addresses/ports wiring, TLS on every hop or none, own auth key per
   SuperNode, per-institution data volume matching its node-config, mounted paths for every
   file flag, image tags equal to the flwr pin in pyproject.toml, the Dockerfile.
4. gen-certs.sh really produces the files the overlays mount (SANs, CA chain, EC P-384 keys,
   idempotence).
5. If a Compose v2 CLI is present (``docker compose`` or $BOUQUET_COMPOSE_BIN), ``config``
   accepts every combination and merges overlays exactly as our merge does.
Deliberately broken copies of the files must be rejected (``test_broken_copy_is_rejected``).
"""

from __future__ import annotations

import copy
import json
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
FILES = {"base": "compose.yml", "tls": "with-tls.yml", "auth": "with-auth.yml", "state": "with-state.yml"}
COMBOS = {
    "base": ("base",),
    "base+tls": ("base", "tls"),
    "base+tls+auth": ("base", "tls", "auth"),
    "base+state": ("base", "state"),
    "base+tls+state": ("base", "tls", "state"),
    "base+tls+auth+state": ("base", "tls", "auth", "state"),
}
NUM_NODES = 3
SECRETS_DIR = "/run/secrets"

# --------------------------------------------------------------------------------------------
# Known Compose-spec keys (the subset of the spec a reviewer can read at a glance; anything
# else is a typo or needs adding here on purpose). Extension keys "x-*" are always allowed.
TOP_LEVEL_KEYS = {"version", "name", "include", "services", "networks", "volumes", "secrets", "configs", "models"}
SERVICE_KEYS = {
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup", "cgroup_parent",
    "command", "configs", "container_name", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota",
    "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus", "cpuset", "credential_spec", "depends_on",
    "deploy", "develop", "device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search", "domainname",
    "entrypoint", "env_file", "environment", "expose", "extends", "external_links", "extra_hosts", "gpus",
    "group_add", "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels", "links",
    "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit",
    "network_mode", "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit", "platform",
    "ports", "privileged", "profiles", "pull_policy", "read_only", "restart", "runtime", "scale",
    "secrets", "security_opt", "shm_size", "stdin_open", "stop_grace_period", "stop_signal",
    "storage_opt", "sysctls", "tmpfs", "tty", "ulimits", "user", "userns_mode", "uts", "volumes",
    "volumes_from", "working_dir",
}
BUILD_KEYS = {
    "context", "dockerfile", "dockerfile_inline", "args", "ssh", "labels", "cache_from", "cache_to",
    "no_cache", "additional_contexts", "network", "pull", "target", "shm_size", "extra_hosts",
    "isolation", "privileged", "secrets", "tags", "ulimits", "platforms",
}
VOLUME_LONG_KEYS = {"type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs", "image"}
SECRET_LONG_KEYS = {"source", "target", "uid", "gid", "mode"}
TOP_SECRET_KEYS = {"file", "environment", "external", "name", "labels", "driver", "driver_opts", "template_driver"}
NETWORK_KEYS = {"name", "driver", "driver_opts", "attachable", "enable_ipv6", "external", "internal", "ipam", "labels"}
RESTART_RE = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")

# flags whose value is a file the container must be able to read (or, for --database, write)
FILE_FLAGS = {
    "--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--root-certificates",
    "--auth-supernode-private-key", "--database", "--superexec-auth-secret-file",
    "--trusted-entities", "--executor-config",
}


# --------------------------------------------------------------------------------------------
# Loading, interpolation, normalisation, merging


def load_files(directory: Path = DOCKER) -> dict[str, dict]:
    return {key: yaml.safe_load((directory / name).read_text()) for key, name in FILES.items()}


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(obj, env: dict[str, str] | None = None, errors: list[str] | None = None):
    """Compose-style ${VAR:-default} / ${VAR-default} / ${VAR} / $$ substitution."""
    env = env or {}

    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, default = match.group(2), match.group(3)
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        if value is None:
            if errors is not None:
                errors.append(f"variable ${{{name}}} has no default")
            return ""
        return value

    if isinstance(obj, str):
        return _VAR.sub(sub, obj)
    if isinstance(obj, list):
        return [interpolate(v, env, errors) for v in obj]
    if isinstance(obj, dict):
        return {k: interpolate(v, env, errors) for k, v in obj.items()}
    return obj


def norm_volume(entry) -> dict:
    if isinstance(entry, dict):
        vol = dict(entry)
        vol.setdefault("read_only", False)
        return vol
    parts = str(entry).split(":")
    source, target = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
    mode = parts[2] if len(parts) > 2 else "rw"
    kind = "bind" if source and source[:1] in "./~" else "volume"
    return {"type": kind, "source": source, "target": target, "read_only": "ro" in mode.split(",")}


def norm_secret(entry) -> dict:
    if isinstance(entry, str):
        return {"source": entry, "target": f"{SECRETS_DIR}/{entry}"}
    target = entry.get("target") or entry["source"]
    return {**entry, "target": target if target.startswith("/") else f"{SECRETS_DIR}/{target}"}


def norm_names(value) -> list[str]:
    return list(value) if isinstance(value, (list, dict)) else []


def norm_env(value) -> dict:
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    return dict(str(item).split("=", 1) if "=" in str(item) else (str(item), "") for item in value or [])


def normalise_service(svc: dict) -> dict:
    out = copy.deepcopy(svc)
    if "volumes" in out:
        out["volumes"] = [norm_volume(v) for v in out["volumes"]]
    if "secrets" in out:
        out["secrets"] = [norm_secret(s) for s in out["secrets"]]
    for key in ("depends_on", "networks"):
        if key in out:
            out[key] = norm_names(out[key])
    if "environment" in out:
        out["environment"] = norm_env(out["environment"])
    return out


def _union(base: list, extra: list, key) -> list:
    merged = {key(item): item for item in base}
    for item in extra:
        merged[key(item)] = item
    return list(merged.values())


def merge_service(base: dict, over: dict) -> dict:
    """Compose merge rules for the keys used here: command/entrypoint are replaced, lists of
    mounts/secrets/ports/dependencies are merged (by mount target, secret target), mappings
    are merged recursively, scalars are replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key in ("command", "entrypoint"):
            out[key] = copy.deepcopy(value)
        elif key == "volumes":
            out[key] = _union(out.get(key, []), value, key=lambda v: v["target"])
        elif key == "secrets":
            out[key] = _union(out.get(key, []), value, key=lambda s: s["target"])
        elif key in ("ports", "depends_on", "networks"):
            out[key] = _union(out.get(key, []), value, key=str)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(value)} if key == "environment" else _deep(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _deep(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _deep(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def merge(docs: list[dict]) -> dict:
    project: dict = {}
    for doc in docs:
        for key, value in doc.items():
            if key == "services":
                services = project.setdefault("services", {})
                for name, svc in value.items():
                    svc = normalise_service(svc or {})
                    services[name] = merge_service(services[name], svc) if name in services else svc
            elif isinstance(value, dict):
                project[key] = _deep(project.get(key) or {}, value)
            else:
                project[key] = copy.deepcopy(value)
    return project


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
    text = proc.stdout
    usage, _, rest = text.partition("\n\n")
    spec: dict[str, dict] = {}
    for m in re.finditer(r"(--[a-z0-9][a-z0-9-]*)(?: (\{[^}]*\}|[A-Z][A-Z0-9_]*))?", usage):
        flag, arg = m.groups()
        spec[flag] = {
            "value": arg is not None,
            "choices": arg[1:-1].split(",") if arg and arg.startswith("{") else None,
            "required": not _inside_brackets(usage, m.start(1)),
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


def _inside_brackets(usage: str, pos: int) -> bool:
    return usage.count("[", 0, pos) > usage.count("]", 0, pos)


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
            i += 1
            continue
        if flag not in spec:
            errors.append(f"{where}: {binary} 1.41 has no flag {flag}")
            i += 1
            continue
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
    for flag, info in spec.items():
        if info["required"] and flag not in seen:
            errors.append(f"{where}: required flag {flag} missing")
    if "--insecure" in seen and "--root-certificates" in seen:
        errors.append(f"{where}: --insecure conflicts with --root-certificates (Flower exits)")
    ssl = [f for f in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile") if f in seen]
    if ssl and len(ssl) != 3:
        errors.append(f"{where}: needs all of --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile, has {ssl}")
    return errors, seen


# --------------------------------------------------------------------------------------------
# The validator


def flwr_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d.split("==", 1)[1] for d in deps if re.match(r"flwr(\[[^\]]*\])?==", d)]
    assert len(pins) == 1, deps
    return pins[0]


def binary_of(name: str, svc: dict) -> str | None:
    image = str(svc.get("image", ""))
    if image.startswith("flwr/superlink:"):
        return "flower-superlink"
    if image.startswith("flwr/supernode:"):
        return "flower-supernode"
    if "build" in svc and name.startswith("superexec-"):
        return "flower-superexec"
    return None


def check_structure(doc: dict, fname: str) -> list[str]:
    """Keys and value types of one file (before merging)."""
    errors = []
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        return [f"{fname}: no services mapping"]
    for key in doc:
        if key not in TOP_LEVEL_KEYS and not key.startswith("x-"):
            errors.append(f"{fname}: unknown top-level key {key!r}")
    for name, svc in doc["services"].items():
        where = f"{fname}:{name}"
        if not re.fullmatch(r"[a-zA-Z0-9._-]+", name):
            errors.append(f"{where}: invalid service name")
        if not isinstance(svc, dict):
            errors.append(f"{where}: not a mapping")
            continue
        for key in svc:
            if key not in SERVICE_KEYS and not key.startswith("x-"):
                errors.append(f"{where}: unknown service key {key!r}")
        for key in ("command", "entrypoint"):
            if key in svc and not (isinstance(svc[key], list) and all(isinstance(a, str) for a in svc[key])):
                errors.append(f"{where}: {key} must be a list of strings (exec form, no shell splitting)")
        if "image" in svc and not isinstance(svc["image"], str):
            errors.append(f"{where}: image must be a string")
        if "build" in svc:
            build = svc["build"]
            if not isinstance(build, dict):
                errors.append(f"{where}: build must be a mapping")
            else:
                errors += [f"{where}: unknown build key {k!r}" for k in build if k not in BUILD_KEYS]
        if "restart" in svc and not RESTART_RE.match(str(svc["restart"])):
            errors.append(f"{where}: invalid restart policy {svc['restart']!r}")
        if "stop_signal" in svc and not re.fullmatch(r"SIG[A-Z0-9]+", str(svc["stop_signal"])):
            errors.append(f"{where}: invalid stop_signal {svc['stop_signal']!r}")
        if "cpus" in svc and not (isinstance(svc["cpus"], (int, float)) and svc["cpus"] > 0):
            errors.append(f"{where}: cpus must be a positive number")
        for vol in svc.get("volumes", []):
            if isinstance(vol, dict):
                errors += [f"{where}: unknown volume key {k!r}" for k in vol if k not in VOLUME_LONG_KEYS]
            elif not isinstance(vol, str) or not 2 <= len(vol.split(":")) <= 3:
                errors.append(f"{where}: volume {vol!r} is not SOURCE:TARGET[:MODE]")
        for sec in svc.get("secrets", []):
            if isinstance(sec, dict):
                errors += [f"{where}: unknown secret key {k!r}" for k in sec if k not in SECRET_LONG_KEYS]
            elif not isinstance(sec, str):
                errors.append(f"{where}: secret {sec!r} must be a name")
        for port in svc.get("ports", []):
            if not (isinstance(port, str) and re.fullmatch(r"((\d{1,3}\.){3}\d{1,3}:)?\d+:\d+(/(tcp|udp))?", port)):
                errors.append(f"{where}: port {port!r} must be a quoted 'HOST_IP:HOST:CONTAINER' string")
        for key in ("depends_on", "networks"):
            if key in svc and not isinstance(svc[key], (list, dict)):
                errors.append(f"{where}: {key} must be a list or mapping")
    for name, sec in (doc.get("secrets") or {}).items():
        errors += [f"{fname}: secret {name}: unknown key {k!r}" for k in (sec or {}) if k not in TOP_SECRET_KEYS]
    for name, net in (doc.get("networks") or {}).items():
        errors += [f"{fname}: network {name}: unknown key {k!r}" for k in (net or {}) if k not in NETWORK_KEYS]
    return errors


def check_spec_parser(doc: dict, where: str) -> list[str]:
    """The compose-spec parser (``compose-spec`` test extra); [] when it is not installed."""
    try:
        from compose_spec import PyCompose
    except ImportError:
        return []
    try:
        PyCompose.from_yaml(yaml.safe_dump(interpolate(doc)))
    except ValueError as err:
        return [f"{where}: compose-spec: {err}"]
    return []


def validate(docs: dict[str, dict], combo: tuple[str, ...]) -> list[str]:
    """Every problem found in the merged project of the files in ``combo``."""
    name = "+".join(combo)
    errors: list[str] = []
    interp_errors: list[str] = []
    idocs = {key: interpolate(docs[key], {}, interp_errors) for key in combo}
    errors += [f"{name}: {e}" for e in interp_errors]
    for key in combo:
        errors += check_structure(idocs[key], FILES[key])
        errors += check_spec_parser(docs[key], FILES[key])
    if errors:
        return errors
    base_services = set(docs["base"]["services"])
    for key in combo[1:]:
        for svc in docs[key]["services"]:
            if svc not in base_services:
                errors.append(f"{FILES[key]}: service {svc!r} is not in compose.yml (overlays only modify)")
    raw = merge([docs[k] for k in combo])  # for the literal image tags and build args
    project = merge([idocs[k] for k in combo])
    errors += check_spec_parser(project, f"{name} (merged)")
    errors += check_project(project, raw, name, tls="tls" in combo, auth="auth" in combo, state="state" in combo)
    return errors


def check_project(project: dict, raw: dict, name: str, *, tls: bool, auth: bool, state: bool) -> list[str]:
    from flwr.common.config import parse_config_args  # Flower's own --node-config parser

    errors: list[str] = []
    services: dict = project["services"]
    secrets_def = project.get("secrets") or {}
    volumes_def = project.get("volumes") or {}
    networks_def = project.get("networks") or {}
    pin = flwr_pin()
    argvs: dict[str, dict] = {}

    for sname, svc in services.items():
        where = f"{name}:{sname}"
        raw_svc = raw["services"][sname]
        if "image" not in svc and "build" not in svc:
            errors.append(f"{where}: neither image nor build")
        if svc.get("stop_signal") != "SIGINT":
            errors.append(f"{where}: stop_signal must be SIGINT (flower-superlink ignores SIGTERM)")
        if "restart" not in svc:
            errors.append(f"{where}: no restart policy")
        if "cpus" not in svc and "cpus" not in str(svc.get("deploy", "")):
            errors.append(f"{where}: no CPU limit")
        if not svc.get("networks"):
            errors.append(f"{where}: not attached to the named network")
        for net in svc.get("networks", []):
            if net not in networks_def:
                errors.append(f"{where}: network {net!r} is not defined")
        for dep in svc.get("depends_on", []):
            if dep not in services:
                errors.append(f"{where}: depends_on unknown service {dep!r}")
        for sec in svc.get("secrets", []):
            if sec["source"] not in secrets_def:
                errors.append(f"{where}: secret {sec['source']!r} is not defined")
        for vol in svc.get("volumes", []):
            if vol["type"] == "volume" and vol["source"] not in volumes_def:
                errors.append(f"{where}: named volume {vol['source']!r} is not defined")
        # images pinned to the flwr version of pyproject.toml
        for prefix in ("flwr/superlink", "flwr/supernode"):
            if str(raw_svc.get("image", "")).startswith(prefix) and raw_svc["image"] != f"{prefix}:${{FLWR_VERSION:-{pin}}}":
                errors.append(f"{where}: image {raw_svc['image']!r} != {prefix}:${{FLWR_VERSION:-{pin}}}")
        if "build" in svc:
            build = raw_svc["build"]
            if build.get("args", {}).get("FLWR_VERSION") != f"${{FLWR_VERSION:-{pin}}}":
                errors.append(f"{where}: build arg FLWR_VERSION must be ${{FLWR_VERSION:-{pin}}}")
            context = (DOCKER / svc["build"]["context"]).resolve()
            if context != ROOT:
                errors.append(f"{where}: build context {context} is not the repo root")
            elif not (context / svc["build"].get("dockerfile", "Dockerfile")).is_file():
                errors.append(f"{where}: dockerfile {svc['build'].get('dockerfile')} not found in context")
            if "dockerfile_inline" in build:
                errors.append(f"{where}: dockerfile_inline is Compose-v2-only; use docker/superexec.Dockerfile")
        # argv against the installed Flower CLI
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
            errors.append(f"{where}: no command list")
            continue
        argv_errors, flags = check_argv(binary, extra + svc["command"], where)
        errors += argv_errors
        argvs[sname] = {"binary": binary, "flags": flags}
        # every file flag points into something mounted into this container
        mounts = [s["target"] for s in svc.get("secrets", [])] + [v["target"] for v in svc.get("volumes", [])]
        for flag in FILE_FLAGS & set(flags):
            path = str(flags[flag])
            if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts):
                errors.append(f"{where}: {flag} {path} is not mounted into the container")
    if errors:
        return errors

    # ---- wiring -------------------------------------------------------------------------------
    nodes = sorted(s for s in services if re.fullmatch(r"supernode-\d+", s))
    apps = sorted(s for s in services if re.fullmatch(r"superexec-clientapp-\d+", s))
    if len(nodes) != NUM_NODES or [a.rsplit("-", 1)[1] for a in apps] != [n.rsplit("-", 1)[1] for n in nodes]:
        errors.append(f"{name}: need {NUM_NODES} supernode-N, each with its superexec-clientapp-N: {nodes} {apps}")
    link = argvs.get("superlink")
    if link is None or "superexec-serverapp" not in argvs:
        return errors + [f"{name}: superlink and superexec-serverapp are required"]
    lf = link["flags"]
    link_port = str(lf.get("--port", "8000"))
    if lf.get("--isolation") != "process":
        errors.append(f"{name}:superlink: --isolation process required (apps run in SuperExec containers)")
    if lf.get("--host") != "0.0.0.0":
        errors.append(f"{name}:superlink: --host 0.0.0.0 required to be reachable from other containers")
    published = [str(p).rsplit(":", 1)[-1] for p in services["superlink"].get("ports", [])]
    if link_port not in published:
        errors.append(f"{name}:superlink: port {link_port} is not published for the flwr CLI")
    if argvs["superexec-serverapp"]["flags"].get("--runtime-api-address") != f"superlink:{link_port}":
        errors.append(f"{name}:superexec-serverapp: --runtime-api-address must be superlink:{link_port}")
    link_tls = "--ssl-certfile" in lf
    ports_seen: set[str] = set()
    partitions: dict[int, str] = {}
    state_volumes: set[str] = set()
    for node in nodes:
        n = node.rsplit("-", 1)[1]
        nf = argvs[node]["flags"]
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
        af = argvs[app]["flags"]
        if af.get("--runtime-api-address") != f"{node}:{port}":
            errors.append(f"{name}:{app}: --runtime-api-address must be {node}:{port}")
        data = [v for v in services[app].get("volumes", []) if "partitions/" in str(v.get("source"))]
        want = f"./partitions/partition_{pid}"
        if len(data) != 1 or os.path.normpath(str(data[0]["source"])) != os.path.normpath(want):
            errors.append(f"{name}:{app}: must mount exactly {want} (partition-id {pid}), has {[v['source'] for v in data]}")
        elif data[0]["target"] != data_path or not data[0]["read_only"]:
            errors.append(f"{name}:{app}: {want} must be mounted read-only at data-path {data_path}")
        mounts = [v for v in services[app].get("volumes", []) if v.get("target") == cfg.get("state-dir")]
        if len(mounts) != 1 or mounts[0].get("read_only") or mounts[0].get("type") != "volume" or \
                mounts[0].get("source") in state_volumes:
            errors.append(f"{name}:{app}: node-config state-dir {cfg.get('state-dir')!r} must be its own writable named volume")
        else:
            state_volumes.add(mounts[0]["source"])
        # TLS on the SuperNode's Runtime API iff its SuperExec connects with TLS
        node_tls = "--ssl-certfile" in nf
        if node_tls == ("--insecure" in af):
            errors.append(f"{name}:{app}: TLS mismatch with {node}'s Runtime API (server TLS={node_tls})")
        if node_tls and "--root-certificates" not in af:
            errors.append(f"{name}:{app}: TLS client without --root-certificates (the demo CA)")
        if link_tls == ("--insecure" in nf):
            errors.append(f"{where}: TLS mismatch with the SuperLink (server TLS={link_tls})")
        if link_tls and "--root-certificates" not in nf:
            errors.append(f"{where}: TLS client without --root-certificates")
    for sname, svc in services.items():  # data of one institution goes to its ClientApps only
        if not sname.startswith("superexec-clientapp-") and any(
            "partitions" in str(v.get("source")) for v in svc.get("volumes", [])
        ):
            errors.append(f"{name}:{sname}: mounts partition data")
    sf = argvs["superexec-serverapp"]["flags"]
    if link_tls == ("--insecure" in sf) or (link_tls and "--root-certificates" not in sf):
        errors.append(f"{name}:superexec-serverapp: TLS mismatch with the SuperLink (server TLS={link_tls})")

    # ---- per-overlay guarantees ----------------------------------------------------------------
    secret_file = {k: str(v.get("file", "")) for k, v in secrets_def.items()}
    for sname in argvs:
        if tls and "--insecure" in argvs[sname]["flags"]:
            errors.append(f"{name}:{sname}: --insecure left in a TLS deployment")
    if tls and not link_tls:
        errors.append(f"{name}:superlink: TLS overlay without --ssl-* on the SuperLink")
    if tls:
        for node in nodes:
            if "--ssl-certfile" not in argvs[node]["flags"]:
                errors.append(f"{name}:{node}: TLS overlay without TLS on the SuperNode Runtime API")
    for sname, svc in services.items():
        for sec in svc.get("secrets", []):
            path = secret_file.get(sec["source"], "")
            if not re.fullmatch(r"\./(certificates|keys)/[\w.-]+", path):
                errors.append(f"{name}: secret {sec['source']} file {path!r} not under ./certificates or ./keys")
        for flag in ("--ssl-keyfile", "--ssl-certfile"):
            if flag in argvs.get(sname, {}).get("flags", {}):
                src = _secret_source(svc, argvs[sname]["flags"][flag])
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
            key_path = argvs[node]["flags"].get("--auth-supernode-private-key")
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
        db = lf.get("--database")
        vols = services["superlink"].get("volumes", [])
        if not db or not any(str(db).startswith(v["target"].rstrip("/") + "/") and v["source"] == "./state" and not v["read_only"] for v in vols):
            errors.append(f"{name}:superlink: --database must live in the writable ./state volume")
    return errors


def _secret_source(svc: dict, path) -> str:
    for sec in svc.get("secrets", []):
        if sec["target"] == path:
            return sec["source"]
    return ""


# --------------------------------------------------------------------------------------------
# Tests: the real files


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


@pytest.mark.parametrize("combo", list(COMBOS))
def test_combination_is_valid(docs, combo):
    assert validate(docs, COMBOS[combo]) == []


@pytest.mark.parametrize("key", list(FILES))
def test_each_file_parses_under_the_compose_spec(docs, key):
    pytest.importorskip("compose_spec", reason="test extra 'compose-spec' not installed")
    from compose_spec import PyCompose

    compose = PyCompose.from_yaml(yaml.safe_dump(interpolate(docs[key])))
    assert set(compose.service_names()) == set(docs[key]["services"])


def test_compose_spec_parser_rejects_a_typo(docs):
    pytest.importorskip("compose_spec", reason="test extra 'compose-spec' not installed")
    broken = copy.deepcopy(docs["base"])
    broken["services"]["superlink"]["restart"] = "unless-stoped"
    assert check_spec_parser(broken, "broken")


def test_dockerfile():
    text = (DOCKER / "superexec.Dockerfile").read_text()
    pin = flwr_pin()
    assert re.search(rf"^ARG FLWR_VERSION={re.escape(pin)}$", text, re.M)
    assert re.search(r"^FROM flwr/superexec:\$\{FLWR_VERSION\}$", text, re.M)
    assert re.search(r"^ENTRYPOINT \[\"flower-superexec\"\]$", text, re.M)
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    torch_at = text.index("torch==")
    assert torch_at < text.index("pip install --no-cache-dir ."), "CPU torch must be installed before the app"
    # the sed of the Dockerfile turns pyproject.toml into a valid one without the flwr requirement
    sed = re.search(r"sed -i 's/(.*?)/(.*?)/' pyproject.toml", text)
    assert sed, "sed that drops the flwr requirement not found"
    # this BRE (.*, \[, \]) means the same in Python's re, line by line
    patched = re.sub(sed.group(1), sed.group(2), (ROOT / "pyproject.toml").read_text())
    deps = tomllib.loads(patched)["project"]["dependencies"]
    assert deps and not any(d.startswith("flwr[") or d.startswith("flwr==") for d in deps)
    assert "dp-accounting==0.6.0" in deps  # flwr[dp]'s one extra, kept for the deployment
    # every COPY source exists and is let through by the Dockerfile-specific .dockerignore
    ignore = (DOCKER / "superexec.Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[[i for i, line in enumerate(ignore) if line and not line.startswith("#")][0]] == "*"
    for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for src in line.split():
            assert (ROOT / src).exists(), src
            assert f"!{src.rstrip('/')}" in [i.rstrip("/") for i in ignore], f"{src} excluded by .dockerignore"


def test_generated_paths_are_gitignored():
    ignored = {line.strip().rstrip("/") for line in (DOCKER / ".gitignore").read_text().splitlines()}
    assert {"certificates", "keys", "partitions", "state", "server-data"} <= ignored


def test_readme_commands(docs):
    readme = (DOCKER / "README.md").read_text()
    assert "docker compose -f compose.yml -f with-tls.yml -f with-auth.yml up --build -d" in readme
    for n in range(1, NUM_NODES + 1):
        assert f"flwr supernode register keys/supernode_{n}.pub" in readme
    assert 'address = "127.0.0.1:8000"' in readme and "--stream" in readme and "flwr ls" in readme
    assert "not run" in readme.lower()


# --------------------------------------------------------------------------------------------
# Tests: deliberately broken copies must be rejected


def _cmd(docs, key, service):
    return docs[key]["services"][service]["command"]


def _replace_in(seq: list, old: str, new: str) -> None:
    seq[seq.index(old)] = new


def _drop_flag(seq: list, flag: str) -> None:
    i = seq.index(flag)
    del seq[i : i + 2]


BROKEN = {  # case: (combination, mutation of the loaded files, expected finding)
    "typo in a service key": ("base", lambda d: d["base"]["services"]["superlink"].update(stop_signl="SIGINT"),
                              "unknown service key 'stop_signl'"),
    "typo in a flag": ("base", lambda d: _replace_in(_cmd(d, "base", "supernode-1"), "--isolation", "--isolaton"),
                       "has no flag --isolaton"),
    "deprecated flag": ("base", lambda d: _cmd(d, "base", "superlink").extend(["--fleet-api-address", "0.0.0.0:9092"]),
                        "--fleet-api-address is deprecated"),
    "flag without value": ("base", lambda d: _cmd(d, "base", "supernode-2").remove("9095"), "--port needs a value"),
    "bad choice": ("base", lambda d: _replace_in(_cmd(d, "base", "superlink"), "process", "container"),
                   "--isolation 'container' not one of"),
    "command as a string": ("base", lambda d: d["base"]["services"]["superexec-serverapp"].update(command="--insecure"),
                            "command must be a list of strings"),
    "duplicate partition-id": ("base", lambda d: _replace_in(
        _cmd(d, "base", "supernode-2"), "partition-id=1 num-partitions=3 data-path='/data/partition' state-dir='/app/state'",
        "partition-id=0 num-partitions=3 data-path='/data/partition' state-dir='/app/state'"), "partition-id 0 also used by supernode-1"),
    "unquoted data-path": ("base", lambda d: _replace_in(
        _cmd(d, "base", "supernode-3"), "partition-id=2 num-partitions=3 data-path='/data/partition' state-dir='/app/state'",
        "partition-id=2 num-partitions=3 data-path=/data/partition state-dir='/app/state'"), "--node-config does not parse"),
    "another institution's data": ("base", lambda d: d["base"]["services"]["superexec-clientapp-2"].update(
        volumes=["./partitions/partition_0:/data/partition:ro"]), "must mount exactly ./partitions/partition_1"),
    "writable data mount": ("base", lambda d: d["base"]["services"]["superexec-clientapp-1"].update(
        volumes=["./partitions/partition_0:/data/partition"]), "must be mounted read-only"),
    "two institutions share a state volume": ("base", lambda d: _replace_in(
        d["base"]["services"]["superexec-clientapp-2"]["volumes"], "state-2:/app/state", "state-1:/app/state"),
        "must be its own writable named volume"),
    "no data mount": ("base", lambda d: d["base"]["services"]["superexec-clientapp-3"].pop("volumes"),
                      "must mount exactly ./partitions/partition_2"),
    "partition data in the ServerApp": ("base", lambda d: d["base"]["services"]["superexec-serverapp"]["volumes"].append(
        "./partitions/partition_0:/data/p0:ro"), "superexec-serverapp: mounts partition data"),
    "ClientApp SuperExec on the wrong node": ("base", lambda d: _replace_in(
        _cmd(d, "base", "superexec-clientapp-1"), "supernode-1:9094", "supernode-2:9095"),
        "--runtime-api-address must be supernode-1:9094"),
    "image tag off the pin": ("base", lambda d: d["base"]["services"]["supernode-1"].update(
        image="flwr/supernode:${FLWR_VERSION:-1.40.0}"), "!= flwr/supernode:${FLWR_VERSION:-"),
    "dockerfile_inline": ("base", lambda d: d["base"]["services"]["superexec-serverapp"].update(build={
        "context": "..", "dockerfile_inline": "FROM flwr/superexec:1.41.0", "args": {"FLWR_VERSION": "${FLWR_VERSION:-1.41.0}"}}),
        "dockerfile_inline is Compose-v2-only"),
    "no stop_signal": ("base", lambda d: d["base"]["services"]["supernode-3"].pop("stop_signal"),
                       "stop_signal must be SIGINT"),
    "undefined network": ("base", lambda d: d["base"]["services"]["supernode-3"].update(networks=["flowr"]),
                          "network 'flowr' is not defined"),
    "superlink not published": ("base", lambda d: d["base"]["services"]["superlink"].update(
        ports=["127.0.0.1:9999:9999"]), "port 8000 is not published"),
    "--insecure left in TLS": ("base+tls", lambda d: _cmd(d, "tls", "supernode-1").insert(0, "--insecure"),
                               "--insecure conflicts with --root-certificates"),
    "TLS client without CA": ("base+tls", lambda d: _drop_flag(_cmd(d, "tls", "superexec-serverapp"), "--root-certificates"),
                              "superexec-serverapp: TLS mismatch with the SuperLink"),
    "SuperNode Runtime API left insecure": ("base+tls", lambda d: [
        _drop_flag(_cmd(d, "tls", "supernode-2"), f) for f in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile")],
        "TLS mismatch with supernode-2's Runtime API"),
    "undefined secret": ("base+tls", lambda d: d["tls"]["secrets"].pop("superlink-key"),
                         "secret 'superlink-key' is not defined"),
    "certificate not mounted": ("base+tls", lambda d: d["tls"]["services"]["superexec-clientapp-3"].pop("secrets"),
                                "--root-certificates /run/secrets/ca-cert is not mounted"),
    "SuperNode serving the SuperLink's certificate": ("base+tls", lambda d: d["tls"]["secrets"]["supernode-1-key"].update(
        file="./certificates/server.key"), "--ssl-keyfile must be its own certificates/supernode-1.*"),
    "overlay adds a service": ("base+tls", lambda d: d["tls"]["services"].update(
        {"supernode-4": copy.deepcopy(d["tls"]["services"]["supernode-3"])}), "'supernode-4' is not in compose.yml"),
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


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_copy_is_rejected(docs, case):
    combo, mutate, expected = BROKEN[case]
    broken = copy.deepcopy(docs)
    mutate(broken)
    assert validate(docs, COMBOS[combo]) == []  # the real files pass ...
    errors = validate(broken, COMBOS[combo])  # ... the copy does not, for the expected reason
    assert any(expected in e for e in errors), errors


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
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0

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
        assert f"DNS:supernode-{n}" in sans(f"supernode-{n}")
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


# --------------------------------------------------------------------------------------------
# Compose v2 itself, when present


def compose_cli() -> list[str] | None:
    if os.environ.get("BOUQUET_COMPOSE_BIN"):
        return [os.environ["BOUQUET_COMPOSE_BIN"]]
    candidates = [["docker", "compose"], ["docker-compose"]]
    for cmd in candidates:
        if not shutil.which(cmd[0]):
            continue
        try:
            out = subprocess.run(cmd + ["version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and re.search(r"version v?2\.\d+", out.stdout):
            return cmd
    return None


@pytest.mark.skipif(compose_cli() is None, reason="no Docker Compose v2 CLI (docker compose / $BOUQUET_COMPOSE_BIN)")
@pytest.mark.parametrize("combo", list(COMBOS))
def test_docker_compose_config_agrees(docs, combo):
    cli = compose_cli()
    files = [a for key in COMBOS[combo] for a in ("-f", FILES[key])]
    env = {k: v for k, v in os.environ.items() if k not in ("FLWR_VERSION", "PROJECT_DIR", "BOUQUET_DATA")}
    proc = subprocess.run(cli + files + ["config", "--format", "json"], cwd=DOCKER, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)["services"]
    ours = merge([interpolate(docs[k]) for k in COMBOS[combo]])["services"]
    assert set(resolved) == set(ours)
    for name, svc in ours.items():
        for key in ("command", "entrypoint", "image"):
            assert resolved[name].get(key) == svc.get(key), (name, key)
        assert {s["source"] for s in resolved[name].get("secrets", [])} == {s["source"] for s in svc.get("secrets", [])}
        assert {v["target"] for v in resolved[name].get("volumes", [])} == {v["target"] for v in svc.get("volumes", [])}
