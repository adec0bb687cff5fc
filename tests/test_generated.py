"""The committed generated code matches the protos (regenerated and diffed)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_python_protobuf_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "tools/gen_protos.py", "--check"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_stream_and_unary_chat_requests_have_the_same_fields() -> None:
    from npcserver.api.v1 import npcserver_pb2 as pb

    def fields(msg: type) -> list[tuple[str, int, int]]:
        return [(f.name, f.number, f.type) for f in msg.DESCRIPTOR.fields]  # type: ignore[attr-defined]

    assert fields(pb.CreateChatCompletionRequest) == fields(pb.StreamChatCompletionRequest)
