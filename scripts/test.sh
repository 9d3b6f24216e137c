#!/usr/bin/env bash
# Run every test: unit tests, and end-to-end tests against real Distribution registries
# (`docker-registry`) that the tests start themselves on free loopback ports.
# Installs what the tests need when it is missing (as root, with apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v chromium >/dev/null || need+=(chromium)   # the status page is checked in headless Chromium
command -v skopeo >/dev/null || need+=(skopeo)       # reads the OCI layouts ferry writes
command -v etcd >/dev/null || need+=(etcd-server)    # cluster mode runs against a real etcd
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)  # etcd-client's build compiles etcd's API
command -v python3 >/dev/null || need+=(python3)           # kubernetes-validate (below) checks deploy/kubernetes
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "scripts/test.sh: missing ${need[*]}: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

# The Kubernetes schemas, offline, from PyPI's kubernetes-validate, in a venv of our own.
if ! command -v kubernetes-validate >/dev/null && [ ! -x target/tools/venv/bin/kubernetes-validate ]; then
  python3 -m venv target/tools/venv
  target/tools/venv/bin/pip install -q kubernetes-validate
fi

exec cargo test --locked "$@"
