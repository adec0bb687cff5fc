"""SillyTavern / TavernAI character cards (V2 ``chara_card_v2``, V3 ``chara_card_v3``) to and from personas.

A card travels as JSON or as a PNG whose ``tEXt`` chunk ``ccv3`` (V3) or ``chara`` (V2, and V3 for older readers)
holds the card JSON in base64. Specs: github.com/malfoyslastname/character-card-spec-v2 and
github.com/kwaroran/character-card-spec-v3.

Field mapping (card ``data`` -> persona):

- ``name`` -> ``display_name``; the persona id is the name in lowercase with '_' for other characters, unless the
  import names one.
- ``system_prompt``, ``description``, ``personality`` ("{name}'s personality: ..."), ``scenario`` ("Scenario: ...")
  -> ``system_prompt``, in that order, blank-line separated.
- ``mes_example`` split on ``<START>``; ``{{user}}:`` / ``<USER>:`` lines are the player's, ``{{char}}:`` /
  ``<BOT>:`` lines the NPC's -> ``example_dialogue`` (player line then NPC line; a block's lines before its first
  player line are dropped).
- ``first_mes`` then ``alternate_greetings`` -> ``opening_lines``.
- ``post_history_instructions`` -> ``post_history_instructions`` (rendered after the history).
- ``creator_notes`` -> ``description`` (for designers; not sent to the model).
- In every text, ``{{char}}`` / ``<BOT>`` become the name, ``{{user}}`` / ``<USER>`` the persona's player name
  ("Player" when it has none), ``{{original}}`` nothing (case-insensitive).
- Everything else (``character_book``, ``tags``, ``creator``, ``extensions``, V3 ``assets``, ...) is kept unused in
  ``Persona.card`` with the whole card and its PNG image, so an export returns what was imported: fields whose persona
  value is unchanged are exported exactly as imported. An edited system prompt is exported as ``description`` (with
  ``system_prompt``, ``personality`` and ``scenario`` emptied, since it already holds them).
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import json
import re
from dataclasses import replace
from typing import Any, Literal

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from npcserver.core.personas import MAX_EXAMPLES, PERSONA_ID, check_name
from npcserver.core.types import ExampleExchange, Persona
from npcserver.errors import InvalidArgument

#: Largest accepted card (JSON or PNG); it also fits gRPC's default 4 MiB message limit.
MAX_CARD_BYTES = 4_000_000
#: Largest accepted card image: the PNG is decoded to reach a card chunk stored after the pixels.
MAX_IMAGE_PIXELS = 4096 * 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPECS = {"chara_card_v2": "2.0", "chara_card_v3": "3.0"}
CardFormat = Literal["json", "png"]
FORMATS: tuple[CardFormat, ...] = ("json", "png")

_TEXT_FIELDS = (
    "name",
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
)
# Fields the specs require; an export fills the missing ones with empty values.
_REQUIRED_V2: dict[str, Any] = {
    **dict.fromkeys(_TEXT_FIELDS, ""),
    "alternate_greetings": [],
    "tags": [],
    "creator": "",
    "character_version": "",
    "extensions": {},
}
_REQUIRED_V3: dict[str, Any] = {**_REQUIRED_V2, "group_only_greetings": []}
_START = re.compile(r"<start>", re.IGNORECASE)
_SPEAKER = re.compile(r"^\s*(\{\{user\}\}|<user>|\{\{char\}\}|<bot>)\s*:\s?(.*)$", re.IGNORECASE)
_CHAR = re.compile(r"\{\{char\}\}|<bot>", re.IGNORECASE)
_USER = re.compile(r"\{\{user\}\}|<user>", re.IGNORECASE)
_ORIGINAL = re.compile(r"\{\{original\}\}", re.IGNORECASE)
DEFAULT_PLAYER = "Player"


# --- reading ---------------------------------------------------------------------------------------------------------


def read_card(blob: bytes) -> tuple[dict[str, Any], bytes | None]:
    """The card JSON object of a PNG or JSON character card, and the PNG itself (None for JSON).

    Raises InvalidArgument saying what is wrong: not a PNG nor JSON, no card chunk, bad base64 or JSON, wrong spec.
    """
    if not blob:
        raise InvalidArgument("the card is empty: send a character card PNG or its JSON", param="card")
    if len(blob) > MAX_CARD_BYTES:
        raise InvalidArgument(f"the card is {len(blob)} bytes; the limit is {MAX_CARD_BYTES}", param="card")
    if blob.startswith(PNG_SIGNATURE):
        card = _json_object(_png_card_text(blob), "the PNG's card chunk")
        png: bytes | None = blob
    elif blob.lstrip()[:1] == b"{":
        card, png = _json_object(blob, "the card"), None
    else:
        raise InvalidArgument(
            "the card is neither a PNG (no PNG signature) nor JSON (no '{'): send a character card PNG or its JSON",
            param="card",
        )
    check_card(card)
    return card, png


def _png_card_text(blob: bytes) -> bytes:
    try:
        with Image.open(io.BytesIO(blob), formats=["PNG"]) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InvalidArgument(
                    f"the card image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels",
                    param="card",
                )
            # Cards usually keep their chunk after the pixels (SillyTavern writes it just before IEND): load reads on.
            image.load()
            texts = dict(image.info)
    except InvalidArgument:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidArgument("the card starts like a PNG but is not a readable PNG image", param="card") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidArgument(f"the card PNG cannot be read: {exc}", param="card") from exc
    for chunk in ("ccv3", "chara"):  # V3 readers prefer ccv3 when both are there
        value = texts.get(chunk)
        if isinstance(value, str | bytes):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidArgument(f"the PNG's '{chunk}' chunk is not base64: {exc}", param="card") from exc
    raise InvalidArgument(
        "the PNG has no character card: it has no tEXt chunk named 'ccv3' or 'chara' (is it a plain image?)",
        param="card",
    )


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{what} is not UTF-8 text: {exc}", param="card") from exc
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}", param="card") from exc
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object, not {type(value).__name__}", param="card")
    return value


def check_card(card: dict[str, Any]) -> None:
    """The spec and the types of the fields npcserver reads."""
    spec = card.get("spec")
    if spec not in SPECS:
        raise InvalidArgument(
            f"card spec {spec!r} is not supported: npcserver imports 'chara_card_v2' and 'chara_card_v3' cards "
            "(a V1 card has no spec: save it again from SillyTavern to upgrade it)",
            param="card",
        )
    data = card.get("data")
    if not isinstance(data, dict):
        raise InvalidArgument(f"a {spec} card needs a 'data' object with the character", param="card")
    for name in _TEXT_FIELDS:
        if not isinstance(data.get(name, ""), str):
            raise InvalidArgument(f"card data.{name} must be a string", param="card")
    greetings = data.get("alternate_greetings", [])
    if not isinstance(greetings, list) or not all(isinstance(g, str) for g in greetings):
        raise InvalidArgument("card data.alternate_greetings must be a list of strings", param="card")
    name = data.get("name", "")
    if not name.strip():
        raise InvalidArgument("card data.name must not be empty: it is the character's name", param="card")
    check_name(name, field="card data.name", param="card")


# --- card -> persona -------------------------------------------------------------------------------------------------


def slug(name: str) -> str:
    """A persona id from a character name ("Seraphina Vale" -> "seraphina_vale"), or "" when none can be made."""
    text = re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_-")[:64]
    return text if PERSONA_ID.match(text) else ""


def to_persona(card: dict[str, Any], png: bytes | None = None, *, persona_id: str = "") -> Persona:
    """The persona a card describes (see the module docstring for the mapping). The card is kept in ``card``."""
    data: dict[str, Any] = card["data"]
    name = data["name"].strip()
    pid = persona_id or slug(name)
    if not pid:
        raise InvalidArgument(
            f"no persona id can be made from the name {name!r}: give one (persona_id)", param="persona_id"
        )

    def text(field: str) -> str:
        value = _ORIGINAL.sub("", str(data.get(field) or ""))
        return _USER.sub(DEFAULT_PLAYER, _CHAR.sub(name, value)).strip()

    parts = [text("system_prompt"), text("description")]
    if text("personality"):
        parts.append(f"{name}'s personality: {text('personality')}")
    if text("scenario"):
        parts.append(f"Scenario: {text('scenario')}")
    system_prompt = "\n\n".join(p for p in parts if p)
    if not system_prompt:
        raise InvalidArgument(
            "the card says nothing about the character: description, personality, scenario and system_prompt are "
            "all empty",
            param="card",
        )
    greetings = [data.get("first_mes") or "", *data.get("alternate_greetings", [])]
    opening = tuple(t for g in greetings if (t := _USER.sub(DEFAULT_PLAYER, _CHAR.sub(name, g)).strip()))
    return Persona(
        id=pid,
        display_name=name,
        system_prompt=system_prompt,
        example_dialogue=parse_examples(str(data.get("mes_example") or ""), name),
        opening_lines=opening,
        post_history_instructions=text("post_history_instructions"),
        description=str(data.get("creator_notes") or ""),
        card={"json": card, "png": base64.b64encode(png).decode("ascii") if png else ""},
    )


def parse_examples(mes_example: str, name: str) -> tuple[ExampleExchange, ...]:
    """``mes_example`` blocks (split on <START>) as player/NPC exchanges; a line without a speaker continues the
    line before it."""
    exchanges: list[ExampleExchange] = []
    for block in _START.split(mes_example):
        pairs: list[tuple[list[str], list[str]]] = []
        current: list[str] | None = None
        for line in block.splitlines():
            m = _SPEAKER.match(line)
            if m is None:
                if current is not None and line.strip():
                    current.append(line.strip())
                continue
            said = _USER.sub(DEFAULT_PLAYER, _CHAR.sub(name, m.group(2))).strip()
            if m.group(1).lower() in ("{{user}}", "<user>"):
                if not pairs or pairs[-1][1]:  # a player line after the NPC's starts a new exchange
                    pairs.append(([], []))
                current = pairs[-1][0]
            else:
                current = pairs[-1][1] if pairs else None  # an NPC line before any player line has no exchange
            if current is not None:
                current.append(said)
        for player, npc in pairs:
            p, n = "\n".join(player).strip(), "\n".join(npc).strip()
            if p and n:
                exchanges.append(ExampleExchange(p, n))
    return tuple(exchanges[:MAX_EXAMPLES])


# --- persona -> card -------------------------------------------------------------------------------------------------


def to_card(persona: Persona) -> tuple[dict[str, Any], bytes | None]:
    """The card for a persona and the PNG it was imported with (None when it had none). Fields whose persona value
    is unchanged since the import come back exactly as imported; a persona never imported becomes a V2 card."""
    kept = persona.card or {}
    original = kept.get("json") if isinstance(kept.get("json"), dict) else None
    png = base64.b64decode(kept["png"]) if kept.get("png") else None
    card: dict[str, Any] = copy.deepcopy(original) if original else {"spec": "chara_card_v2", "spec_version": "2.0"}
    data: dict[str, Any] = card.setdefault("data", {})
    imported = to_persona(original, persona_id=persona.id) if original else None

    def changed(attr: str) -> bool:
        return imported is None or getattr(imported, attr) != getattr(persona, attr)

    name = persona.display_name
    if changed("display_name"):
        data["name"] = name
    if changed("system_prompt"):
        data.update(system_prompt="", description=_unsub(persona.system_prompt, name), personality="", scenario="")
    if changed("example_dialogue"):
        data["mes_example"] = "".join(
            f"<START>\n{{{{user}}}}: {e.player_line}\n{{{{char}}}}: {_unsub(e.npc_line, name)}\n"
            for e in persona.example_dialogue
        )
    if changed("opening_lines"):
        lines = [_unsub(line, name) for line in persona.opening_lines]
        data["first_mes"] = lines[0] if lines else ""
        data["alternate_greetings"] = lines[1:]
    if changed("post_history_instructions"):
        data["post_history_instructions"] = _unsub(persona.post_history_instructions, name)
    if changed("description"):
        data["creator_notes"] = persona.description
    required = _REQUIRED_V3 if card.get("spec") == "chara_card_v3" else _REQUIRED_V2
    for key, empty in required.items():
        data.setdefault(key, copy.deepcopy(empty))
    return card, png


def _unsub(text: str, name: str) -> str:
    return text.replace(name, "{{char}}") if name else text


def export_card(persona: Persona, fmt: str) -> tuple[bytes, str]:
    """The persona as a card file: (bytes, media type). ``fmt`` is "json" or "png"."""
    if fmt not in FORMATS:
        raise InvalidArgument(f"card format {fmt!r} is unknown; use 'png' or 'json'", param="format")
    card, png = to_card(persona)
    if fmt == "json":
        return json.dumps(card, ensure_ascii=False, indent=2).encode("utf-8"), "application/json"
    return write_png(card, png), "image/png"


def write_png(card: dict[str, Any], png: bytes | None = None) -> bytes:
    """A PNG carrying the card: the imported image when there is one (its old card chunks replaced), else a plain
    portrait-shaped placeholder. A V3 card goes in ``ccv3`` and, as V2, in ``chara`` for readers that only know V2."""
    info = PngImagePlugin.PngInfo()
    if card.get("spec") == "chara_card_v3":
        info.add_text("ccv3", _b64_json(card))
        info.add_text("chara", _b64_json({**card, "spec": "chara_card_v2", "spec_version": "2.0"}))
    else:
        info.add_text("chara", _b64_json(card))
    out = io.BytesIO()
    if png is not None:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
            image.save(out, "PNG", pnginfo=info)
    else:
        Image.new("RGB", (400, 600), (72, 61, 89)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def _b64_json(card: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8")).decode("ascii")


def import_persona(blob: bytes, *, persona_id: str = "") -> Persona:
    """Reads a card (PNG or JSON) into a persona; raises InvalidArgument for a bad card."""
    card, png = read_card(blob)
    persona = to_persona(card, png, persona_id=persona_id)
    return replace(persona, source="", load_error="")
