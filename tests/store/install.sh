#!/usr/bin/env bash
# Installs what the PostgreSQL store tests need, only what is missing: Debian's PostgreSQL server (initdb, pg_ctl)
# and PgBouncer. The tests start their own throwaway cluster and bouncer, so the Debian services are not used.
# Idempotent: with both present it only checks and exits. A failed install exits non-zero, so the tests fail rather
# than skip.
set -euo pipefail

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tests/store/install.sh: apt-get install ${missing[*]}"
    # Another process may hold the dpkg lock (a parallel install); wait for it rather than fail.
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${missing[@]}"
fi
