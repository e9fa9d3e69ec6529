# scratchnet: the HTTP service and its training workers in one image.
#   docker build -t scratchnet .
#   docker run -p 8000:8000 -e SCRATCHNET_WORKERS=2 scratchnet
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY service ./service
# the dask extra: the same image runs the service, a Dask scheduler and Dask workers
RUN pip install '.[dask]' \
    && useradd --create-home --uid 10001 scratchnet

USER scratchnet
EXPOSE 8000

# One uvicorn process (the registry lives in its memory); training scales with
# SCRATCHNET_WORKERS worker processes.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
