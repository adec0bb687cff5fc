"""The store and the core meet only at the protocol: checked on the modules a fresh interpreter really loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def loaded_after(statement: str) -> set[str]:
    """The npcserver modules a fresh interpreter has loaded after running ``statement``."""
    probe = (
        f"{statement}\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('npcserver'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, check=True, capture_output=True, text=True, timeout=120
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_sqlite_backend_loads_nothing_from_the_core() -> None:
    loaded = loaded_after("import npcserver.store.sqlite")
    assert "npcserver.store.sqlite" in loaded
    assert not {m for m in loaded if m.startswith("npcserver.core")}


def test_the_core_loads_the_protocol_but_no_backend() -> None:
    loaded = loaded_after("import npcserver.core.app")
    assert "npcserver.store.base" in loaded
    assert {m for m in loaded if m.startswith("npcserver.store.")} == {"npcserver.store.base"}
