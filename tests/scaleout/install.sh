#!/usr/bin/env bash
# Installs what the scale-out tests need, only what is missing: Debian's nginx (it has the gRPC proxy, HTTP/2
# and upstream hashing). The tests run their own nginx with a throwaway prefix, so the Debian service is not used.
# Idempotent; a failed install exits non-zero, so the tests fail rather than skip.
set -euo pipefail

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "tests/scaleout/install.sh: apt-get install nginx"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 nginx
fi
