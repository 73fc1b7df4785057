#!/usr/bin/env bash
# Installs what Tender needs on a Debian machine with Swift: system packages (PostgreSQL, protoc,
# hiredis, Redis, h2load, openssl for the chaos suite's certificates, gRPC C++ and CMake for the
# C++ client; promtool, HAProxy and debootstrap for the deployment tests) and the Python packages
# of the codegen step, the Python client and the deployment tests.
# Idempotent and quick when everything is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

packages=(curl openssl postgresql postgresql-contrib protobuf-compiler libprotobuf-dev libhiredis-dev redis-server nghttp2-client
  protobuf-compiler-grpc libgrpc++-dev cmake g++ make prometheus haproxy debootstrap)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Python package's tests install it into a fresh virtual environment (Debian's python3 needs
# python3-venv for that).
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "setup: installing python3-venv" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

if ! python3 -c 'import grpc, grpc_tools, pytest' 2>/dev/null \
  || ! python3 - "$root/clients/python/requirements.txt" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, wanted = line.split("==")
        assert version(name) == wanted, name
PY
then
  echo "setup: installing Python packages" >&2
  python3 -m pip install -q -r "$root/clients/python/requirements.txt"
fi
command -v buf >/dev/null || python3 -m pip install -q buf-bin==1.75.0
# kubectl (1.21 or later: kustomize v4+) renders the Kubernetes manifests for tests/deploy. Debian
# has none recent enough (kubernetes-client is 1.20); the machine's own is used.
command -v kubectl >/dev/null || echo "setup: kubectl 1.21 or later is needed to render deploy/kubernetes; tests/deploy fails without it" >&2
