# The Fleet-only reverse proxy: nginx from Debian, forwarding /v1/fleet/ only.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/*
COPY docker/nginx/fleet-proxy.conf /etc/nginx/nginx.conf
EXPOSE 9443
ENTRYPOINT ["nginx", "-g", "daemon off;"]
