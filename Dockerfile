# syntax=docker/dockerfile:1
# The rotator worker image. Build it with `make image` (scripts/build-image: Docker, or podman where
# there is no Docker daemon), which passes VERSION from rotator/__init__.py, the one source of the
# version, and the git revision; a bare `docker build .` labels the version "unknown".
#
# Two stages: the build stage installs the package and its dependencies into a virtualenv; the
# runtime stage copies only that virtualenv onto a clean slim base, so no pip, build cache or
# source tree ships. The image runs as a numeric non-root user (so Kubernetes `runAsNonRoot` can
# verify it) and writes nothing outside /tmp, so it runs with a read-only root filesystem and an
# emptyDir on /tmp. No secret is copied in: .dockerignore admits only pyproject.toml, README.md
# and rotator/, and signer keys arrive at run time from a Kubernetes Secret, Vault or KMS.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/rotator
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rotator ./rotator
# pip byte-compiles what it installs, so the read-only runtime never needs to write .pyc files.
RUN /opt/rotator/bin/pip install --no-cache-dir . \
 && /opt/rotator/bin/rotator --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
# Re-declared: an ARG before the first FROM is not in scope inside a stage (the base.name label).
ARG PYTHON_IMAGE
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="rotator" \
      org.opencontainers.image.description="Keeps Polymarket CLOB API credentials fresh: re-issue, publish, grace, revoke." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed numeric uid/gid that matches the Helm chart's securityContext (runAsUser/runAsGroup).
# The base leaves /var/tmp and /run/lock world-writable: only /tmp stays writable to the worker,
# so the image is safe even where the root filesystem is not mounted read-only.
RUN groupadd --system --gid 10001 rotator \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin rotator \
 && find / -xdev -path /tmp -prune -o -perm -0002 ! -type l -exec chmod o-w {} +

COPY --from=build /opt/rotator /opt/rotator

# HOME and TMPDIR point at the only writable place (an emptyDir in Kubernetes). The working
# directory stays read-only on purpose: a file store configured with a relative path must fail
# loudly instead of writing keys into an ephemeral directory.
ENV PATH="/opt/rotator/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /

USER 10001:10001
# /metrics, /healthz and /readyz of `rotator run`.
EXPOSE 9464
ENTRYPOINT ["rotator"]
CMD ["--help"]
