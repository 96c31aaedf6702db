# syntax=docker/dockerfile:1
# The rotator worker image. Build it with `make image` (scripts/build-image: Docker, or podman where
# there is no Docker daemon), which passes VERSION from rotator/__init__.py, the one source of the
# version, and the git revision; a bare `docker build .` labels the version "unknown".
#
# Three stages. `build` installs the worker into a virtualenv from the lock: requirements/image.txt,
# the image's part of requirements/lock.txt (`make lock`), so the image holds exactly the versions
# the test suite ran with, each wheel checked against its sha256. `rootfs` is the base without what
# only installs software (pip, setuptools, the venv module's wheels) plus that virtualenv and an
# SBOM of both. `runtime` is that tree flattened onto an empty image, so what `rootfs` removed is
# really gone (a deletion in a later layer would hide files, not shrink the image).
#
# The image runs as a numeric non-root user (so Kubernetes `runAsNonRoot` can verify it) and writes
# nothing outside /tmp, so it runs with a read-only root filesystem and an emptyDir on /tmp. No
# secret is copied in: .dockerignore admits only the package sources, the image's lock and the SBOM
# script, and signer keys arrive at run time from a Kubernetes Secret, Vault or KMS.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/rotator
WORKDIR /src
# The third-party packages, exactly as locked; --no-deps because the lock already is the whole
# closure, less what requirements/image.txt names as left out (pytest, which two of py-clob-client's
# dependencies declare and none imports).
COPY requirements/image.txt requirements/
RUN /opt/rotator/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements/image.txt
COPY pyproject.toml README.md ./
COPY rotator ./rotator
# pip byte-compiles what it installs, so the read-only runtime never needs to write .pyc files.
RUN /opt/rotator/bin/pip install --no-cache-dir --no-deps . \
 && /opt/rotator/bin/rotator --help >/dev/null
# What ships without ever running: pip and setuptools; the stray top-level directories some wheels
# put in site-packages (tests/ of py-clob-client, py-order-utils and py-builder-signing-sdk; docs/
# and newsfragments/ of eth-abi, eth-rlp and hexbytes); pycryptodome's self-tests; C and Cython
# sources shipped beside their compiled extensions; and botocore's models of the AWS services
# rotator never calls (it calls Secrets Manager and KMS, and STS and SSO for credentials).
WORKDIR /opt/rotator/lib/python3.11/site-packages
RUN /opt/rotator/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && rm -rf tests docs newsfragments Crypto/SelfTest \
 && find . -type f \( -name '*.c' -o -name '*.h' -o -name '*.pyx' -o -name '*.pxd' \) -delete \
 && find botocore/data -mindepth 1 -maxdepth 1 -type d ! -name secretsmanager ! -name kms \
      ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} + \
 && /opt/rotator/bin/rotator --version >/dev/null

FROM ${PYTHON_IMAGE} AS rootfs
ARG VERSION=unknown
# A fixed numeric uid/gid that matches the Helm chart's securityContext (runAsUser/runAsGroup).
# The base leaves /var/tmp and /run/lock world-writable: only /tmp stays writable to the worker,
# so the image is safe even where the root filesystem is not mounted read-only. Then what only
# installs software goes: python:3.11-slim's own pip, setuptools and wheel (and ensurepip's copies),
# and the Debian packages of the venv module's wheels, of apt (with its keyring and the TLS and
# crypto libraries only it uses) and of e2fsprogs, each purged with dpkg so the package database,
# which the SBOM reads, stays true. dpkg refuses to purge a package another one still needs: that
# one stays (the loop tries each and moves on).
RUN groupadd --system --gid 10001 rotator \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin rotator \
 && find / -xdev -path /tmp -prune -o -perm -0002 ! -type l -exec chmod o-w {} + \
 && rm -rf /usr/local/lib/python3.11/site-packages/pip* /usr/local/lib/python3.11/site-packages/setuptools* \
      /usr/local/lib/python3.11/site-packages/wheel* /usr/local/lib/python3.11/site-packages/pkg_resources \
      /usr/local/lib/python3.11/site-packages/_distutils_hack \
      /usr/local/lib/python3.11/site-packages/distutils-precedence.pth \
      /usr/local/lib/python3.11/ensurepip /usr/local/bin/pip* /usr/local/bin/wheel \
 && for p in python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl \
      apt libapt-pkg6.0 debian-archive-keyring gpgv e2fsprogs libext2fs2 libss2 logsave \
      libgnutls30 libhogweed6 libnettle8 libp11-kit0 libtasn1-6 libidn2-0 libunistring2 libseccomp2 \
      libxxhash0; do \
      dpkg --purge "$p" >/dev/null 2>&1 || true; done \
 && rm -rf /usr/lib/python3.11/ensurepip /usr/share/python-wheels /var/cache/* /var/lib/apt /var/log/* \
      /root/.cache
COPY --from=build /opt/rotator /opt/rotator
# The SBOM (CycloneDX): every Debian and Python package in the image, read from the image itself.
COPY scripts/sbom.py /tmp/sbom.py
RUN /opt/rotator/bin/python /tmp/sbom.py --version "${VERSION}" --output /opt/rotator/sbom.cdx.json \
 && rm -rf /tmp/sbom.py /tmp/__pycache__

FROM scratch AS runtime
# Re-declared: an ARG before the first FROM is not in scope inside a stage (the base.name label).
ARG PYTHON_IMAGE
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="polymarket-rotator" \
      org.opencontainers.image.description="Keeps Polymarket CLOB API credentials fresh: re-issue, publish, grace, revoke." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# The whole tree of rootfs, on purpose: that is what flattens it (hadolint's DL3067 warns of it).
# hadolint ignore=DL3067
COPY --from=rootfs / /

# HOME and TMPDIR point at the only writable place (an emptyDir in Kubernetes). The working
# directory stays read-only on purpose: a file store configured with a relative path must fail
# loudly instead of writing keys into an ephemeral directory. An empty image has no environment of
# its own: PATH and the locale are set here in full.
ENV PATH="/opt/rotator/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" \
    LANG=C.UTF-8 \
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
