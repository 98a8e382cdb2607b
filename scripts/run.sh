#!/usr/bin/env bash
# Set up (if needed) and run one federated experiment through `flwr run` (Ray simulation).
# Usage: bash scripts/run.sh [bouquet run options: --num-supernodes N --run-config "key=value ..." --check -q -v; see bouquet run --help]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
. "$ROOT/.venv/bin/activate"
export BOUQUET_DATA="${BOUQUET_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}"
export BOUQUET_OUTPUT="${BOUQUET_OUTPUT:-$ROOT/results}"
exec bouquet run "$@"
