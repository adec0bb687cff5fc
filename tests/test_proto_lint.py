"""The proto schema passes ``buf lint`` (STANDARD rules) and has no wire or JSON breaking change against v1.

The baseline is ``protos/baseline/npcserver-v1.binpb``, a buf image of the schema as released (see the README
beside it for how to refresh it). buf comes from npm ``@bufbuild/buf`` pinned in ``tools/buf``; install it with
``tools/buf/install.sh`` (``scripts/test.sh`` does). A missing buf fails these tests; it never skips them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTOS = REPO / "protos"
BASELINE = PROTOS / "baseline" / "npcserver-v1.binpb"
BUF = REPO / "tools" / "buf" / "node_modules" / ".bin" / "buf"


def run_buf(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert BUF.exists(), f"buf is not installed at {BUF}: run tools/buf/install.sh"
    return subprocess.run(
        [str(BUF), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"buf exited {result.returncode}\n{result.stdout}{result.stderr}"


def test_buf_lint_is_clean() -> None:
    result = run_buf("lint", "protos")
    assert result.returncode == 0, output(result)


def test_no_breaking_change_against_the_v1_baseline() -> None:
    assert BASELINE.is_file(), f"{BASELINE.relative_to(REPO)} is missing"
    result = run_buf("breaking", "protos", "--against", BASELINE)
    assert result.returncode == 0, output(result)


def test_breaking_check_catches_a_renumbered_field(tmp_path: Path) -> None:
    """The check above is live: the same command fails on a copy of the schema with a field's number changed."""
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy, ignore=shutil.ignore_patterns("baseline"))
    proto = copy / "npcserver" / "api" / "v1" / "npcserver.proto"
    text = proto.read_text(encoding="utf-8")
    field = "string persona_id = 1;"
    assert field in text, f"the mutation needs a field '{field}' in {proto.name}; pick another"
    proto.write_text(text.replace(field, "string persona_id = 999;", 1), encoding="utf-8")
    result = run_buf("breaking", copy, "--against", BASELINE)
    assert result.returncode != 0, "buf breaking accepted a renumbered field:\n" + output(result)
    assert "persona_id" in result.stdout + result.stderr, output(result)
