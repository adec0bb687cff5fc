"""The blocking client is generated from the asyncio one, so their APIs cannot drift apart."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from npcserver.client import AsyncNpcClient, AsyncReplyStream, NpcClient, ReplyStream

REPO = Path(__file__).resolve().parents[2]


def test_sync_client_is_freshly_generated_from_the_async_one() -> None:
    result = subprocess.run(
        [sys.executable, "tools/gen_sync_client.py", "--check"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr + result.stdout


def _public(cls: type) -> dict[str, list[str]]:
    """Public members and their parameter names (dunder protocol methods mapped to their sync names)."""
    renames = {"__aenter__": "__enter__", "__aexit__": "__exit__", "__aiter__": "__iter__", "__anext__": "__next__"}
    members: dict[str, list[str]] = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name not in renames and name not in renames.values():
            continue
        fn = member.fget if isinstance(member, property) else member
        params = list(inspect.signature(fn).parameters) if callable(fn) else []
        members[renames.get(name, name)] = params
    return members


def test_async_and_sync_clients_have_the_same_api() -> None:
    assert _public(AsyncNpcClient) == _public(NpcClient)


def test_async_and_sync_streams_have_the_same_api() -> None:
    # streams.py is written by hand (grpc's sync and asyncio streams are read differently), so it is compared here.
    assert _public(AsyncReplyStream) == _public(ReplyStream)
