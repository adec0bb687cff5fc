#!/usr/bin/env bash
# Builds llama-server for the upstream engine's tests, only when it is missing: from the llama.cpp vendored in the
# installed llama-cpp-python (bench/native.py), cached in ~/.cache/npcserver-bench. The build takes tens of minutes
# on 2 cores (an hour on a busy 2-core machine), so it runs here, before pytest, not inside a test's time limit.
# Needs cmake and a C++ compiler, installed from Debian when missing. A failed build exits non-zero, so the tests
# fail rather than skip.
set -euo pipefail
cd "$(dirname "$0")/../.."

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tests/engine/install.sh: apt-get install ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${missing[@]}"
fi
.venv/bin/python -c "from bench.native import ensure_native_tools; print('llama-server:', ensure_native_tools()['llama-server'])"
