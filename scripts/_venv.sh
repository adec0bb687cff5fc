# Sourced by serve.sh and test.sh: makes .venv and installs npcserver into it with the extras "$1" ("server" for
# the server; without extras npcserver is the Python client alone).
# llama-cpp-python builds from source the first time (about 5 minutes on 2 cores); pip caches the wheel.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/pip" install -q --upgrade pip
fi
spec="$ROOT"
[ -n "${1:-}" ] && spec="$ROOT[$1]"
echo "==> installing npcserver${1:+[$1]} into .venv (first run builds llama-cpp-python: ~5 min)"
"$ROOT/.venv/bin/pip" install -q -e "$spec"
