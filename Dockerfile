# syntax=docker/dockerfile:1
# The provisioner image: `provisioner serve` (web + one worker) by default, `provisioner worker` to scale.
#
#   docker build -t provisioner:0.1.0 .
#   docker run --rm -p 8090:8090 --env-file my.env provisioner:0.1.0
#
# Two stages: the builder turns the project and every dependency into wheels (compilers available in case
# a dependency ships only an sdist); the runtime stage installs those wheels from a bind mount, so neither
# the compilers nor the wheel files end up in the final image.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY provisioner ./provisioner
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=1000
ARG GID=1000
# UID/GID 1000 on purpose: code-server's `coder` and rocker's `rstudio` users are 1000 too, so the project
# directories and the 0600 .env files the provisioner writes into the shared products volume are readable
# in the IDEs without loosening file modes.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/home/provisioner \
    PROVISIONER_HOST=0.0.0.0 \
    PROVISIONER_PORT=8090 \
    PROVISIONER_DATA_DIR=/data \
    PROVISIONER_PRODUCTS_DIR=/data/products
# Wheels come from a bind mount of the builder stage, so none stays in a layer. The package is installed without its
# `embedded` extra: no embedded PostgreSQL, SeaweedFS or moto (and so no Flask, sympy or cfn-lint) in the image; it
# needs PROVISIONER_DATABASE_URL and PROVISIONER_S3_ENDPOINT (one line at start names the missing one). Long-running
# services also set PROVISIONER_ALLOW_EMBEDDED=false (compose, the k8s ConfigMap); the image does not, because
# one-shot commands such as `provisioner webhook-url` need neither.
# The project template is package data (provisioner/templates/sqlmesh): no PROVISIONER_TEMPLATE needed.
# /run/provisioner: where one-shot steps leave files for other containers (compose: the signed v2 webhook URL).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels provisioner \
 && groupadd --gid "${GID}" provisioner \
 && useradd --uid "${UID}" --gid "${GID}" --home-dir /home/provisioner --create-home --shell /usr/sbin/nologin provisioner \
 && mkdir -p /data/products /app /run/provisioner \
 && chown -R provisioner:provisioner /data /run/provisioner
WORKDIR /app
USER provisioner:provisioner
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=6 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PROVISIONER_PORT', '8090'), timeout=4)"]
ENTRYPOINT ["provisioner"]
CMD ["serve"]
