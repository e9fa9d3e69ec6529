# scratchnet: the HTTP service and its training workers in one image (README, "Deployment").
# Needs BuildKit (the default builder since Docker Engine 23) for RUN --mount.
#   docker build -t scratchnet .
#   docker run --init -p 127.0.0.1:8000:8000 scratchnet
# tests/test_container.py builds the same wheel, installs it the same way into a fresh virtual
# environment and runs this file's CMD and HEALTHCHECK with its ENV.

# --- build: the project's wheel, nothing else ------------------------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY service ./service
COPY scratchnet ./scratchnet
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: the wheel and its runtime dependencies in a virtual environment ----------------
# (with the dask extra: the same image runs the service, a Dask scheduler and Dask workers)
FROM python:3.11-slim-bookworm

# PYTHONSAFEPATH: the working directory is never put on sys.path, so no file that lands in it
# can shadow a module. MPLCONFIGDIR: matplotlib's font cache, writable under a read-only root
# (/tmp is a tmpfs in docker-compose.yml). SCRATCHNET_DATA_DIR: the service's durable data, a
# volume in docker-compose.yml.
ENV VIRTUAL_ENV=/opt/scratchnet
ENV PATH="$VIRTUAL_ENV/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONSAFEPATH=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    SCRATCHNET_HOST=0.0.0.0 \
    SCRATCHNET_PORT=8000 \
    SCRATCHNET_DATA_DIR=/data

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv "$VIRTUAL_ENV" \
    && wheel="$(echo /wheels/scratchnet-*.whl)" \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir --disable-pip-version-check "${wheel}[dask]" \
    && groupadd --system --gid 10001 scratchnet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin scratchnet \
    && install --directory --owner=10001 --group=10001 --mode=0750 /data

# Numeric, so that a runtime can check it is not root (Kubernetes' runAsNonRoot).
USER 10001:10001
WORKDIR /data
EXPOSE 8000

# Liveness with the standard library (no curl in a slim image); no proxy for loopback.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('SCRATCHNET_PORT', '8000'), timeout=4)"]

# On SIGTERM the service ends event streams, cancels what is still training, stops its workers
# and exits 0 (a few seconds; Docker's default grace before SIGKILL is 10 s).
STOPSIGNAL SIGTERM

# One uvicorn process (the service's state lives in its memory); training scales with
# SCRATCHNET_WORKERS worker processes. Address and port come from SCRATCHNET_HOST/PORT.
CMD ["python", "-m", "service"]
