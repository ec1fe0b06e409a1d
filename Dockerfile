# syntax=docker/dockerfile:1
# The PoolPilot operator image: `docker build -t ghcr.io/poolpilot/poolpilot:0.1.0 .`
# Both stages use the same base, so the venv's interpreter path (/usr/local/bin/python) holds.
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: install the package and its dependencies into a self-contained venv --------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/poolpilot
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller/ controller/
# A regular (not editable) install of the runtime dependencies only; pip compiles the bytecode,
# so the read-only root filesystem at run time costs nothing.
RUN /opt/poolpilot/bin/pip install --no-cache-dir .

# ---- runtime: the venv and a non-root user, nothing else ---------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="poolpilot" \
      org.opencontainers.image.description="Kubernetes operator for self-hosted vLLM pools on spot GPUs with a hosted-API fallback" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/poolpilot/poolpilot" \
      org.opencontainers.image.vendor="PoolPilot"
RUN groupadd --system --gid 10001 poolpilot \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin poolpilot
COPY --from=builder /opt/poolpilot /opt/poolpilot
ENV PATH=/opt/poolpilot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Kopf's liveness endpoint (POOLPILOT_LIVENESS_ENDPOINT).
EXPOSE 8080
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 10001
ENTRYPOINT ["poolpilot"]
CMD ["run"]
