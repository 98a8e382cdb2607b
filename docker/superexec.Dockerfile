# SuperExec image for Bouquet's ServerApp and ClientApps (Flower 1.41, process isolation).
# Built by compose.yml with the Bouquet checkout (this folder's parent) as build context:
#   docker compose build            (or: docker build -f docker/superexec.Dockerfile .  from the repo root)
#
# The official flwr/serverapp and flwr/clientapp images are discontinued (last tag 1.20.0):
# app images are now built FROM flwr/superexec with the app's dependencies installed.
# The app code itself still travels as a FAB with every `flwr run`.
ARG FLWR_VERSION=1.41.0
FROM flwr/superexec:${FLWR_VERSION}

WORKDIR /app

# CPU-only PyTorch first, so that `pip install .` finds torch satisfied and does not pull
# the CUDA wheels (several GB).
RUN python -m pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# The image already has flwr at the pinned version: replace the `flwr[simulation,dp]` requirement
# by its one extra a deployment needs (dp-accounting; Ray is for simulation only), then install
# Bouquet and its dependencies.
COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app bouquet ./bouquet
RUN sed -i 's/"flwr\[simulation,dp\]==[^"]*"/"dp-accounting==0.6.0"/' pyproject.toml \
    && python -m pip install --no-cache-dir . \
    && mkdir -p /app/results /app/state

ENTRYPOINT ["flower-superexec"]
