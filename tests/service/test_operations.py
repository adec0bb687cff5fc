"""NpcService over a scripted engine: admission, readiness, and streams that close when their reader leaves."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest

from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.core.types import TalkRequest
from npcserver.errors import NotFound, NotReady, Unauthenticated
from npcserver.service import Completion, Gate, NpcService, TextDelta, final_of
from npcserver.store.sqlite import SqliteStore
from tests.fakes import FakeEngine

REPO = Path(__file__).resolve().parents[2]


async def service_over(tmp_path: Path, engine: FakeEngine, api_key: str | None = None) -> NpcService:
    core = NpcCore(engine, SqliteStore(tmp_path / "db.sqlite"), PresetBook())
    await core.load_persona_files(REPO / "personas")
    return NpcService(core, Gate(admin_key=api_key))


async def test_admission_checks_the_api_key(tmp_path: Path) -> None:
    service = await service_over(tmp_path, FakeEngine(), api_key="sesame")
    service.admit("Bearer sesame")
    with pytest.raises(Unauthenticated):
        service.admit(None)
    with pytest.raises(Unauthenticated):
        service.admit("Bearer wrong")


async def test_generation_and_models_wait_for_the_model_but_personas_do_not(tmp_path: Path) -> None:
    engine = FakeEngine(ready=False)
    service = await service_over(tmp_path, engine)
    assert service.health().ready is False
    with pytest.raises(NotReady, match="still loading"):
        service.list_models()
    with pytest.raises(NotReady):
        await service.talk(TalkRequest("tavern_keeper", "c", "hi"))
    assert (await service.get_persona("tavern_keeper")).display_name
    await engine.start()
    assert service.health().model == "fake"
    assert service.get_model("fake").id == "fake"
    with pytest.raises(NotFound, match="not loaded"):
        service.get_model("other")


async def test_talk_stream_then_final_and_the_turn_is_stored(tmp_path: Path) -> None:
    service = await service_over(tmp_path, FakeEngine("Two silver."))
    events = [e async for e in service.stream_talk(TalkRequest("tavern_keeper", "c", "Room?"))]
    assert [type(e) for e in events] == [TextDelta, TextDelta, Completion]
    final = events[-1]
    assert isinstance(final, Completion) and final.stored and final.text == "Two silver."
    unary = await service.talk(TalkRequest("tavern_keeper", "c", "And food?"))
    assert unary.stored
    conversation = await service.get_conversation("tavern_keeper", "c")
    assert [t.player_line for t in conversation.turns] == ["Room?", "And food?"]


async def test_a_stream_left_early_is_closed_and_stores_nothing(tmp_path: Path) -> None:
    service = await service_over(tmp_path, FakeEngine("one two three four five six", delay_s=0.01))
    stream = service.stream_talk(TalkRequest("tavern_keeper", "c", "Hi"))
    assert isinstance(stream, AsyncGenerator)  # one a door can close
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()  # what aclosing() does for a door whose client went away
    assert (await service.get_conversation("tavern_keeper", "c")).turns == ()


async def test_final_of_closes_the_stream_it_reads(tmp_path: Path) -> None:
    closed: list[bool] = []

    async def events() -> AsyncIterator[TextDelta]:
        try:
            yield TextDelta("no final")
        finally:
            closed.append(True)

    with pytest.raises(Exception, match="without a final result"):
        await final_of(events())
    assert closed == [True]
