"""Character cards (npcserver.core.cards): V2 and V3, PNG and JSON, the field mapping, lossless export, bad cards,
and the REST and gRPC doors in process over the real core (a scripted engine; the real model runs in
test_workbench_live.py)."""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from PIL import Image

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.config import Settings
from npcserver.core import cards
from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.core.prompt import PromptBuilder
from npcserver.core.types import ExampleExchange, Turn
from npcserver.errors import InvalidArgument
from npcserver.grpc.server import GrpcDoor
from npcserver.http import create_http_app
from npcserver.store.sqlite import SqliteStore
from tests.fakes import FakeEngine

V2_CARD: dict[str, Any] = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "name": "Seraphina Vale",  # a V1 mirror at the root, as many exporters write: kept untouched
    "data": {
        "name": "Seraphina Vale",
        "description": "{{char}} is a healer who guards the Eldergrove.",
        "personality": "gentle, wary of strangers",
        "scenario": "{{user}} wakes up wounded in {{char}}'s glade.",
        "first_mes": "*She kneels beside you.* Easy, {{user}}. You're safe here.",
        "mes_example": (
            "<START>\n{{user}}: Who are you?\n{{char}}: I am Seraphina.\nI tend this glade.\n"
            "<START>\n{{char}}: *hums*\n<USER>: Where am I?\n<BOT>: The Eldergrove. Rest now."
        ),
        "creator_notes": "Works best with the storytelling preset.",
        "system_prompt": "",
        "post_history_instructions": "Stay in character as {{char}}; answer in one or two sentences.",
        "alternate_greetings": ["*She looks up from her herbs.* Back again?"],
        "character_book": {"name": "Eldergrove", "entries": [{"keys": ["glade"], "content": "A sacred glade."}]},
        "tags": ["fantasy", "healer"],
        "creator": "someone",
        "character_version": "1.2",
        "extensions": {"depth_prompt": {"prompt": "She smells of pine.", "depth": 4}, "talkativeness": "0.5"},
    },
}

V3_CARD: dict[str, Any] = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "Captain Mora",
        "description": "{{char}} commands the airship Gull. Dry humour, never raises her voice.",
        "personality": "",
        "scenario": "",
        "first_mes": "Welcome aboard the Gull.",
        "mes_example": "<START>\n{{user}}: Where are we headed?\n{{char}}: Wherever the wind pays best.",
        "creator_notes": "",
        "system_prompt": "You are {{char}}. Speak plainly. {{original}}",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "group_only_greetings": ["Crew, listen up."],
        "tags": [],
        "creator": "",
        "character_version": "",
        "extensions": {},
        "nickname": "Cap",
        "creation_date": 1700000000,
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
        "character_book": {"entries": []},
    },
}


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def sillytavern_png(card: dict[str, Any], chunk: str = "chara") -> bytes:
    """A PNG as SillyTavern writes one: the card's tEXt chunk inserted after the pixels, just before IEND."""
    out = io.BytesIO()
    Image.new("RGB", (8, 12), (10, 120, 40)).save(out, "PNG")
    raw = out.getvalue()
    assert raw.endswith(png_chunk(b"IEND", b""))
    text = chunk.encode() + b"\0" + base64.b64encode(json.dumps(card).encode())
    return raw[: -len(png_chunk(b"IEND", b""))] + png_chunk(b"tEXt", text) + png_chunk(b"IEND", b"")


def text_chunks(png: bytes) -> dict[str, dict[str, Any]]:
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return {k: json.loads(base64.b64decode(v)) for k, v in image.info.items() if k in ("chara", "ccv3")}


# --- the mapping -------------------------------------------------------------------------------------------------


def test_a_v2_png_maps_every_used_field() -> None:
    p = cards.import_persona(sillytavern_png(V2_CARD))
    assert p.id == "seraphina_vale" and p.display_name == "Seraphina Vale"
    assert p.system_prompt == (
        "Seraphina Vale is a healer who guards the Eldergrove.\n\n"
        "Seraphina Vale's personality: gentle, wary of strangers\n\n"
        "Scenario: Player wakes up wounded in Seraphina Vale's glade."
    )
    # <START> splits blocks; {{user}}/<USER> lines are the player's; an NPC line before any player line is dropped;
    # a line without a speaker continues the one before it.
    assert p.example_dialogue == (
        ExampleExchange("Who are you?", "I am Seraphina.\nI tend this glade."),
        ExampleExchange("Where am I?", "The Eldergrove. Rest now."),
    )
    assert p.opening_lines == (
        "*She kneels beside you.* Easy, Player. You're safe here.",
        "*She looks up from her herbs.* Back again?",
    )
    assert p.post_history_instructions == "Stay in character as Seraphina Vale; answer in one or two sentences."
    assert p.description == "Works best with the storytelling preset."
    assert p.card is not None and p.card["json"] == V2_CARD  # character_book, tags, extensions kept


def test_a_v3_card_puts_its_system_prompt_first_and_drops_original() -> None:
    p = cards.import_persona(json.dumps(V3_CARD).encode(), persona_id="mora")
    assert p.id == "mora"
    assert p.system_prompt == (
        "You are Captain Mora. Speak plainly.\n\nCaptain Mora commands the airship Gull. Dry humour, never raises her "
        "voice."
    )
    assert p.example_dialogue == (ExampleExchange("Where are we headed?", "Wherever the wind pays best."),)
    assert p.opening_lines == ("Welcome aboard the Gull.",)


def test_export_returns_what_was_imported() -> None:
    v2 = cards.import_persona(sillytavern_png(V2_CARD))
    card, png = cards.to_card(v2)
    assert card == V2_CARD and png is not None
    exported = cards.export_card(v2, "png")[0]
    assert text_chunks(exported) == {"chara": V2_CARD}
    assert cards.read_card(exported)[0] == V2_CARD
    with Image.open(io.BytesIO(exported)) as image:
        assert image.size == (8, 12) and image.getpixel((0, 0)) == (10, 120, 40)  # the card's own picture
    v3 = cards.import_persona(json.dumps(V3_CARD).encode())
    assert json.loads(cards.export_card(v3, "json")[0]) == V3_CARD
    # A V3 PNG carries ccv3, and chara as V2 for readers that only know V2; V3 readers take ccv3.
    chunks = text_chunks(cards.export_card(v3, "png")[0])
    assert chunks["ccv3"] == V3_CARD and chunks["chara"]["spec"] == "chara_card_v2"
    assert cards.read_card(cards.export_card(v3, "png")[0])[0] == V3_CARD


def test_an_edited_persona_exports_its_edits_and_keeps_the_rest() -> None:
    from dataclasses import replace

    p = cards.import_persona(sillytavern_png(V2_CARD))
    edited = replace(
        p,
        system_prompt="Seraphina Vale is a retired healer.",
        example_dialogue=(ExampleExchange("Hello", "Seraphina Vale waves."),),
        opening_lines=("Hi.",),
    )
    card, _ = cards.to_card(edited)
    data = card["data"]
    assert data["description"] == "{{char}} is a retired healer."
    assert data["personality"] == data["scenario"] == data["system_prompt"] == ""
    assert data["mes_example"] == "<START>\n{{user}}: Hello\n{{char}}: {{char}} waves.\n"
    assert data["first_mes"] == "Hi." and data["alternate_greetings"] == []
    assert data["character_book"] == V2_CARD["data"]["character_book"] and data["tags"] == ["fantasy", "healer"]
    again = cards.to_persona(card, persona_id=p.id)
    assert (again.system_prompt, again.example_dialogue, again.opening_lines) == (
        edited.system_prompt,
        edited.example_dialogue,
        edited.opening_lines,
    )


def test_a_persona_never_imported_exports_as_a_complete_v2_card() -> None:
    from npcserver.core.types import Persona

    p = Persona("greta", "Greta", "Greta keeps the Rusty Flagon.", (ExampleExchange("Ale?", "Two copper."),))
    card, png = cards.to_card(p)
    assert png is None and card["spec"] == "chara_card_v2" and card["spec_version"] == "2.0"
    assert set(card["data"]) >= {"name", "description", "first_mes", "mes_example", "alternate_greetings", "tags"}
    assert cards.to_persona(cards.read_card(cards.export_card(p, "png")[0])[0]).system_prompt == p.system_prompt


@pytest.mark.parametrize(
    ("blob", "words"),
    [
        (b"", "the card is empty"),
        (b"GIF89a....", "neither a PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "not a readable PNG"),
        (b"{not json", "the card is not valid JSON"),
        (b'{"spec": "chara_card_v2"}', "needs a 'data' object"),
        (json.dumps({"name": "Old", "description": "v1"}).encode(), "card spec None is not supported"),
        (json.dumps({"spec": "chara_card_v9", "data": {}}).encode(), "'chara_card_v9' is not supported"),
        (json.dumps({**V2_CARD, "data": {**V2_CARD["data"], "name": ""}}).encode(), "data.name must not be empty"),
        (json.dumps({**V2_CARD, "data": {**V2_CARD["data"], "first_mes": 3}}).encode(), "data.first_mes must be"),
        (
            json.dumps(
                {**V2_CARD, "data": {**V2_CARD["data"], "description": "", "personality": "", "scenario": ""}}
            ).encode(),
            "says nothing about the character",
        ),
    ],
)
def test_bad_cards_say_what_is_wrong(blob: bytes, words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        cards.import_persona(blob)
    assert words in info.value.message


def test_a_png_without_a_card_or_with_a_broken_chunk_says_so() -> None:
    plain = io.BytesIO()
    Image.new("RGB", (4, 4)).save(plain, "PNG")
    with pytest.raises(InvalidArgument, match="no tEXt chunk named 'ccv3' or 'chara'"):
        cards.import_persona(plain.getvalue())
    raw = plain.getvalue()
    broken = raw[:-12] + png_chunk(b"tEXt", b"chara\0%%%not-base64%%%") + raw[-12:]
    with pytest.raises(InvalidArgument, match="'chara' chunk is not base64"):
        cards.import_persona(broken)
    not_json = raw[:-12] + png_chunk(b"tEXt", b"chara\0" + base64.b64encode(b"hello")) + raw[-12:]
    with pytest.raises(InvalidArgument, match="card chunk is not valid JSON"):
        cards.import_persona(not_json)


def test_post_history_instructions_come_after_the_history() -> None:
    from dataclasses import replace

    p = cards.import_persona(sillytavern_png(V2_CARD))
    builder = PromptBuilder(
        lambda text, *_, **__: [ord(c) for c in text],
        8192,
        chat_template=None,
        bos_token="<bos>",
        eos_token="<eos>",
        add_bos=False,
    )
    built = builder.talk(p, [Turn("Hello?", "Hush.")], "Who are you?", player_name="", max_tokens=50, structured=False)
    assert built.text.endswith(
        "Player: Hello?\nSeraphina Vale: Hush.\nPlayer: Who are you?\n"
        "Stay in character as Seraphina Vale; answer in one or two sentences.\nSeraphina Vale:"
    )
    without = builder.talk(
        replace(p, post_history_instructions=""), [], "Who?", player_name="", max_tokens=50, structured=False
    )
    assert without.text.endswith("Player: Who?\nSeraphina Vale:")


# --- the doors, in process -----------------------------------------------------------------------------------------


@pytest.fixture
async def core(tmp_path: Path) -> NpcCore:
    return NpcCore(FakeEngine("Rest now."), SqliteStore(tmp_path / "db.sqlite"), PresetBook())


async def test_rest_imports_talks_and_exports(core: NpcCore, tmp_path: Path) -> None:
    app = create_http_app(core, Settings(data_dir=tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door") as http:
        created = await http.post("/v1/npcs:import-card", content=sillytavern_png(V2_CARD))
        assert created.status_code == 201, created.text
        persona = created.json()
        assert persona["id"] == "seraphina_vale" and persona["source"] == ""
        assert persona["opening_lines"][1] == "*She looks up from her herbs.* Back again?"
        again = await http.post("/v1/npcs:import-card", content=sillytavern_png(V2_CARD))
        assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
        replaced = await http.post("/v1/npcs:import-card?replace=true", content=sillytavern_png(V2_CARD))
        assert replaced.status_code == 201
        talk = await http.post(
            "/v1/npcs/seraphina_vale/conversations/c:talk", json={"text": "Where am I?", "stream": False}
        )
        assert talk.status_code == 200 and talk.json()["stored"] is True, talk.text
        # An edit through the API keeps the imported card (the Persona message does not carry it).
        edited = {**persona, "max_tokens": 40}
        assert (await http.put("/v1/npcs/seraphina_vale", json=edited)).status_code == 200
        png = await http.get("/v1/npcs/seraphina_vale/card")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert text_chunks(png.content) == {"chara": V2_CARD}
        as_json = await http.get("/v1/npcs/seraphina_vale/card", params={"format": "json"})
        assert as_json.headers["content-type"] == "application/json" and as_json.json() == V2_CARD
        bad_format = await http.get("/v1/npcs/seraphina_vale/card", params={"format": "gif"})
        assert bad_format.status_code == 400 and "use 'png' or 'json'" in bad_format.json()["error"]["message"]
        bad = await http.post("/v1/npcs:import-card", content=b"GIF89a")
        assert bad.status_code == 400 and "neither a PNG" in bad.json()["error"]["message"]
        bad_id = await http.post("/v1/npcs:import-card?persona_id=Bad Id", content=json.dumps(V3_CARD).encode())
        assert bad_id.status_code == 400 and bad_id.json()["error"]["param"] == "persona_id"


async def test_grpc_imports_and_exports(core: NpcCore, tmp_path: Path) -> None:
    door = GrpcDoor(core, Settings(grpc_port=0, data_dir=tmp_path))
    port = await door.start()
    await door.set_serving(True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            personas = pb_grpc.PersonaServiceStub(channel)
            reply = await personas.ImportCharacterCard(
                pb.ImportCharacterCardRequest(card=json.dumps(V3_CARD).encode(), persona_id="mora")
            )
            assert reply.persona.display_name == "Captain Mora"
            exported = await personas.ExportCharacterCard(
                pb.ExportCharacterCardRequest(persona_id="mora", format="json")
            )
            assert exported.media_type == "application/json" and json.loads(exported.card) == V3_CARD
            png = await personas.ExportCharacterCard(pb.ExportCharacterCardRequest(persona_id="mora"))
            assert png.media_type == "image/png" and text_chunks(png.card)["ccv3"] == V3_CARD
            not_v2 = copy.deepcopy(V2_CARD)
            not_v2["spec"] = "chara_card_v1"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await personas.ImportCharacterCard(pb.ImportCharacterCardRequest(card=json.dumps(not_v2).encode()))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "'chara_card_v1' is not supported" in (info.value.details() or "")
    finally:
        await door.stop(0)
