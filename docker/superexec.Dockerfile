# SuperExec image for Bouquet's ServerApp and ClientApps (Flower 1.41, process isolation).
# Built by compose.yml with the Bouquet checkout (this folder's parent) as build context:
#   docker compose build            (or: docker build -f docker/superexec.Dockerfile .  from the repo root)
#
# The official flwr/serverapp and flwr/clientapp images are discontinued (last tag 1.20.0):
# app images are now built FROM flwr/superexec with the app's dependencies installed.
# The app code itself still travels as a FAB with every `flwr run`.
#
# FLWR_IMAGE_PREFIX=bouquet-local/ builds on the local equivalent of flwr/superexec
# (build-local-images.sh) instead of the official one.
ARG FLWR_IMAGE_PREFIX=flwr/
ARG FLWR_VERSION=1.41.0
FROM ${FLWR_IMAGE_PREFIX}superexec:${FLWR_VERSION}

WORKDIR /app

# CPU-only PyTorch first, so that the app's requirements find torch satisfied and do not pull the
# CUDA wheels (several GB). Wheels put into docker/wheels/ are used first (a local torch+cpu
# wheel for a machine that cannot reach download.pytorch.org: build with
# --build-arg TORCH_PIP_OPTIONS= so that pip takes torch from there and the rest from PyPI).
ARG TORCH_PIP_OPTIONS="--index-url https://download.pytorch.org/whl/cpu"
COPY --chown=app:app docker/wheels/ /tmp/wheels/
RUN python -m pip install --no-cache-dir --find-links /tmp/wheels ${TORCH_PIP_OPTIONS} torch==2.13.0 \
    && python -c "import torch, sys; sys.exit(torch.version.cuda is not None)" \
    && rm -rf /tmp/wheels

# Bouquet's dependencies, from pyproject.toml alone (a change to the code or README reuses this
# layer). The image already has flwr at the pinned version: the `flwr[simulation,dp]`
# requirement becomes its one extra a deployment needs (dp-accounting; Ray is for simulation
# only), and opacus and infomap (no module imports them yet) are dropped; every other pin is
# kept. The stub package and README only let the build backend read the metadata.
COPY --chown=app:app pyproject.toml ./
RUN sed -i -e 's/"flwr\[simulation,dp\]==[^"]*"/"dp-accounting==0.6.0"/' -e '/^ *"opacus==/d' -e '/^ *"infomap==/d' pyproject.toml \
    && mkdir bouquet && touch bouquet/__init__.py README.md \
    && python -m pip install --no-cache-dir . \
    && rm -rf bouquet README.md

# Bouquet itself (the gateway and CLI; ServerApp and ClientApps run from the FAB).
COPY --chown=app:app README.md ./
COPY --chown=app:app bouquet ./bouquet
RUN python -m pip install --no-cache-dir --no-deps --force-reinstall . \
    && mkdir -p /app/results /app/state

ENTRYPOINT ["flower-superexec"]
