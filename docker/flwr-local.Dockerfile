# Local equivalents of the official flwr/superlink, flwr/supernode and flwr/superexec images, for
# machines that cannot pull from Docker Hub. Built by build-local-images.sh (one --target each)
# on bouquet/debian-base:bookworm, a Debian minbase made with debootstrap and `docker import`:
#
#   docker build --network host -f docker/flwr-local.Dockerfile --target superlink \
#       -t bouquet-local/superlink:1.41.0 docker/
#
# Same layout as Flower's own images: Flower in the virtual environment /python/venv (first on
# PATH, owned by the user `app`, uid 49999, so that images built FROM these can pip install as
# that user), WORKDIR and HOME /app, unbuffered UTF-8 Python, the Flower binary as ENTRYPOINT.
# Differences: Debian 12's Python 3.11 instead of the official images' Python 3.13, and the
# host's CA bundle (put into the base image by build-local-images.sh) so that pip reaches the
# package index through this network's TLS proxy.
ARG BASE_IMAGE=bouquet/debian-base:bookworm
FROM ${BASE_IMAGE} AS base

ARG FLWR_VERSION=1.41.0
ARG PIP_VERSION=26.3
# Debian's venv pip (23.0) verifies TLS with its own certifi bundle, hence PIP_CERT for the first
# install; pip >= 24.2 uses the system store (/etc/ssl/certs) by default.
RUN python3 -m venv /python/venv \
    && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /python/venv/bin/python -m pip install --no-cache-dir \
        "pip==${PIP_VERSION}" "flwr==${FLWR_VERSION}" \
    && groupadd --gid 49999 app \
    && useradd --uid 49999 --gid 49999 --no-create-home --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app \
    && chown -R app:app /app /python/venv

ENV PATH=/python/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONIOENCODING=UTF-8 \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    HOME=/app
WORKDIR /app
USER app

FROM base AS superlink
ENTRYPOINT ["flower-superlink"]

FROM base AS supernode
ENTRYPOINT ["flower-supernode"]

FROM base AS superexec
ENTRYPOINT ["flower-superexec"]
