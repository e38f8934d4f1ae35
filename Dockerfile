# syntax=docker/dockerfile:1
# decision-service: a locked build (uv.lock) in a build stage that has the compiler durable-rules
# needs; a runtime stage with only the virtualenv, models/ and rules/, run as a non-root user.
# Build: docker build -t decision-service .   Run: docker run -p 8000:8000 decision-service
FROM python:3.11.7-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# gcc and libc headers build durable-rules' C extension; they stay in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first (cached until uv.lock changes), then the project itself, non-editable.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY decision_service ./decision_service
RUN uv sync --locked --no-dev --no-editable

FROM python:3.11.7-slim-bookworm AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libgomp1: LightGBM's OpenMP runtime (a shared library, not a build tool).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 decision \
    && useradd --system --uid 10001 --gid decision --home-dir /app --shell /usr/sbin/nologin decision
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY models ./models
COPY rules ./rules
COPY notices ./notices
RUN mkdir -p /app/var && chown decision:decision /app/var
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DECISION_HOST=0.0.0.0 \
    DECISION_PORT=8000 \
    DATABASE_URL=sqlite:////app/var/decisions.db
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status != 200)"]
# The same command the README runs: `decision-service serve` (settings from DECISION_*).
CMD ["decision-service", "serve"]
