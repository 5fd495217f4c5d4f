#!/bin/sh
# One-shot init step of docker/compose.yaml: TLS, release key, node keys, node data, node.toml.
# Idempotent: existing keys and certificates are kept. Runs in the platform image.
set -eu
fedgate certs init --name superlink --proxy-name proxy --proxy-name localhost
fedgate federation release-key
# The proxy gets its own certificate and the CA, nothing else of the platform's keys.
cp /data/federation/certs/proxy.pem /data/federation/certs/proxy.key \
   /data/federation/certs/ca.pem /certs/
[ -f /world/world.json ] || fedgate data synth --out /world --merchants 3000 --isvs 3
for isv in isv01 isv02 isv03; do
  mkdir -p "/nodes/$isv/data"
  cp "/world/$isv.parquet" "/nodes/$isv/data/erp.parquet"   # each ISV's own volume
  fedgate node keygen --out "/nodes/$isv/keys"
  fedgate federation node-toml --isv "$isv" --out "/nodes/$isv" --superlink proxy:9443 \
    --erp data/erp.parquet
done
