# syncd as a container: `syncd run` (the daemon), JSON logs on stdout, state in a volume.
#   docker build -t syncd .
#   docker run -d --name syncd --stop-timeout 30 \
#     -v syncd-state:/var/lib/syncd -v ./syncd.toml:/etc/syncd/syncd.toml:ro \
#     -e SYNCD_CONFIG=/etc/syncd/syncd.toml -e JODO_APIKEY=... syncd
# More in docs/container.md.

# The base image by digest (python:3.11-slim): a rebuild gets the same image. To move to
# a newer one: `docker buildx imagetools inspect python:3.11-slim`, then pass
# --build-arg BASE_IMAGE=python:3.11-slim@sha256:<digest> (or edit this line).
ARG BASE_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# -- build: install syncd and its dependencies into a virtualenv --------------------
FROM ${BASE_IMAGE} AS build
# A compiler only for dependencies without a wheel for this platform; it stays in this stage.
# (Unpinned: Debian's security updates replace exact versions; the run image has none of it.)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/syncd
ENV PATH=/opt/syncd/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, exactly as locked (versions and hashes): this layer is rebuilt only
# when requirements.lock changes, not at every code change. `make lock` regenerates it.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY syncd ./syncd
RUN pip install --no-deps .

# -- run: the virtualenv on a clean slim image, as an unprivileged user ----------------
FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Keeps call-center dialers (Jodo, Ameyo, uContact) in step with a CRM" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.documentation="/usr/share/doc/syncd/README.md" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"
RUN groupadd --system --gid 10001 syncd \
 && useradd --system --uid 10001 --gid syncd --home-dir /var/lib/syncd \
      --shell /usr/sbin/nologin syncd \
 && mkdir -p /var/lib/syncd /etc/syncd \
 && chown syncd:syncd /var/lib/syncd \
 && chmod 0700 /var/lib/syncd
COPY --from=build /opt/syncd /opt/syncd
# Two COPYs: a folder's contents land in the destination, not the folder, so one COPY of
# README.md and docs/ flattened docs/ beside README and its docs/x.md links were dead.
COPY README.md /usr/share/doc/syncd/
COPY docs/ /usr/share/doc/syncd/docs/

# Everything below can be overridden with `-e`; see docs/container.md.
ENV PATH=/opt/syncd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SYNCD_LOG__FORMAT=json \
    SYNCD_LOG__STREAM=stdout \
    SYNCD_STATE__PATH=/var/lib/syncd/state.db \
    SYNCD_HEALTH__LISTEN=0.0.0.0:9310

# State (the SQLite store and its lock) must outlive the container. The config is not a
# volume: mount it read-only (`-v ./syncd.toml:/etc/syncd/syncd.toml:ro`), or an empty
# anonymous volume would hide it.
VOLUME ["/var/lib/syncd"]
EXPOSE 9310
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/syncd

# Liveness: the daemon's event loop answers /healthz (reads SYNCD_HEALTH__LISTEN).
HEALTHCHECK --interval=30s --timeout=6s --start-period=60s --retries=3 \
  CMD ["python", "-m", "syncd.daemon.healthcheck", "/healthz"]

# SIGTERM: in-flight batches finish within run.shutdown_grace_s (20 s), so give the
# container more than that to stop: `docker run --stop-timeout 30`, compose `stop_grace_period`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["syncd", "run"]
CMD []
