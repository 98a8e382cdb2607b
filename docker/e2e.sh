#!/usr/bin/env bash
# End-to-end run of the Docker Compose deployment (docker/): real containers, TLS, SuperNode auth.
#
#   bash docker/e2e.sh            (from anywhere; CI: .ci/run)
#
#  1. a Docker daemon: the running one, else (as root) `dockerd --bridge=none --iptables=false
#     --ip6tables=false` started here and stopped at the end; none possible -> "skipped: ..."
#     and exit 0. A Compose CLI: `docker compose` (v2), else `docker-compose` (v1; as root on
#     Debian, apt-get installs it).
#  2. images: build-local-images.sh --app (Debian base by debootstrap, flwr 1.41 images, Bouquet's
#     SuperExec image from superexec.Dockerfile); cached by input hash, so a second run skips it.
#     Checks: no ray/opacus/infomap, CPU torch, `pip check`, the Flower entrypoints, user 49999.
#  3. certificates and keys (gen-certs.sh), 3 partitions (bouquet export-partitions, digits/iid).
#  4. `config` of compose.yml + with-tls.yml + with-auth.yml + e2e-host.yml (host networking,
#     every port a free one on 127.0.0.1, a Fleet gateway in front of the SuperLink).
#  5. a SuperExec with a config error stops after 3 restarts (restart: on-failure:3).
#  6. SuperLink + gateway; the gateway refuses the Control API (403); the 3 SuperNode keys are
#     registered with `flwr supernode register`; 3 SuperNodes + 4 SuperExecs; all nodes online.
#  7. `flwr run` fedavg/digits/iid, 3 rounds; after round 1 the SuperNode of partition 1 is
#     killed (docker kill); the run must end finished:completed (flwr ls), summary.json on the
#     results volume must show 3 rounds and partition 1 as missing in rejected_updates.
#  8. teardown (containers, volumes, networks, temporary files), also on failure, SIGTERM or Ctrl-C.
#
# Exit 0 on success or skip, else 1 with the reason as the last line.
# Environment: BOUQUET_E2E_KEEP=1 keeps the temporary folder; BOUQUET_COMPOSE_BIN picks the
# Compose CLI; BOUQUET_E2E_RUN_TIMEOUT (600 s) bounds the run.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
T0=$SECONDS
KILLED_PARTITION=1            # supernode-2
KILLED_SERVICE=supernode-2
RUN_TIMEOUT=${BOUQUET_E2E_RUN_TIMEOUT:-600}
REASON=""
SKIPPED=""
STARTED_DOCKERD=""
E2E_DIR=""
COMPOSE_UP=0
RUN_PID=""

log() { printf '[e2e %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
skip() { SKIPPED=$*; exit 0; }
fail() { REASON=$*; exit 1; }
trap 'rc=$?; [[ -n $REASON ]] || REASON="line $LINENO: \`$BASH_COMMAND\` exited $rc"; exit 1' ERR
trap 'REASON="interrupted"; exit 130' INT TERM

cleanup() {
  local rc=$?
  trap - ERR
  set +e
  if [[ -n $RUN_PID ]] && kill -0 "$RUN_PID" 2>/dev/null; then
    kill "$RUN_PID" 2>/dev/null; wait "$RUN_PID" 2>/dev/null
  fi
  if [[ $COMPOSE_UP == 1 ]]; then
    if [[ $rc != 0 ]]; then
      log "logs of the failed run (last 25 lines per service):"
      compose logs --no-color --tail=25 2>&1 | sed -u 's/^/    /'
      [[ -s $E2E_DIR/run.log ]] && { log "flwr run output (last 40 lines):"; tail -40 "$E2E_DIR/run.log" | sed 's/^/    /'; }
    fi
    log "teardown: down -v --remove-orphans"
    compose down -v --remove-orphans --timeout 10 >"$E2E_DIR/down.log" 2>&1 \
      || { log "compose down failed:"; tail -5 "$E2E_DIR/down.log"; }
    local left
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    [[ -z $left ]] || docker rm -fv $left >/dev/null 2>&1
    left=$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    [[ -z $left ]] || docker volume rm $left >/dev/null 2>&1
  fi
  if [[ -n $E2E_DIR && -d $E2E_DIR ]]; then
    if [[ ${BOUQUET_E2E_KEEP:-0} == 1 ]]; then log "kept $E2E_DIR"; else rm -rf "$E2E_DIR"; fi
  fi
  if [[ -n $STARTED_DOCKERD ]]; then
    log "stopping the dockerd started here (pid $STARTED_DOCKERD)"
    kill "$STARTED_DOCKERD" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 0.5; done
    rm -f "$dockerd_log"
  fi
  if [[ -n $SKIPPED ]]; then
    printf '[e2e] skipped: %s\n' "$SKIPPED"
  elif [[ $rc == 0 ]]; then
    printf '[e2e] OK in %d s\n' "$((SECONDS - T0))"
  else
    printf '[e2e] FAILED after %d s: %s\n' "$((SECONDS - T0))" "${REASON:-exit $rc}"
  fi
  exit "$rc"
}
trap cleanup EXIT

# ---- 1. daemon and Compose -----------------------------------------------------------------------
command -v docker >/dev/null || skip "no docker CLI (Debian: apt-get install docker.io)"
if ! docker info >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || skip "no Docker daemon reachable, and not root to start one"
  command -v dockerd >/dev/null || skip "no Docker daemon reachable and no dockerd to start"
  log "starting dockerd --bridge=none --iptables=false --ip6tables=false"
  dockerd_log=$(mktemp "${TMPDIR:-/tmp}/bouquet-e2e-dockerd.XXXXXX.log")
  dockerd --bridge=none --iptables=false --ip6tables=false >"$dockerd_log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    why=$(grep -iE "error|fatal|failed" "$dockerd_log" | tail -1 || true)
    kill "$STARTED_DOCKERD" 2>/dev/null || true; wait "$STARTED_DOCKERD" 2>/dev/null || true
    STARTED_DOCKERD=""
    [[ -z $why ]] || rm -f "$dockerd_log"
    skip "dockerd could not start: ${why:-see $dockerd_log}"
  fi
fi
log "Docker daemon $(docker version -f '{{.Server.Version}}' 2>/dev/null)"

if [[ -n ${BOUQUET_COMPOSE_BIN:-} ]]; then
  read -r -a COMPOSE_CLI <<<"$BOUQUET_COMPOSE_BIN"
elif docker compose version >/dev/null 2>&1; then
  COMPOSE_CLI=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE_CLI=(docker-compose)
elif [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  log "no Compose CLI: apt-get install docker-compose (Debian's Compose v1)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose >/dev/null 2>&1 \
    || skip "no Docker Compose CLI and apt-get could not install docker-compose"
  COMPOSE_CLI=(docker-compose)
else
  skip "no Docker Compose CLI (docker compose / docker-compose)"
fi
log "Compose: ${COMPOSE_CLI[*]} ($("${COMPOSE_CLI[@]}" version --short 2>/dev/null || true))"

for tool in openssl ssh-keygen python3; do
  command -v "$tool" >/dev/null || fail "'$tool' is required"
done
BIN="$ROOT/.venv/bin"
[[ -x $BIN/flwr && -x $BIN/bouquet ]] || BIN=$(dirname "$(command -v flwr 2>/dev/null || echo /nonexistent/flwr)")
[[ -x $BIN/flwr && -x $BIN/bouquet ]] || fail "Bouquet is not installed on the host (bash scripts/setup.sh)"
export FLWR_DISABLE_UPDATE_CHECK=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1

# ---- 2. images ---------------------------------------------------------------------------------
FLWR_VERSION=$(sed -n 's/^ *"flwr\(\[[^]]*\]\)\?==\([^"]*\)".*/\2/p' "$ROOT/pyproject.toml" | head -1)
export FLWR_VERSION FLWR_IMAGE_PREFIX=${LOCAL_IMAGE_PREFIX:-bouquet-local/}
export BOUQUET_SUPEREXEC_IMAGE=${BOUQUET_SUPEREXEC_IMAGE:-${FLWR_IMAGE_PREFIX}bouquet-superexec:$FLWR_VERSION}
t=$SECONDS
log "images (build-local-images.sh --app)"
if ! LOCAL_IMAGE_PREFIX=$FLWR_IMAGE_PREFIX bash "$HERE/build-local-images.sh" --app 2>&1 | sed -u 's/^/    /'; then
  fail "building the images failed (see above)"
fi
log "images ready in $((SECONDS - t)) s"

for kind in superlink supernode superexec; do
  image="${FLWR_IMAGE_PREFIX}$kind:$FLWR_VERSION"
  entry=$(docker image inspect -f '{{json .Config.Entrypoint}} {{.Config.User}}' "$image")
  [[ $entry == "[\"flower-$kind\"] app" ]] || fail "$image: entrypoint/user $entry"
  version=$(docker run --rm --network none "$image" --version 2>&1 | tail -1)
  [[ $version == *"$FLWR_VERSION"* ]] || fail "$image --version: $version"
done
checked=$(docker run --rm --network none --entrypoint sh "$BOUQUET_SUPEREXEC_IMAGE" -c '
  set -e
  [ "$(id -u)" = 49999 ]
  python -m pip check >/dev/null || { python -m pip check; exit 1; }
  python - <<EOF
import importlib.metadata as md, importlib.util, sys
import torch, flwr
bad = [m for m in ("ray", "opacus", "infomap") if importlib.util.find_spec(m)]
assert not bad, f"installed but must not be: {bad}"
assert torch.version.cuda is None and torch.__version__.endswith("+cpu"), torch.__version__
cuda = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia"))
assert not cuda, cuda
assert md.version("dp-accounting") == "0.6.0" and md.version("torch-geometric") == "2.8.1"
print(f"flwr {flwr.__version__}, torch {torch.__version__}, {len(list(md.distributions()))} distributions,"
      " no ray/opacus/infomap, pip check ok")
EOF' 2>&1) || { echo "$checked"; fail "$BOUQUET_SUPEREXEC_IMAGE does not hold what superexec.Dockerfile promises"; }
log "image checks: ${checked##*$'\n'}"

# ---- 3. certificates, keys, partitions -----------------------------------------------------------
E2E_DIR=$(mktemp -d "${TMPDIR:-/tmp}/bouquet-e2e.XXXXXX")
export E2E_DIR
chmod 755 "$E2E_DIR"
bash "$HERE/gen-certs.sh" "$E2E_DIR" >"$E2E_DIR/gen-certs.log" 2>&1 || { cat "$E2E_DIR/gen-certs.log"; fail "gen-certs.sh failed"; }
# the containers run as uid 49999 (README step 1)
if [[ $(id -u) == 0 ]]; then
  chown 49999:49999 "$E2E_DIR"/certificates/server.key "$E2E_DIR"/certificates/supernode-*.key "$E2E_DIR"/keys/supernode_?
else
  chmod 644 "$E2E_DIR"/certificates/server.key "$E2E_DIR"/certificates/supernode-*.key "$E2E_DIR"/keys/supernode_?
fi
t=$SECONDS
"$BIN/bouquet" export-partitions --dataset digits --partitioner iid --num-partitions 3 \
  --out "$E2E_DIR/partitions" >"$E2E_DIR/export.log" 2>&1 || { tail -20 "$E2E_DIR/export.log"; fail "export-partitions failed"; }
mkdir -p "$E2E_DIR/server-data" "$E2E_DIR/flwr-home" "$E2E_DIR/cwd"
chmod -R a+rX "$E2E_DIR/partitions" "$E2E_DIR/server-data"
log "certificates, keys and 3 partitions in $E2E_DIR ($((SECONDS - t)) s)"

# ---- 4. the real compose config ------------------------------------------------------------------
read -r LINK_PORT GATEWAY_PORT P1 P2 P3 < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
export COMPOSE_PROJECT_NAME="bouquet-e2e-$$"
export LISTEN_HOST=127.0.0.1 SUPERLINK_HOST=127.0.0.1 SUPERLINK_PORT=$LINK_PORT E2E_GATEWAY_PORT=$GATEWAY_PORT
export FLEET_ADDRESS="127.0.0.1:$GATEWAY_PORT"
export SUPERNODE_1_HOST=127.0.0.1 SUPERNODE_2_HOST=127.0.0.1 SUPERNODE_3_HOST=127.0.0.1
export SUPERNODE_1_PORT=$P1 SUPERNODE_2_PORT=$P2 SUPERNODE_3_PORT=$P3
export BOUQUET_DATA="$E2E_DIR/server-data" PROJECT_DIR="$ROOT"
# The real merge of the user-facing files and the e2e overlay, by Compose itself; then the one
# change host networking needs that an overlay cannot make: no published ports (docker-py, i.e.
# Compose v1, refuses `ports` with network_mode: host, and an overlay can only add ports).
"${COMPOSE_CLI[@]}" --project-directory "$HERE" -f "$HERE/compose.yml" -f "$HERE/with-tls.yml" -f "$HERE/with-auth.yml" \
  -f "$HERE/e2e-host.yml" config >"$E2E_DIR/merged.yml" 2>"$E2E_DIR/config.err" \
  || { cat "$E2E_DIR/config.err"; fail "compose config rejects compose.yml + with-tls.yml + with-auth.yml + e2e-host.yml"; }
"$BIN/python" - "$E2E_DIR/merged.yml" "$E2E_DIR/compose.e2e.yml" <<'EOF' || fail "could not adapt the merged config"
import sys
import yaml

project = yaml.safe_load(open(sys.argv[1]))
for name, svc in project["services"].items():
    assert svc.get("network_mode") == "host", f"{name} is not on host networking"
    svc.pop("ports", None)
yaml.safe_dump(project, open(sys.argv[2], "w"), sort_keys=False)
EOF
FILES=(-f "$E2E_DIR/compose.e2e.yml")
compose() { "${COMPOSE_CLI[@]}" --project-directory "$HERE" "${FILES[@]}" "$@"; }
compose config -q 2>"$E2E_DIR/config.err" || { cat "$E2E_DIR/config.err"; fail "compose config rejects the adapted file"; }
log "compose config ok (project $COMPOSE_PROJECT_NAME; SuperLink 127.0.0.1:$LINK_PORT, Fleet gateway :$GATEWAY_PORT, SuperNode Runtime APIs :$P1 :$P2 :$P3)"
COMPOSE_UP=1

container_of() {  # the container of a service of this project, running or not (v1 and v2 alike)
  local ids
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=$1")
  echo "${ids%%$'\n'*}"
}
wait_port() {  # PORT SECONDS WHAT
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    ((SECONDS < deadline)) || fail "$3 does not listen on 127.0.0.1:$1 after $2 s"
    sleep 0.5
  done
}

# ---- 5. bounded restarts on a config error -------------------------------------------------------
t=$SECONDS
cat >"$E2E_DIR/broken.yml" <<EOF
services:
  superexec-serverapp:
    command: [--root-certificates, /run/secrets/no-such-ca, --runtime-api-address, "127.0.0.1:$LINK_PORT"]
EOF
compose -f "$E2E_DIR/broken.yml" up -d --no-build --no-deps superexec-serverapp >"$E2E_DIR/broken.log" 2>&1 \
  || { cat "$E2E_DIR/broken.log"; fail "could not start the broken SuperExec"; }
broken=$(container_of superexec-serverapp)
deadline=$((SECONDS + 120))
while :; do
  state=$(docker inspect -f '{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}' "$broken")
  [[ $state == "exited 3 "* ]] && break
  ((SECONDS < deadline)) || fail "SuperExec with a config error: state '$state' after 120 s (want exited after 3 restarts)"
  sleep 1
done
sleep 5
state=$(docker inspect -f '{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}' "$broken")
[[ $state == "exited 3 "* ]] || fail "SuperExec with a config error restarted again: $state"
[[ $(docker logs "$broken" 2>&1) == *"does not point to a file"* ]] || fail "the broken SuperExec failed for another reason"
compose -f "$E2E_DIR/broken.yml" rm -fsv superexec-serverapp >/dev/null 2>&1
log "SuperExec with a config error: exit ${state##* }, gave up after 3 restarts (restart: on-failure:3; $((SECONDS - t)) s)"

# ---- 6. SuperLink, gateway, registrations, SuperNodes, SuperExecs --------------------------------
t=$SECONDS
compose up -d --no-build superlink fleet-gateway >"$E2E_DIR/up.log" 2>&1 || { cat "$E2E_DIR/up.log"; fail "compose up superlink failed"; }
wait_port "$LINK_PORT" 90 "SuperLink"
wait_port "$GATEWAY_PORT" 90 "Fleet gateway"
cat >"$E2E_DIR/flwr-home/config.toml" <<EOF
[superlink]
default = "bouquet-e2e"

[superlink.bouquet-e2e]
address = "127.0.0.1:$LINK_PORT"
root-certificates = "$E2E_DIR/certificates/ca.crt"

[superlink.outsider]
address = "127.0.0.1:$GATEWAY_PORT"
root-certificates = "$E2E_DIR/certificates/ca.crt"
EOF
export FLWR_HOME="$E2E_DIR/flwr-home"
flwr() { (cd "$E2E_DIR/cwd" && "$BIN/flwr" "$@"); }
if out=$(flwr ls outsider 2>&1) || [[ $out != *403* ]]; then
  fail "the Fleet gateway let the Control API through: $(tail -3 <<<"$out")"
fi
for n in 1 2 3; do
  out=$(flwr supernode register "$E2E_DIR/keys/supernode_$n.pub" bouquet-e2e 2>&1) \
    || fail "flwr supernode register supernode_$n: $(tail -3 <<<"$out")"
done
log "SuperLink (TLS, node auth) and Fleet gateway up, gateway answers 403 to the Control API, 3 keys registered ($((SECONDS - t)) s)"
t=$SECONDS
compose up -d --no-build >>"$E2E_DIR/up.log" 2>&1 || { cat "$E2E_DIR/up.log"; fail "compose up failed"; }
deadline=$((SECONDS + 180))
while :; do
  online=$(flwr supernode list bouquet-e2e --format json 2>/dev/null \
    | python3 -c 'import json,sys; print(sum(n["status"] == "online" for n in json.load(sys.stdin)["nodes"]))' 2>/dev/null || echo 0)
  [[ $online == 3 ]] && break
  ((SECONDS < deadline)) || fail "only $online of 3 SuperNodes online after 180 s"
  sleep 2
done
log "3 SuperNodes online, 4 SuperExecs started ($((SECONDS - t)) s)"

# ---- 7. the run, one SuperNode killed after round 1 ----------------------------------------------
results() {  # cat a file of the (single) run folder on the results volume
  docker exec "$SERVERAPP" sh -c "cat /app/results/*/$1" 2>/dev/null
}
SERVERAPP=$(container_of superexec-serverapp)
t=$SECONDS
(cd "$E2E_DIR/cwd" && exec "$BIN/flwr" run "$ROOT" bouquet-e2e --stream --run-config \
  "method='fedavg' dataset='digits' partitioner='iid' num-server-rounds=3 fraction-evaluate=0.0 round-timeout=120") \
  >"$E2E_DIR/run.log" 2>&1 &
RUN_PID=$!
deadline=$((SECONDS + 300))
until [[ $'\n'$(results metrics.csv) == *$'\n1,,global_model@global_test,'* ]]; do
  kill -0 "$RUN_PID" 2>/dev/null || fail "flwr run ended before round 1 was written: $(tail -3 "$E2E_DIR/run.log")"
  ((SECONDS < deadline)) || fail "round 1 not finished after 300 s"
  sleep 2
done
log "round 1 done ($((SECONDS - t)) s): docker kill $KILLED_SERVICE (partition $KILLED_PARTITION)"
victim=$(container_of "$KILLED_SERVICE")
docker kill "$victim" >/dev/null
sleep 5
[[ $(docker inspect -f '{{.State.Running}}' "$victim") == false ]] || fail "$KILLED_SERVICE came back after docker kill"
deadline=$((SECONDS + RUN_TIMEOUT))
while kill -0 "$RUN_PID" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "flwr run still running after $RUN_TIMEOUT s"
  sleep 2
done
wait "$RUN_PID" || fail "flwr run exited $?: $(tail -3 "$E2E_DIR/run.log")"
RUN_PID=""
status=$(flwr ls bouquet-e2e --format json 2>&1 | python3 -c 'import json,sys; print(*[r["status"] for r in json.load(sys.stdin)["runs"]])' 2>&1)
[[ $status == "finished:completed" ]] || fail "flwr ls: run status '$status' (want finished:completed)"
log "flwr run finished in $((SECONDS - t)) s; flwr ls: $status"

grep -q "partition $KILLED_PARTITION (node .*is missing" "$E2E_DIR/run.log" \
  || fail "the ServerApp log does not name partition $KILLED_PARTITION as missing"
results summary.json >"$E2E_DIR/summary.json" || fail "no summary.json on the results volume"
results metrics.csv >"$E2E_DIR/metrics.csv" || fail "no metrics.csv on the results volume"
check=$(python3 - "$KILLED_PARTITION" "$E2E_DIR" <<'EOF' 2>&1
import csv, json, sys
from pathlib import Path

killed, folder = int(sys.argv[1]), Path(sys.argv[2])
s = json.loads((folder / "summary.json").read_text())
rows = list(csv.DictReader((folder / "metrics.csv").open()))
server = {r["round"] for r in rows if r["partition_id"] == "" and r["metric"] == "global_model@global_test"}


def trained(rnd):
    return sorted(int(r["partition_id"]) for r in rows
                  if r["round"] == str(rnd) and r["metric"] == "train_loss" and r["partition_id"])


missing = [r for r in s["rejected_updates"] if r["partition_id"] == killed]
others = [r for r in s["rejected_updates"] if r["partition_id"] != killed]
problems = []
if s["status"] != "completed":
    problems.append(f"status {s['status']} ({s.get('failure')})")
if s["rounds_completed"] != 3:
    problems.append(f"rounds_completed {s['rounds_completed']}")
if server != {"0", "1", "2", "3"}:
    problems.append(f"server rows for rounds {sorted(server)}")
if trained(1) != [0, 1, 2]:
    problems.append(f"round 1 trained by {trained(1)}")
if not missing or any(r["round"] < 2 for r in missing):
    problems.append(f"partition {killed} not (only after round 1) in rejected_updates {s['rejected_updates']}")
if others:
    problems.append(f"other partitions rejected: {others}")
if killed in trained(3) or not trained(3):
    problems.append(f"round 3 trained by {trained(3)}")
if problems:
    print("; ".join(problems))
else:
    gone = "; ".join(f"round {r['round']} partition {r['partition_id']} rejected: {r['reason']}" for r in missing)
    acc = s["final"].get("global_model@global_test", float("nan"))
    print(f"ok: {gone}; round 3 trained by partitions {trained(3)}; final global_model@global_test {acc:.3f}")
EOF
)
[[ $check == ok:* ]] || fail "results on the volume: $check"
log "results volume: summary.json status completed, rounds_completed 3; $check"
