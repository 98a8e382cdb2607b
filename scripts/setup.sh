#!/usr/bin/env bash
# Create .venv (Python >= 3.11; tested with 3.11) and install Bouquet with its test extra.
# torch first, the build chosen by the machine: with an NVIDIA GPU (nvidia-smi lists one) the
# default PyPI wheel (CUDA), else the CPU wheel (+cpu, from PyTorch's CPU index unless a local
# wheel satisfies it), so an ordinary machine does not download several GB of CUDA libraries.
# A second call does nothing when torch is there and pyproject.toml has not changed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TORCH=2.13.0
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
. .venv/bin/activate
if ! python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH')" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
        echo "[setup] NVIDIA GPU found: installing torch $TORCH with CUDA"
        python -m pip install -q "torch==$TORCH"
    else
        echo "[setup] no NVIDIA GPU: installing the CPU build of torch $TORCH"
        python -m pip install -q "torch==$TORCH+cpu" 2>/dev/null \
            || python -m pip install -q "torch==$TORCH+cpu" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
STAMP=.venv/.bouquet-installed
WANT=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! python -c "import bouquet" 2>/dev/null; then
    echo "[setup] installing Bouquet (editable) and its dependencies into .venv"
    python -m pip install -q -e ".[test]"
    echo "$WANT" > "$STAMP"
fi
