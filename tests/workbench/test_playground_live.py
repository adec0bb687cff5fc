"""The playground page in Debian's Chromium (playwright-core, as the Godot tests drive it), end to end against the
real server: pick a persona, an invalid edit shows the server's error as the designer types, a line streams its reply
with the inspector beside it, three presets compare in columns in one engine batch, and a variant is saved."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ops.test_metrics_access import _keys_file

pytestmark = pytest.mark.model

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
#: A copy of the last screenshot, to look at after a run.
SHOT_COPY = Path("/tmp/playground.png")


def _install() -> None:
    # Installs only what is missing (Debian's chromium, playwright-core); fails, never skips, when it cannot.
    subprocess.run(["bash", str(REPO / "tests/godot/install.sh")], check=True, timeout=900)


def _drive(base_url: str, persona_id: str, shot: Path, **env: str) -> dict[str, Any]:
    run = subprocess.run(
        ["node", str(HERE / "playground.mjs"), base_url, persona_id, str(shot)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert run.returncode == 0, run.stderr
    seen: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert not seen["errors"], seen
    return seen


def test_the_playground_talks_inspects_compares_and_saves_in_chromium(live_server: Any, tmp_path: Path) -> None:
    _install()
    persona_id = f"pg_{uuid.uuid4().hex[:8]}"
    persona = {
        "id": persona_id,
        "display_name": "Hilda",
        "system_prompt": "Hilda runs the ferry across the Grey River.",
        "example_dialogue": [{"player_line": "How much to cross?", "npc_line": "Two coppers. Each way."}],
        "default_preset": "dialogue",
        "max_tokens": 16,
    }
    with httpx.Client(base_url=live_server.http_url, timeout=60) as http:
        assert http.post("/v1/npcs", json=persona).status_code == 201
        shot = tmp_path / "playground.png"
        seen = _drive(live_server.http_url, persona_id, shot)
        shutil.copy(shot, SHOT_COPY)

        assert "example_dialogue[0] needs both player_line and npc_line" in seen["invalid"]
        assert seen["valid"].startswith("valid: the prompt would be ")
        assert seen["reply"].startswith("Hilda: ") and len(seen["reply"]) > len("Hilda: ")
        assert seen["replyUpdates"] >= 2  # the reply arrived in pieces (streamed), not at once
        assert seen["sections"][:2] == ["persona", "examples"] and "player_line" in seen["sections"]
        assert all(n > 0 for n in seen["sectionTokens"])
        assert seen["inspectorMeta"].startswith(f"{sum(seen['sectionTokens'])} prompt tokens")
        assert seen["columns"] == ["dialogue", "factual", "storytelling"]
        # Run together: the peak counts the three variants (and any other request the engine ran beside them).
        peak = re.search(r"3 variants in one batch \(peak (\d+) sequences", seen["summary"])
        assert peak is not None and int(peak.group(1)) >= 3, seen["summary"]
        assert seen["saved"] == f"saved factual as {persona_id}"
        assert "Is the ferry running today?" in seen["transcriptAfterSave"]
        stored = http.get(f"/v1/npcs/{persona_id}").json()
        assert stored["default_preset"] == "factual"
        assert stored["system_prompt"].startswith("Hilda runs the ferry across the Grey River. She is curt")
        # Nothing the inspector or the comparison did was stored: only the one line talked.
        turns = http.get(f"/v1/npcs/{persona_id}/conversations/playground").json().get("turns", [])
        assert [t["player_line"] for t in turns] == ["Is the ferry running today?"]


def test_on_a_server_with_keys_the_browser_opens_the_playground_with_a_designer_key(
    server_factory: Any, tmp_path: Path
) -> None:
    """The page's Basic challenge, answered with the key as the password, also admits the page's own API calls."""
    _install()
    server = server_factory(NPCSERVER_API_KEYS_FILE=str(_keys_file(tmp_path)))
    persona = {"id": "keyed_hilda", "display_name": "Hilda", "system_prompt": "Hilda runs the ferry."}
    with httpx.Client(base_url=server.http_url, timeout=60) as http:
        made = http.post("/v1/npcs", json=persona, headers={"authorization": "Bearer tools-secret"})
        assert made.status_code == 201, made.text
        assert http.get("/playground").status_code == 401  # the page really is closed without the key
    seen = _drive(server.http_url, "keyed_hilda", tmp_path / "keyed.png", PLAYGROUND_KEY="tools-secret")
    assert "keyed_hilda" in seen["personas"]
