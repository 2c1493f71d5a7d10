# syntax=docker/dockerfile:1
# The district hub: `imaging-hub hub serve` (HTTP API, DICOMweb, browser app; it migrates the
# database before it serves). Build from the repository root:
#   docker build -f docker/hub.Dockerfile -t imaging-hub-hub:0.1.0 .
# Every Python dependency comes from requirements/lock.txt, checked against its hashes; the
# project itself is installed with --no-deps, so nothing is resolved at build time.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/build-lock.txt requirements/build-lock.txt
RUN python -m pip install --require-hashes -r requirements/build-lock.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/imaging-hub/bin:$PATH \
    IMAGING_HUB_HOST=0.0.0.0 IMAGING_HUB_PORT=8000 \
    IMAGING_HUB_DATA_DIR=/var/lib/imaging-hub
# WenQuanYi Micro Hei: Chinese in the signed report PDFs; postgresql-client: pg_dump for
# `imaging-hub admin backup`. Not pinned to a Debian revision: bookworm's security updates
# replace those, and the base image above is pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-wqy-microhei postgresql-client \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/lock.txt /tmp/lock.txt
COPY --from=build /wheels /tmp/wheels
RUN python -m venv /opt/imaging-hub \
    && /opt/imaging-hub/bin/pip install --require-hashes -r /tmp/lock.txt \
    && /opt/imaging-hub/bin/pip install --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/lock.txt /tmp/wheels
COPY docker/hub-healthcheck.py /opt/imaging-hub/hub-healthcheck.py
RUN groupadd --system --gid 10001 imaging-hub \
    && useradd --system --uid 10001 --gid imaging-hub --home-dir /var/lib/imaging-hub \
       --create-home --shell /usr/sbin/nologin imaging-hub
USER 10001:10001
WORKDIR /var/lib/imaging-hub
VOLUME ["/var/lib/imaging-hub"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/imaging-hub/hub-healthcheck.py"]
ENTRYPOINT ["imaging-hub"]
CMD ["hub", "serve"]
