# Two images from one source stage, each installed by a Makefile target CI also runs, so image
# and CI cannot drift: `train` (`make install`, what `make test` installs) and `serve` (`make
# install-serve`, `.[serve]` alone). `make image-check` builds both with podman and appraises an
# item through the serve image.

FROM python:3.11-slim AS source
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml Makefile README.md ./
COPY touchstone ./touchstone
COPY training ./training
COPY serving ./serving
COPY cli ./cli
ENV NO_ALBUMENTATIONS_UPDATE=1 MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 PIP_NO_CACHE_DIR=1

# Training, evaluation and the test suite: torch, timm, MLflow and the rest, and Debian's
# Chromium for the browser tests (`make install` apt-installs it).
FROM source AS train
COPY configs ./configs
COPY tests ./tests
RUN make install PYTHON=python3.11 \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/app/.venv/bin:$PATH
CMD ["touchstone", "--help"]

# Serving: `.[serve]` only, never torch; runs as a non-root user. Mount a model directory at
# /models/current (or pass --model models:/touchstone-authenticity-onnx@champion with
# MLFLOW_TRACKING_URI set) and keep /data on a volume: photos and, without
# TOUCHSTONE_DATABASE_URL, the SQLite database.
FROM source AS serve
# The service reads configs/*.yaml (policy, benefits) from its working directory, /app.
COPY configs ./configs
RUN make install-serve PYTHON=python3.11 \
    && useradd --create-home --uid 10001 touchstone \
    && mkdir -p /data \
    && chown touchstone /data
USER touchstone
ENV PATH=/app/.venv/bin:$PATH
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["touchstone", "serve", "--host", "0.0.0.0", "--port", "8000", "--model", "/models/current", "--data-dir", "/data"]
