#!/usr/bin/env bash
# Installs Debian's mono C# 7.2 compiler and NUnit 2.6 console runner for the Unity package tests.
# Idempotent: does nothing when the tools are already there. Needs root (or sudo) the first time.
set -euo pipefail

# mono-mcs: the C# compiler (C# 7.2 at most, the subset the package's Runtime code must stay in).
# mono-runtime + libmono-system-core4.0-cil: the runtime and System.Core (LINQ) the tests use.
# nunit-console + libnunit-framework2.6.3-cil: the NUnit 2.6 runner and nunit.framework.dll (not a dependency of
# the runner package, so it is listed on its own).
PACKAGES=(mono-mcs mono-runtime libmono-system-core4.0-cil nunit-console libnunit-framework2.6.3-cil)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "unity test tools already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${missing[*]}"
# The lock timeout lets this wait for another apt run instead of failing when both start together.
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
  "${missing[@]}"
command -v mcs >/dev/null && command -v nunit-console >/dev/null
