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
# Every dependency ships manylinux wheels for CPython 3.11 (uvloop, httptools, hiredis, aiohttp),
# so no compiler is needed; the build stage only keeps pip's work out of the final image.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install . && pip check

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
    CMD ["python", "-c", "import http.client as h, os, sys; c = h.HTTPConnection('127.0.0.1', int(os.environ.get('GATEWAY_PORT', '8080')), timeout=2); c.request('GET', os.environ.get('GATEWAY_ADMIN_PREFIX', '/__gateway') + '/health'); sys.exit(0 if c.getresponse().status == 200 else 1)"]
CMD ["python", "-m", "gateway"]
