#!/usr/bin/env bash
# Quickstart 1: install npcserver into .venv and serve the embedded model.
# gRPC on 127.0.0.1:50051, HTTP (gRPC-Web + OpenAI REST) on 127.0.0.1:8080. Extra arguments go to `npcserver serve`.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" "server"
cd "$ROOT"
exec "$ROOT/.venv/bin/npcserver" serve "$@"
