#!/usr/bin/env bash
# Local images for machines that cannot pull from Docker Hub (the compose files keep the official
# flwr/* images as their default; FLWR_IMAGE_PREFIX=bouquet-local/ selects these instead):
#
#   bouquet/debian-base:bookworm         debootstrap --variant=minbase from this machine's Debian
#                                        mirror (+ python3, python3-venv, ca-certificates), with the
#                                        host's CA bundle, then `docker import`
#   bouquet-local/superlink:<flwr>       \
#   bouquet-local/supernode:<flwr>        } flwr-local.Dockerfile: pip install flwr==<pin> in
#   bouquet-local/superexec:<flwr>       /  /python/venv, user app (49999), the Flower entrypoint
#   bouquet-local/bouquet-superexec:<flwr>  (--app) superexec.Dockerfile FROM the local superexec,
#                                        with the CPU torch wheel found on this machine
#
#   docker/build-local-images.sh [--app]
#
# Each image carries the label org.bouquet.inputs (a hash of everything it is built from); an
# image whose label matches is not rebuilt, so a second call takes seconds. Needs root for
# debootstrap (only when the base image is missing or stale).
# Environment: FLWR_VERSION (default: the pin in pyproject.toml), LOCAL_IMAGE_PREFIX
# (bouquet-local/), BOUQUET_BASE_IMAGE, BOUQUET_SUPEREXEC_IMAGE, DEBIAN_SUITE (bookworm),
# DEBIAN_MIRROR (default: from /etc/apt/sources.list*), HOST_CA_BUNDLE
# (/etc/ssl/certs/ca-certificates.crt), TORCH_WHEEL (default: searched in pip's find-links and
# /opt/wheels).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RECIPE=1  # bump to rebuild everything
LABEL=org.bouquet.inputs
SUITE=${DEBIAN_SUITE:-bookworm}
PIN=$(sed -n 's/^ *"flwr\(\[[^]]*\]\)\?==\([^"]*\)".*/\2/p' "$ROOT/pyproject.toml" | head -1)
TORCH_PIN=$(sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -1)
FLWR_VERSION=${FLWR_VERSION:-$PIN}
PREFIX=${LOCAL_IMAGE_PREFIX:-bouquet-local/}
BASE_IMAGE=${BOUQUET_BASE_IMAGE:-bouquet/debian-base:$SUITE}
APP_IMAGE=${BOUQUET_SUPEREXEC_IMAGE:-${PREFIX}bouquet-superexec:$FLWR_VERSION}
CA=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
INCLUDE=python3,python3-venv,ca-certificates
export DOCKER_BUILDKIT=0  # the legacy builder: no buildx plugin needed, and --network host works

BUILD_APP=0
for arg in "$@"; do
  case $arg in
    --app) BUILD_APP=1 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "build-local-images.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[build-local-images %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[build-local-images] FAILED: %s\n' "$*" >&2; exit 1; }
sha() { sha256sum | cut -c1-64; }
label_of() { docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }
image_id() { docker image inspect -f '{{.Id}}' "$1"; }

[[ -n $FLWR_VERSION ]] || die "no flwr pin found in $ROOT/pyproject.toml"
[[ -r $CA ]] || die "CA bundle $CA not readable (set HOST_CA_BUNDLE)"

# The first deb line of this machine's APT sources for $SUITE (one-line or deb822 format).
detect_mirror() {
  local f uri
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    uri=$(awk -v s="$SUITE" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                           if ($(i + 1) == s) { print $i; exit } }' "$f")
    [[ -n $uri ]] && { echo "${uri%/}"; return; }
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk -v s="$SUITE" 'BEGIN { RS = "" }
      { u = ""; ok = 0; n = split($0, L, "\n")
        for (k = 1; k <= n; k++) {
          if (L[k] ~ /^URIs:/) { split(L[k], a, " "); u = a[2] }
          if (L[k] ~ /^Suites:/) { m = split(L[k], b, " "); for (j = 2; j <= m; j++) if (b[j] == s) ok = 1 }
          if (L[k] ~ /^Types:/ && L[k] !~ /(^|[ \t])deb([ \t]|$)/) ok = -1000 }
        if (ok > 0 && u != "") { print u; exit } }' "$f")
    [[ -n $uri ]] && { echo "${uri%/}"; return; }
  done
  echo "http://deb.debian.org/debian"
}

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bouquet-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---- bouquet/debian-base ----------------------------------------------------------------------
MIRROR=${DEBIAN_MIRROR:-$(detect_mirror)}
base_hash=$(printf 'recipe=%s suite=%s mirror=%s include=%s ca=%s' "$RECIPE" "$SUITE" "$MIRROR" "$INCLUDE" \
  "$(sha <"$CA")" | sha)
if [[ $(label_of "$BASE_IMAGE") == "$base_hash" ]]; then
  log "$BASE_IMAGE up to date"
else
  t0=$SECONDS
  [[ $(id -u) == 0 ]] || die "debootstrap needs root (build $BASE_IMAGE once as root)"
  if ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || die "debootstrap is not installed"
    log "installing debootstrap (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
  fi
  log "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $MIRROR"
  rootfs="$WORK/rootfs"
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  # what the official Debian images leave out: package caches and lists
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/* "$rootfs"/tmp/*
  # the host's CA bundle (this network's TLS proxy included); kept as a local CA too, so that a
  # later update-ca-certificates keeps it
  install -m 0644 "$CA" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  install -m 0644 "$CA" "$rootfs/usr/local/share/ca-certificates/host-ca-bundle.crt"
  tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change "LABEL $LABEL=$base_hash" --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  log "built $BASE_IMAGE in $((SECONDS - t0)) s"
fi

# ---- local flwr/superlink, flwr/supernode, flwr/superexec --------------------------------------
flwr_hash=$(printf 'recipe=%s base=%s flwr=%s dockerfile=%s' "$RECIPE" "$(image_id "$BASE_IMAGE")" "$FLWR_VERSION" \
  "$(sha <"$HERE/flwr-local.Dockerfile")" | sha)
mkdir -p "$WORK/empty"
for target in superlink supernode superexec; do
  image="${PREFIX}$target:$FLWR_VERSION"
  if [[ $(label_of "$image") == "$flwr_hash" ]]; then
    log "$image up to date"
    continue
  fi
  t0=$SECONDS
  log "building $image (pip install flwr==$FLWR_VERSION)"
  docker build -q --network host -f "$HERE/flwr-local.Dockerfile" --target "$target" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "FLWR_VERSION=$FLWR_VERSION" \
    --label "$LABEL=$flwr_hash" -t "$image" "$WORK/empty" >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log" >&2; die "docker build of $image failed"; }
  log "built $image in $((SECONDS - t0)) s"
done

[[ $BUILD_APP == 1 ]] || exit 0

# ---- Bouquet's SuperExec image (superexec.Dockerfile FROM the local superexec) -----------------
find_torch_wheel() {
  local dir links
  [[ -n ${TORCH_WHEEL:-} ]] && { echo "$TORCH_WHEEL"; return; }
  links="${PIP_FIND_LINKS:-} $(python3 -m pip config get global.find-links 2>/dev/null || true) /opt/wheels"
  for dir in $links; do
    dir=${dir#file://}
    [[ -d $dir ]] || continue
    # the image's Python is Debian's 3.11
    compgen -G "$dir/torch-$TORCH_PIN+cpu-cp311-cp311-manylinux*_x86_64.whl" | head -1 && return
  done
  return 0
}
wheel=$(find_torch_wheel)
[[ -n $wheel && -f $wheel ]] || die "no torch-$TORCH_PIN+cpu cp311 x86_64 wheel found (set TORCH_WHEEL=/path/to/wheel);
  download.pytorch.org is the fallback superexec.Dockerfile uses, and it is not reachable from every machine"
ctx="$WORK/context"
mkdir -p "$ctx/docker/wheels"
cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$ctx/"
cp "$HERE/superexec.Dockerfile" "$ctx/docker/"
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -c bouquet | tar -C "$ctx" -x
ln "$wheel" "$ctx/docker/wheels/" 2>/dev/null || cp "$wheel" "$ctx/docker/wheels/"
app_hash=$( { printf 'recipe=%s from=%s wheel=%s\n' "$RECIPE" "$(image_id "${PREFIX}superexec:$FLWR_VERSION")" \
  "$(basename "$wheel") $(stat -c %s "$wheel")"
  cd "$ctx" && find . -type f ! -name '*.whl' | LC_ALL=C sort | xargs sha256sum; } | sha)
if [[ $(label_of "$APP_IMAGE") == "$app_hash" ]]; then
  log "$APP_IMAGE up to date"
  exit 0
fi
t0=$SECONDS
log "building $APP_IMAGE (superexec.Dockerfile; torch from $(basename "$wheel"), the rest from the package index)"
docker build --network host -f "$ctx/docker/superexec.Dockerfile" \
  --build-arg "FLWR_IMAGE_PREFIX=$PREFIX" --build-arg "FLWR_VERSION=$FLWR_VERSION" --build-arg "TORCH_PIP_OPTIONS=" \
  --label "$LABEL=$app_hash" -t "$APP_IMAGE" "$ctx" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; die "docker build of $APP_IMAGE failed"; }
log "built $APP_IMAGE in $((SECONDS - t0)) s"
