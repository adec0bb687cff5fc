"""Persona files and the presets file applied when saved (npcserver.core.watch, the real watcher on a temp folder),
and the rule between files and the API, over the real core and store with a scripted engine. The real server runs
the same in test_workbench_live.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.core.types import Completion, Persona, TalkRequest
from npcserver.core.watch import PersonaFiles
from npcserver.errors import ManagedByFile, NotFound
from npcserver.grpc.server import GrpcDoor
from npcserver.http import create_http_app
from npcserver.store.sqlite import SqliteStore
from tests.fakes import FakeEngine

REPO = Path(__file__).resolve().parents[2]
PRESETS = """
[brisk]
description = "short and sharp"
temperature = 0.4
top_p = 0.9
top_k = 30
min_p = 0.05
repeat_penalty = 1.1
"""


@dataclass
class Bench:
    core: NpcCore
    files: PersonaFiles
    folder: Path
    presets: Path

    @property
    def greta(self) -> Path:
        return self.folder / "tavern_keeper.toml"

    def edit(self, path: Path, old: str, new: str) -> None:
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 5.0) -> float:
    """Polls until check() is true; returns how long it took."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within_s, f"not true within {within_s} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    folder = tmp_path / "personas"
    folder.mkdir()
    shutil.copy(REPO / "personas" / "tavern_keeper.toml", folder)
    presets = tmp_path / "presets.toml"
    presets.write_text(PRESETS)
    core = NpcCore(FakeEngine("Three silver."), SqliteStore(tmp_path / "db.sqlite"), PresetBook(extra_file=presets))
    files = PersonaFiles(core, folder, presets)
    assert await files.sync_all() == 1
    stop = asyncio.Event()
    watcher = asyncio.create_task(files.run(stop))
    await asyncio.sleep(0.3)  # the watch is in place
    yield Bench(core, files, folder.resolve(), presets.resolve())
    stop.set()
    await asyncio.wait_for(watcher, 5)
    core.store.close()


async def persona(core: NpcCore, persona_id: str = "tavern_keeper") -> Persona:
    return await core.get_persona(persona_id)


async def test_a_saved_file_applies_within_a_second(bench: Bench) -> None:
    greta = await persona(bench.core)
    assert (greta.source, greta.load_error, greta.display_name) == (str(bench.greta), "", "Greta")
    bench.edit(bench.greta, 'display_name = "Greta"', 'display_name = "Hilda"')

    async def renamed() -> bool:
        return (await persona(bench.core)).display_name == "Hilda"

    assert await eventually(renamed) < 1.0
    final = None
    async for event in bench.core.stream_talk(TalkRequest("tavern_keeper", "c", "Hello")):
        final = event
    assert isinstance(final, Completion) and final.stored


GRETA = (REPO / "personas" / "tavern_keeper.toml").read_text()
# Greta's actions (the end of her file): a response_schema cannot sit beside them, so the schema cases drop them.
GRETA_ACTIONS = GRETA[GRETA.index("[[actions]]") :]
NO_ACTIONS = "# (no actions)\n"
SCHEMA_WAT = 'max_tokens = 60\nresponse_schema = \'{"type": "wat"}\''


@pytest.mark.parametrize(
    ("edits", "error"),
    [
        pytest.param([('display_name = "Greta"', 'display_name = "Greta')], "tavern_keeper.toml: ", id="bad TOML"),
        pytest.param(
            [('default_preset = "dialogue"', 'default_preset = "cheerful"')],
            "preset 'cheerful' does not exist",
            id="missing preset",
        ),
        pytest.param(
            [("max_tokens = 60", SCHEMA_WAT), (GRETA_ACTIONS, NO_ACTIONS)],
            "not a valid JSON Schema",
            id="response_schema wat",
        ),
        # With her actions kept, the clash is reported first: no change to the schema alone would make it load.
        pytest.param(
            [("max_tokens = 60", SCHEMA_WAT)],
            "persona.actions cannot be combined with a response_schema",
            id="response_schema beside actions",
        ),
        pytest.param([("max_tokens = 60", "max_tokens = 60\nmood = 'grim'")], "unknown fields ['mood']", id="mood"),
    ],
)
async def test_a_broken_file_keeps_the_last_good_version_and_shows_the_error(
    bench: Bench, edits: list[tuple[str, str]], error: str
) -> None:
    bench.edit(bench.greta, "She speaks in short", "She talks in short")
    text = bench.greta.read_text()
    for old, new in edits:
        text = text.replace(old, new)
    bench.greta.write_text(text)  # one save with every edit

    async def failed() -> bool:
        return bool((await persona(bench.core)).load_error)

    await eventually(failed)
    greta = await persona(bench.core)
    assert error in greta.load_error and str(bench.greta) in greta.load_error
    assert greta.display_name == "Greta" and "She speaks in short" in greta.system_prompt  # the last good version
    for old, new in reversed(edits):
        bench.edit(bench.greta, new, old)

    async def fixed() -> bool:
        p = await persona(bench.core)
        return not p.load_error and "She talks in short" in p.system_prompt

    await eventually(fixed)


async def test_the_api_refuses_file_personas_naming_the_file(bench: Bench, tmp_path: Path) -> None:
    greta = await persona(bench.core)
    for attempt in (
        bench.core.update_persona(greta),
        bench.core.update_persona(greta, allow_missing=True),
        bench.core.delete_persona("tavern_keeper"),
        bench.core.create_persona(greta),
        bench.core.import_card(
            json.dumps({"spec": "chara_card_v2", "data": {"name": "G", "description": "x"}}).encode(),
            persona_id="tavern_keeper",
            replace_existing=True,
        ),
    ):
        with pytest.raises(ManagedByFile) as info:
            await attempt
        assert str(bench.greta) in info.value.message and "editing that file" in info.value.message
    app = create_http_app(bench.core, Settings(data_dir=tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door") as http:
        body = (await http.get("/v1/npcs/tavern_keeper")).json()
        assert body["source"] == str(bench.greta) and body["load_error"] == ""
        put = await http.put("/v1/npcs/tavern_keeper", json={**body, "display_name": "Hilda"})
        assert put.status_code == 409 and str(bench.greta) in put.json()["error"]["message"]
        assert (await http.delete("/v1/npcs/tavern_keeper")).status_code == 409
    door = GrpcDoor(bench.core, Settings(grpc_port=0, data_dir=tmp_path))
    port = await door.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PersonaServiceStub(channel)
            got = (await stub.GetPersona(pb.GetPersonaRequest(persona_id="tavern_keeper"))).persona
            assert got.source == str(bench.greta)
            got.display_name = "Hilda"
            with pytest.raises(grpc.aio.AioRpcError) as rpc:
                await stub.UpdatePersona(pb.UpdatePersonaRequest(persona=got))
            assert rpc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert str(bench.greta) in (rpc.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as rpc:
                await stub.DeletePersona(pb.DeletePersonaRequest(persona_id="tavern_keeper"))
            assert rpc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await door.stop(0)
    assert (await persona(bench.core)).display_name == "Greta"


async def test_a_file_for_an_api_persona_shadows_it_and_gives_it_back(bench: Bench) -> None:
    bram = Persona("bram", "Bram", "Bram is a ferryman.")
    await bench.core.create_persona(bram)
    path = bench.folder / "bram.toml"
    path.write_text('display_name = "Old Bram"\nsystem_prompt = "Bram is an old ferryman."\n')

    async def from_file() -> bool:
        return (await persona(bench.core, "bram")).source == str(path)

    await eventually(from_file)
    assert (await persona(bench.core, "bram")).display_name == "Old Bram"
    body = bench.core.store.get_persona("bram")
    assert body is not None and body["shadowed"]["display_name"] == "Bram"  # the API's version is kept
    path.unlink()

    async def back() -> bool:
        return (await persona(bench.core, "bram")).source == ""

    await eventually(back)
    assert await persona(bench.core, "bram") == bram


async def test_a_removed_file_releases_its_persona_and_keeps_its_conversations(bench: Bench) -> None:
    async for _ in bench.core.stream_talk(TalkRequest("tavern_keeper", "c", "Hello")):
        pass
    bench.greta.unlink()

    async def released() -> bool:
        return (await persona(bench.core)).source == ""

    await eventually(released)
    greta = await persona(bench.core)
    assert greta.display_name == "Greta"
    assert len((await bench.core.get_conversation("tavern_keeper", "c")).turns) == 1
    await bench.core.update_persona(Persona("tavern_keeper", "Hilda", "Hilda keeps the tavern now."))
    assert (await persona(bench.core)).display_name == "Hilda"


async def test_a_file_gone_while_the_server_was_down_is_released_at_startup(bench: Bench) -> None:
    bench.greta.rename(bench.folder / "tavern_keeper.toml.bak")  # not a persona file any more
    restarted = PersonaFiles(bench.core, bench.folder)
    assert await restarted.sync_all() == 0
    assert (await persona(bench.core)).source == ""


async def test_the_presets_file_applies_when_saved_and_a_broken_one_keeps_the_presets(bench: Bench) -> None:
    path = bench.folder / "scout.toml"
    path.write_text('display_name = "Scout"\nsystem_prompt = "A scout."\ndefault_preset = "swift"\n')
    await asyncio.sleep(0.5)
    with pytest.raises(NotFound):  # never loaded: nothing of it is live
        await persona(bench.core, "scout")
    bench.presets.write_text(PRESETS + PRESETS.replace("[brisk]", "[swift]"))

    async def scout() -> bool:
        try:
            return (await persona(bench.core, "scout")).default_preset == "swift"
        except NotFound:
            return False

    assert await eventually(scout) < 1.0
    assert "swift" in bench.core.presets.names()
    bench.presets.write_text("[swift\n")
    await eventually(lambda: _true(bool(bench.core.presets.load_error)))
    assert "swift" in bench.core.presets.names() and "presets.toml" in bench.core.presets.load_error


async def _true(value: bool) -> bool:
    return value
