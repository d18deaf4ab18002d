# syntax=docker/dockerfile:1
# The gateway image: `python -m gateway` as a non-root user, configured by environment variables
# (docs/configuration.md; the image and its choices: docs/deployment.md).
# Build: docker build -t gateway .   Run: docker compose up (docker-compose.yml).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: install the project and its dependencies into a self-contained virtualenv --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Exactly the versions CI tested: the lock files with every hash checked (pip refuses any
# file whose hash differs and any package the lock does not name). Every dependency ships
# manylinux wheels for CPython 3.11 on x86_64 and aarch64 (uvloop, httptools, hiredis, aiohttp),
# so no compiler is needed. Dependencies first, in their own layer: a code change reuses it.
COPY requirements/build.txt requirements/main.txt ./requirements/
RUN pip install --require-hashes --no-deps -r requirements/build.txt \
 && pip install --require-hashes --no-deps -r requirements/main.txt
# The gateway itself: no dependencies (all installed above) and no build isolation (its build
# backend, setuptools, came from the lock too), so nothing unhashed is downloaded. Then the
# build backend leaves the runtime virtualenv.
COPY pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
RUN pip install --no-deps --no-build-isolation . \
 && pip check \
 && pip uninstall --yes setuptools

# ---- runtime: the virtualenv on a clean slim image -----------------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080
# A fixed numeric uid/gid so orchestrators can verify "not root" (Kubernetes runAsNonRoot).
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# No curl in the slim image: ask the health endpoint with the standard library (http.client does
# not consult *_proxy variables, so a proxy configured for the container cannot intercept it).
# Follows GATEWAY_PORT and GATEWAY_ADMIN_PREFIX; defaults are http://127.0.0.1:8080/__gateway/health.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import http.client as h, os, sys; c = h.HTTPConnection('127.0.0.1', int(os.environ.get('GATEWAY_ADMIN_PORT') or os.environ.get('GATEWAY_PORT', '8080')), timeout=2); c.request('GET', os.environ.get('GATEWAY_ADMIN_PREFIX', '/__gateway') + '/health'); sys.exit(0 if c.getresponse().status == 200 else 1)"]
CMD ["python", "-m", "gateway"]
