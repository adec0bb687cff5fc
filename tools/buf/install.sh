#!/usr/bin/env bash
# Installs the pinned buf CLI (npm @bufbuild/buf, which carries the native binary for this platform) into
# tools/buf/node_modules, for tests/test_proto_lint.py. Idempotent and quiet: with buf present and the lock
# unchanged since the last install it only checks and exits. A failed install exits non-zero, so the proto test
# fails rather than skips.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
buf="$here/node_modules/.bin/buf"
lock="$here/package-lock.json"
stamp="$here/node_modules/.package-lock.json"

if ! command -v npm >/dev/null 2>&1; then
    echo "tools/buf/install.sh: npm not found; install Node.js and npm (tests/godot/install.sh does)" >&2
    exit 1
fi
# npm ci when buf is missing or the lock changed since the last install.
if [ ! -x "$buf" ] || [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
    echo "tools/buf/install.sh: npm ci (tools/buf)"
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

"$buf" --version >/dev/null || {
    echo "tools/buf/install.sh: $buf does not run" >&2
    exit 1
}
