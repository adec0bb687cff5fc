#!/usr/bin/env bash
# Quickstart 2: install everything the tests need (Python packages, Debian chromium, mono, PostgreSQL, PgBouncer and
# nginx, npm packages), then run lint, type checks and the whole test suite (server, HTTP door, Godot addon in a real
# Godot runtime, Unity package, the store on SQLite and PostgreSQL, replicas behind nginx).
# Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" "server,dev"
cd "$ROOT"
echo "==> test tools (Debian chromium, mono, postgresql, pgbouncer, nginx; npm playwright-core, Godot web build, buf)"
bash tests/godot/install.sh
bash tests/store/install.sh
bash tests/scaleout/install.sh
bash tests/engine/install.sh
bash tests/unity/install.sh
bash tools/buf/install.sh
echo "==> ruff and mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy npcserver tools bench tests
echo "==> pytest"
exec .venv/bin/pytest "$@"
