# fedgate ISV node image: `fedgate node run` (a Flower SuperNode + fedgate's ClientApp).
# Build from the repository root: docker build -f docker/node.Dockerfile .
FROM python:3.11-slim-bookworm
ENV FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /opt/fedgate
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY consent consent
COPY federation federation
COPY gateway gateway
RUN pip install .
RUN useradd --system --uid 10001 --home /node isv && mkdir -p /node && chown isv /node
USER isv
VOLUME /node
ENTRYPOINT ["fedgate", "node", "run", "--config", "/node/node.toml"]
