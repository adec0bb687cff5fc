"""Static checks of the Godot addon: gdtoolkit (parse, lint, format), the generated protobuf code and wire fixtures
being current, typed and documented GDScript, the export rule, and the addon's files.

These need no browser or server. They cover what the runtime tests cannot reach: plugin.gd (an EditorPlugin;
the web build has no editor) and the desktop TCP path of HTTPClient (the same NpcCall code, read here).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.message import Message

from npcserver.api.v1 import npcserver_pb2 as pb
from tests.fixtures.wire import build_fixtures

REPO = Path(__file__).resolve().parent.parent.parent
PROJECT = REPO / "godot_addon"
ADDON = PROJECT / "addons" / "npc_dialogue"
FIXTURES = REPO / "tests" / "fixtures" / "wire"
GD_FILES = sorted(PROJECT.rglob("*.gd"))
ADDON_FILES = sorted(ADDON.glob("*.gd"))
#: gdtoolkit's console scripts live beside the interpreter in the venv.
BIN = Path(sys.executable).parent


def gdtool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = BIN / name
    assert exe.exists(), f"{name} is missing: pip install gdtoolkit==4.5.0 (it is in pyproject's test extras)"
    return subprocess.run([str(exe), *args], cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False)


def test_the_project_has_the_expected_scripts() -> None:
    names = {p.name for p in ADDON_FILES}
    expected = {"plugin.gd", "npc_client.gd", "npc_dialogue.gd", "npc_narrator.gd", "npc_line.gd", "npc_call.gd",
                "npc_grpc_web.gd", "npc_wire.gd", "npc_proto.gd"}  # fmt: skip
    assert expected <= names, expected - names
    assert len(GD_FILES) >= len(expected) + 5  # demo and tests too


@pytest.mark.slow  # seconds per run of the GDScript toolkit over every script
def test_gdparse_accepts_every_script() -> None:
    result = gdtool("gdparse", *(str(p) for p in GD_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # seconds per run of the GDScript toolkit over every script
def test_gdlint_is_clean() -> None:
    result = gdtool("gdlint", *(str(p) for p in GD_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # seconds per run of the GDScript toolkit over every script
def test_gdformat_check_is_clean() -> None:
    result = gdtool("gdformat", "--check", *(str(p) for p in GD_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_gdscript_is_current() -> None:
    """A schema change must regenerate npc_proto.gd (python tools/gen_gdscript.py)."""
    result = subprocess.run(
        [sys.executable, "tools/gen_gdscript.py", "--check"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_wire_fixtures_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "tests/fixtures/wire/build_fixtures.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.bin")))
def test_wire_fixture_matches_its_json(name: str) -> None:
    spec = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    message: Message = getattr(pb, spec["message"])()
    data = (FIXTURES / f"{name}.bin").read_bytes()
    message.ParseFromString(data)
    message.DiscardUnknownFields()  # as the GDScript decoder does
    assert build_fixtures.to_value(message) == spec["value"]
    assert (message.SerializeToString() == data) == spec["canonical"]


def _signatures(source: str) -> list[tuple[str, str, str]]:
    """(name, parameters, return annotation) of every named func, signatures spanning lines included."""
    pattern = re.compile(r"^\s*(?:static\s+)?func\s+(\w+)\s*\((.*?)\)\s*(->\s*[\w.\[\], ]+)?\s*:", re.M | re.S)
    return [(m.group(1), m.group(2), m.group(3) or "") for m in pattern.finditer(source)]


@pytest.mark.parametrize("path", GD_FILES, ids=lambda p: str(p.relative_to(PROJECT)))
def test_gdscript_is_typed(path: Path) -> None:
    """Every function has typed parameters and a return type; every variable a type (or :=)."""
    source = path.read_text(encoding="utf-8")
    problems = []
    for name, params, returns in _signatures(source):
        if not returns:
            problems.append(f"func {name} has no return type")
        for param in filter(None, (p.strip() for p in re.split(r",(?![^(\[]*[)\]])", params))):
            if ":" not in param:
                problems.append(f"func {name}: parameter {param!r} is untyped")
    for m in re.finditer(r"^\s*(?:static\s+)?(?:@\w+(?:\(.*?\))?\s+)*var\s+(\w+)\s*([:=])", source, re.M):
        if m.group(2) != ":":
            problems.append(f"var {m.group(1)} is untyped")
    assert not problems, problems


@pytest.mark.parametrize("path", ADDON_FILES, ids=lambda p: p.name)
def test_addon_api_is_documented(path: Path) -> None:
    """The class and every public signal, constant, variable and function carry a ## doc comment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    undocumented = []
    public = re.compile(r"^(?:@\w+(?:\(.*?\))?\s+)*(?:static\s+)?(signal|const|var|func|enum|class)\s+([A-Za-z]\w*)")
    func_indent: int | None = None  # inside a function body: locals need no docs
    in_string = False
    for i, line in enumerate(lines):
        if line.count('"""') % 2:
            in_string = not in_string
            continue
        if in_string or not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip("\t"))
        if func_indent is not None and indent > func_indent:
            continue
        if func_indent is not None and indent == func_indent and line.lstrip().startswith(")"):
            continue  # the end of a signature that spans lines (gdformat's layout): the body follows
        func_indent = indent if re.match(r"^(?:static\s+)?func\b", line.lstrip()) else None
        m = public.match(line.lstrip())
        if not m or m.group(2).startswith("_"):
            continue
        above = lines[i - 1].strip() if i else ""
        if not above.startswith("##"):
            undocumented.append(f"{path.name}:{i + 1}: {line.strip()}")
    assert any(line.startswith("##") for line in lines[:12]), f"{path.name} has no class doc comment"
    assert not undocumented, undocumented


def test_only_the_addon_is_exported() -> None:
    """`git archive` (and so the Asset Library and 'Download ZIP') ships addons/ and nothing else."""
    paths = ["godot_addon/project.godot", "godot_addon/demo/tavern.tscn", "godot_addon/tests/runner.gd",
             "godot_addon/addons/npc_dialogue/plugin.cfg", "godot_addon/addons/npc_dialogue/npc_proto.gd"]  # fmt: skip
    result = subprocess.run(
        ["git", "check-attr", "export-ignore", "--", *paths], cwd=REPO, capture_output=True, text=True, check=True
    )
    state = {line.split(": ")[0]: line.split(": ")[-1] for line in result.stdout.splitlines()}
    assert state == {
        "godot_addon/project.godot": "set",
        "godot_addon/demo/tavern.tscn": "set",
        "godot_addon/tests/runner.gd": "set",
        "godot_addon/addons/npc_dialogue/plugin.cfg": "unset",
        "godot_addon/addons/npc_dialogue/npc_proto.gd": "unset",
    }


def test_addon_files() -> None:
    cfg = (ADDON / "plugin.cfg").read_text(encoding="utf-8")
    for key in ("name", "description", "author", "version", "script"):
        assert re.search(rf'^{key}=".+"$', cfg, re.M), key
    assert 'script="plugin.gd"' in cfg
    assert (ADDON / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert "<svg" in (ADDON / "icon.svg").read_text(encoding="utf-8")
    plugin = (ADDON / "plugin.gd").read_text(encoding="utf-8")
    assert plugin.startswith("@tool\nextends EditorPlugin")
    assert "add_autoload_singleton" in plugin and "remove_autoload_singleton" in plugin
    readme = (ADDON / "README.md").read_text(encoding="utf-8")
    for needed in ("Runtime-tested", "Statically checked", "plugin.gd", "desktop", "NpcDialogue"):
        assert needed in readme, needed


def test_the_call_reads_the_body_as_it_arrives() -> None:
    """Source reading for the desktop path, which the web runtime cannot exercise: HTTPClient (not HTTPRequest),
    polled each frame, body read chunk by chunk, trailers-only headers and the trailer frame both handled."""
    call = (ADDON / "npc_call.gd").read_text(encoding="utf-8")
    assert "HTTPClient.new()" in call and "HTTPRequest" not in "".join(p.read_text() for p in ADDON_FILES)
    assert "read_response_body_chunk()" in call
    assert "NpcGrpcWeb.status_from(headers)" in call  # trailers-only
    assert "frame.is_trailer" in call
    assert "TLSOptions.client()" in call
    client = (ADDON / "npc_client.gd").read_text(encoding="utf-8")
    assert "func _process(" in client and "poll()" in client
    assert '"Authorization: Bearer " + api_key' in client
