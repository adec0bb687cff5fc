#!/usr/bin/env bash
# Compiles the Unity package with Debian mono's mcs in C# 7.2 mode (the subset Unity projects must compile too),
# runs every NUnit test (package runtime + editor tests, the UnityWebRequest transport against the stub,
# Python<->C# wire interop, end to end against a live server), checks C#'s encodings with Python protobuf, and
# prints "N passed, N failed".
#
#   NPCSERVER_HTTP_URL=http://127.0.0.1:8080 tests/unity/run.sh
#
# `pytest tests/unity` starts the real server and runs this with the URL set. Missing tools fail the run (install
# them with tests/unity/install.sh); nothing is skipped. UNITY_TEST_BUILD picks the build folder (default: a
# temporary one).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PKG="$REPO/unity_package"
PY="${PYTHON:-$REPO/.venv/bin/python}"
BUILD="${UNITY_TEST_BUILD:-$(mktemp -d -t unity-tests.XXXXXX)}"
mkdir -p "$BUILD"

fail() { echo "FAIL: $*" >&2; exit 1; }
command -v mcs >/dev/null || fail "mcs (mono C# compiler) not found; run tests/unity/install.sh"
command -v nunit-console >/dev/null || fail "nunit-console not found; run tests/unity/install.sh"
NUNIT_FRAMEWORK="$(ls /usr/lib/cli/nunit.framework-2.6*/nunit.framework.dll 2>/dev/null | head -1)"
[ -n "$NUNIT_FRAMEWORK" ] || fail "nunit.framework.dll not found; run tests/unity/install.sh"
[ -x "$PY" ] || fail "python not found at $PY; set PYTHON"
cp "$NUNIT_FRAMEWORK" "$BUILD/"

# Package code must compile warning-free; -langversion:7.2 rejects C# 8+ (switch expressions, using var, ...).
CSC=(mcs -langversion:7.2 -nologo -warnaserror+ -target:library)
compile() {  # compile OUT.dll "refs" sources...
  local out="$1" refs="$2"; shift 2
  local args=()
  for r in $refs; do args+=("-r:$BUILD/$r.dll"); done
  "${CSC[@]}" -out:"$BUILD/$out.dll" "${args[@]}" "$@" || fail "compiling $out"
  echo "compiled $out"
}
sources() { find "$@" -name '*.cs' | sort; }

# shellcheck disable=SC2046
{
  compile UnityEngine "" "$HERE/stubs/UnityEngine.cs"
  compile UnityEditor "UnityEngine" "$HERE/stubs/UnityEditor.cs"
  # The core gets no UnityEngine reference: that it compiles proves it is engine-free.
  compile NpcServer.Dialogue.Core "" $(sources "$PKG/Runtime/Core")
  compile NpcServer.Dialogue "UnityEngine NpcServer.Dialogue.Core" $(sources "$PKG/Runtime/Unity")
  compile NpcServer.Dialogue.Editor "UnityEngine UnityEditor NpcServer.Dialogue.Core NpcServer.Dialogue" \
    $(sources "$PKG/Editor")
  compile TavernKeeperSample "UnityEngine NpcServer.Dialogue.Core NpcServer.Dialogue" \
    $(sources "$PKG/Samples~")
  compile NpcServer.Dialogue.Tests "NpcServer.Dialogue.Core nunit.framework" -r:System.Core.dll \
    $(sources "$PKG/Tests/Runtime")
  compile NpcServer.Dialogue.EditorTests \
    "UnityEngine NpcServer.Dialogue.Core NpcServer.Dialogue NpcServer.Dialogue.Tests nunit.framework" \
    -r:System.Core.dll $(sources "$PKG/Tests/Editor")
  compile NpcServer.Dialogue.Interop "NpcServer.Dialogue.Core nunit.framework" -r:System.Core.dll \
    $(sources "$HERE/interop")
  # UnityWebRequestTransport against the stub's scriptable UnityWebRequest (stub-only hooks, so not in the package).
  compile NpcServer.Dialogue.TransportTests \
    "UnityEngine NpcServer.Dialogue.Core NpcServer.Dialogue NpcServer.Dialogue.Tests nunit.framework" \
    -r:System.Core.dll $(sources "$HERE/transport")
  compile NpcServer.Dialogue.E2E "NpcServer.Dialogue.Core nunit.framework" -r:System.Core.dll \
    $(sources "$HERE/e2e")
}

export NPC_WIRE_FIXTURES="$BUILD/wire"
export NPC_WIRE_OUT="$BUILD/wire-out"
rm -rf "$NPC_WIRE_OUT"
(cd "$REPO" && "$PY" "$HERE/wire_fixtures.py" --out "$NPC_WIRE_FIXTURES")

if [ -z "${NPCSERVER_HTTP_URL:-}" ]; then
  echo "warning: NPCSERVER_HTTP_URL is not set, so the end-to-end tests will fail; run pytest tests/unity" >&2
fi

# nunit-console's exit code is its failure count; the summary below decides.
(cd "$BUILD" && nunit-console -nologo -noshadow -xml="$BUILD/TestResult.xml" \
  NpcServer.Dialogue.Tests.dll NpcServer.Dialogue.EditorTests.dll NpcServer.Dialogue.Interop.dll \
  NpcServer.Dialogue.TransportTests.dll NpcServer.Dialogue.E2E.dll > "$BUILD/nunit.log" 2>&1) || true
grep -v '^\s*$' "$BUILD/nunit.log" | grep -vE '^(ProcessModel|Execution Runtime|Tests run|  Not run)' || true

status=0
(cd "$REPO" && "$PY" "$HERE/wire_fixtures.py" --verify "$NPC_WIRE_OUT") || status=1
"$PY" "$HERE/nunit_summary.py" "$BUILD/TestResult.xml" || status=1
exit "$status"
