#!/usr/bin/env bash
# Regenerates cri_pb2.py and cri_pb2_grpc.py from cri.proto with grpcio-tools (in a throw-away
# virtual environment). The versions match those scripts/deps.sh installs for the suite.
set -euo pipefail
cd "$(dirname "$0")"
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check 'grpcio-tools==1.62.*' 'protobuf==4.25.*'
"$venv/bin/python" -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. cri.proto
