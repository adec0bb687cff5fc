"""The designer's workbench on the real server and the embedded model, with no restart anywhere: a persona file
edited while the server runs changes the next Talk's prompt (and its stale KV is not reused), a broken file keeps
the last good persona and shows the error, the API refuses to edit a file persona, and character cards import,
talk and export back intact over REST and gRPC."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from tests.workbench.test_cards import V2_CARD, V3_CARD, sillytavern_png, text_chunks

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[2]


class Api:
    def __init__(self, server: Any) -> None:
        self.channel = grpc.insecure_channel(server.grpc_target)
        self.personas = pb_grpc.PersonaServiceStub(self.channel)
        self.conversations = pb_grpc.ConversationServiceStub(self.channel)
        self.http = httpx.Client(base_url=server.http_url, timeout=120)

    def persona(self, persona_id: str = "tavern_keeper") -> pb.Persona:
        persona: pb.Persona = self.personas.GetPersona(pb.GetPersonaRequest(persona_id=persona_id), timeout=30).persona
        return persona

    def talk(self, text: str, conversation: str = "c1", persona_id: str = "tavern_keeper") -> pb.CompletionFinal:
        request = pb.TalkRequest(
            persona_id=persona_id,
            conversation_id=conversation,
            text=text,
            sampling=pb.SamplingOptions(max_tokens=6, seed=1),
        )
        finals: list[pb.CompletionFinal] = [
            r.final for r in self.conversations.Talk(request, timeout=120) if r.HasField("final")
        ]
        assert len(finals) == 1
        return finals[0]

    def close(self) -> None:
        self.channel.close()
        self.http.close()


def eventually(check: Callable[[], bool], within_s: float = 10.0) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within_s, f"not true within {within_s} s"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def bench(server_factory: Any, tmp_path: Path) -> Iterator[tuple[Api, Path]]:
    folder = tmp_path / "personas"
    folder.mkdir()
    shutil.copy(REPO / "personas" / "tavern_keeper.toml", folder)
    api = Api(server_factory(NPCSERVER_PERSONAS_DIR=str(folder)))
    yield api, (folder / "tavern_keeper.toml").resolve()
    api.close()


def test_a_saved_persona_file_changes_the_next_line_and_a_broken_one_keeps_the_last_good(
    bench: tuple[Api, Path],
) -> None:
    api, greta_file = bench
    assert (api.persona().source, api.persona().load_error) == (str(greta_file), "")
    first = api.talk("Good evening.")
    second = api.talk("Any rumours?")
    # The conversation's KV is reused from one line to the next while the persona stays the same.
    assert second.timings.cached_prompt_tokens > first.usage.prompt_tokens // 2

    text = greta_file.read_text()
    greta_file.write_text(
        text.replace('display_name = "Greta"', 'display_name = "Hilda"').replace(
            "The Rusty Flagon is a smoky tavern", "The Golden Goose is a quiet inn"
        )
    )
    assert eventually(lambda: api.persona().display_name == "Hilda") < 1.0
    third = api.talk("Anything else?")
    # The prompt changed from its first sentence on: its tokens match the old KV for a few tokens at most, so
    # nothing stale is reused; the history (now with Hilda's name) is read again.
    assert third.timings.cached_prompt_tokens < 8
    assert third.usage.prompt_tokens > second.usage.prompt_tokens
    assert "Golden Goose" in api.persona().system_prompt

    greta_file.write_text(greta_file.read_text().replace('display_name = "Hilda"', 'display_name = "Hilda'))
    eventually(lambda: api.persona().load_error != "")
    broken = api.persona()
    assert str(greta_file) in broken.load_error and broken.display_name == "Hilda"
    assert api.talk("Still open?").usage.completion_tokens > 0  # the last good Hilda answers

    refused = api.http.put("/v1/npcs/tavern_keeper", json={"id": "tavern_keeper", "display_name": "X"})
    assert refused.status_code == 409 and str(greta_file) in refused.json()["error"]["message"]
    with pytest.raises(grpc.RpcError) as info:
        api.personas.UpdatePersona(pb.UpdatePersonaRequest(persona=broken), timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and str(greta_file) in info.value.details()

    greta_file.write_text(text)
    eventually(lambda: api.persona().load_error == "" and api.persona().display_name == "Greta")
    history = api.conversations.GetConversation(
        pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id="c1"), timeout=30
    )
    assert len(history.conversation.turns) == 4


def test_character_cards_import_talk_and_export_intact(bench: tuple[Api, Path]) -> None:
    api, _ = bench
    created = api.http.post("/v1/npcs:import-card", content=sillytavern_png(V2_CARD))
    assert created.status_code == 201, created.text
    assert created.json()["post_history_instructions"].startswith("Stay in character as Seraphina Vale")
    talk = api.http.post(
        "/v1/npcs/seraphina_vale/conversations/c:talk",
        json={"text": "Where am I?", "stream": False, "sampling": {"max_tokens": 8}},
    )
    assert talk.status_code == 200 and talk.json()["stored"] is True
    png = api.http.get("/v1/npcs/seraphina_vale/card")
    assert png.headers["content-type"] == "image/png" and text_chunks(png.content) == {"chara": V2_CARD}

    mora = api.personas.ImportCharacterCard(
        pb.ImportCharacterCardRequest(card=json.dumps(V3_CARD).encode(), persona_id="mora"), timeout=30
    ).persona
    assert mora.opening_lines == ["Welcome aboard the Gull."]
    assert api.talk("Where are we headed?", persona_id="mora").usage.completion_tokens > 0
    exported = api.personas.ExportCharacterCard(
        pb.ExportCharacterCardRequest(persona_id="mora", format="json"), timeout=30
    )
    assert json.loads(exported.card) == V3_CARD

    bad = api.http.post("/v1/npcs:import-card", content=b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    assert bad.status_code == 400 and "not a readable PNG" in bad.json()["error"]["message"]
    with pytest.raises(grpc.RpcError) as info:
        api.personas.ImportCharacterCard(pb.ImportCharacterCardRequest(card=b'{"spec": "chara_card_v2"}'), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'data' object" in info.value.details()
