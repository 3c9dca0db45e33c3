# syntax=docker/dockerfile:1
# mentorpulse image (README "Container"):
#   docker run -v "$PWD/deploy/config:/config:ro" -v mentorpulse-data:/data mentorpulse
# The config folder is read-only; everything mentorpulse writes goes to /data
# ($MENTORPULSE_DATA_DIR). It runs as UID/GID 10001, never root.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Builder: wheels of mentorpulse and of every dependency, at the versions pinned in
# constraints.txt (README "Container" says how to regenerate it), so a rebuild installs
# the same versions.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md LICENSE ./
COPY mentorpulse ./mentorpulse
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt .

# Runtime: only those wheels, installed without an index; no compiler, no source tree.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MENTORPULSE_CONFIG=/config/mentorpulse.yaml \
    MENTORPULSE_DATA_DIR=/data
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels mentorpulse \
    && groupadd --system --gid 10001 mentorpulse \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin mentorpulse \
    && mkdir -p /config /data \
    && chown 10001:10001 /data && chmod 0700 /data
# An example to start from; mount your own folder over it (read-only).
COPY deploy/config/ /config/
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# /healthz, /readyz, /metrics: service.http in the config, host 0.0.0.0 in a container.
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
ENTRYPOINT ["mentorpulse"]
CMD ["run"]
