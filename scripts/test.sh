#!/usr/bin/env bash
# Quickstart 2: install everything the tests need (Python packages, Debian chromium + mono, npm packages), then run
# lint, type checks and the whole test suite (server, HTTP door, Godot addon in a real Godot runtime, Unity package).
# Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" "dev"
cd "$ROOT"
echo "==> engine test tools (Debian chromium, mono; npm playwright-core and the Godot web build)"
bash tests/godot/install.sh
bash tests/unity/install.sh
echo "==> ruff and mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy npcserver tools bench
echo "==> pytest"
exec .venv/bin/pytest "$@"
