"""grpcurl, with no proto files, lists the services through reflection and streams a Talk."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"


def grpcurl(*args: str) -> str:
    result = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_services_and_talks(live_server: Any) -> None:
    services = grpcurl(live_server.grpc_target, "list").split()
    assert "npcserver.api.v1.ConversationService" in services and "grpc.health.v1.Health" in services
    described = grpcurl(live_server.grpc_target, "describe", "npcserver.api.v1.TalkRequest")
    assert "persona_id" in described
    out = grpcurl(
        "-d",
        json.dumps({"persona_id": "tavern_keeper", "conversation_id": "grpcurl", "text": "Hello?", "max_tokens": 12}),
        live_server.grpc_target,
        "npcserver.api.v1.ConversationService/Talk",
    )
    decoder, messages, pos = json.JSONDecoder(), [], 0
    while pos < len(out.strip()):
        msg, pos = decoder.raw_decode(out, pos)
        messages.append(msg)
        while pos < len(out) and out[pos].isspace():
            pos += 1
    assert "delta" in messages[0] and "final" in messages[-1]
    usage = messages[-1]["final"]["usage"]
    assert int(usage.get("completion_tokens", usage.get("completionTokens", 0))) > 0
