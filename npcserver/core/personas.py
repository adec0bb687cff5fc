"""Persona rules: validation, the stored dict form, and designer-editable TOML files."""

from __future__ import annotations

import json
import logging
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from npcserver.core.types import ExampleExchange, Persona
from npcserver.errors import InvalidArgument

log = logging.getLogger(__name__)

PERSONA_ID = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
CONVERSATION_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces: safe in URLs and file names
MAX_SYSTEM_PROMPT = 32_000
MAX_EXAMPLES = 64
MAX_OPENING_LINES = 64
MAX_NAME = 64
#: Persona fields only the server sets.
STORED_ONLY = frozenset({"source", "load_error", "card", "shadowed"})
#: Every character str.splitlines() breaks on: in a transcript, any of them would start a new speaker line.
LINE_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def check_persona_id(persona_id: str, *, param: str = "persona_id") -> None:
    if not PERSONA_ID.match(persona_id):
        raise InvalidArgument(
            f"{param} {persona_id!r} is invalid: use 1-64 lowercase letters, digits, '_' or '-', starting with a "
            "letter (for example 'tavern_keeper')",
            param=param,
        )


def check_conversation_id(conversation_id: str) -> None:
    if not CONVERSATION_ID.match(conversation_id):
        raise InvalidArgument(
            f"conversation_id {conversation_id!r} is invalid: use 1-128 printable ASCII characters without spaces "
            "(for example a player id or 'slot-1')",
            param="conversation_id",
        )


def check_name(name: str, *, field: str, param: str | None = None, required: bool = False) -> None:
    """A speaker name: one line (it is a transcript's speaker label), at most MAX_NAME characters."""
    param = param or field
    if required and not name.strip():
        raise InvalidArgument(f"{field} must not be empty", param=param)
    if len(name) > MAX_NAME:
        raise InvalidArgument(f"{field} is {len(name)} characters; the limit is {MAX_NAME}", param=param)
    found = LINE_BREAKS.search(name)
    if found:
        raise InvalidArgument(
            f"{field} must be on one line: it contains the line break {found.group()!r} at position {found.start()}",
            param=param,
        )


def check_persona(p: Persona, *, max_chars: int) -> None:
    """Structural checks. The preset and the schema are checked by the core, which knows presets and grammars."""
    check_persona_id(p.id, param="persona.id")
    check_name(p.display_name, field="persona.display_name", param="display_name", required=True)
    check_name(p.player_name, field="persona.player_name", param="player_name")
    if not p.system_prompt.strip():
        raise InvalidArgument("persona.system_prompt must not be empty: say who the NPC is", param="system_prompt")
    if len(p.system_prompt) > MAX_SYSTEM_PROMPT:
        raise InvalidArgument(
            f"persona.system_prompt is {len(p.system_prompt)} characters; the limit is {MAX_SYSTEM_PROMPT}",
            param="system_prompt",
        )
    if len(p.example_dialogue) > MAX_EXAMPLES:
        raise InvalidArgument(f"persona.example_dialogue has more than {MAX_EXAMPLES} exchanges", param="example")
    for i, ex in enumerate(p.example_dialogue):
        if not ex.player_line.strip() or not ex.npc_line.strip():
            raise InvalidArgument(
                f"persona.example_dialogue[{i}] needs both player_line and npc_line", param="example_dialogue"
            )
        if len(ex.player_line) > max_chars or len(ex.npc_line) > max_chars:
            raise InvalidArgument(f"persona.example_dialogue[{i}] is over {max_chars} characters")
    if p.max_tokens is not None and p.max_tokens < 0:
        raise InvalidArgument("persona.max_tokens must be 0 (until stop) or positive", param="max_tokens")
    if any(not s for s in p.stop):
        raise InvalidArgument("persona.stop must not contain empty strings", param="stop")
    if len(p.opening_lines) > MAX_OPENING_LINES:
        raise InvalidArgument(
            f"persona.opening_lines has {len(p.opening_lines)} lines; the limit is {MAX_OPENING_LINES}",
            param="opening_lines",
        )
    for i, line in enumerate(p.opening_lines):
        if not line.strip() or len(line) > max_chars:
            raise InvalidArgument(
                f"persona.opening_lines[{i}] must be 1 to {max_chars} characters", param="opening_lines"
            )
    if len(p.post_history_instructions) > MAX_SYSTEM_PROMPT:
        raise InvalidArgument(
            f"persona.post_history_instructions is {len(p.post_history_instructions)} characters; the limit is "
            f"{MAX_SYSTEM_PROMPT}",
            param="post_history_instructions",
        )


def persona_to_dict(p: Persona) -> dict[str, Any]:
    return {
        "id": p.id,
        "display_name": p.display_name,
        "system_prompt": p.system_prompt,
        "example_dialogue": [{"player": e.player_line, "npc": e.npc_line} for e in p.example_dialogue],
        "default_preset": p.default_preset,
        "response_schema": p.response_schema,
        "max_tokens": p.max_tokens,
        "stop": list(p.stop),
        "player_name": p.player_name,
        "description": p.description,
        "opening_lines": list(p.opening_lines),
        "post_history_instructions": p.post_history_instructions,
        "source": p.source,
        "load_error": p.load_error,
        "card": p.card,
    }


def persona_from_dict(d: dict[str, Any], *, origin: str = "persona") -> Persona:
    """Builds a Persona from the stored / TOML form. Raises InvalidArgument naming the bad field."""
    known = {
        "id",
        "display_name",
        "system_prompt",
        "example_dialogue",
        "default_preset",
        "response_schema",
        "max_tokens",
        "stop",
        "player_name",
        "description",
        "opening_lines",
        "post_history_instructions",
        # Set by the server, never by a file: where the persona comes from, its file's error, its imported card.
        *STORED_ONLY,
    }
    unknown = sorted(set(d) - known)
    if unknown:
        raise InvalidArgument(f"{origin}: unknown fields {unknown}; known fields: {sorted(known)}")
    schema = d.get("response_schema")
    if isinstance(schema, str):
        try:
            schema = json.loads(schema) if schema.strip() else None
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                f"{origin}: response_schema is not valid JSON: {exc}", param="response_schema"
            ) from exc
    if schema is not None and not isinstance(schema, dict):
        raise InvalidArgument(f"{origin}: response_schema must be a JSON object", param="response_schema")
    examples = []
    for i, ex in enumerate(d.get("example_dialogue") or []):
        if not isinstance(ex, dict) or not {"player", "npc"} <= set(ex):
            raise InvalidArgument(f"{origin}: example_dialogue[{i}] needs 'player' and 'npc' lines")
        npc = ex["npc"]
        # A structured persona's examples may be written as TOML tables; the model sees them as JSON text.
        npc_line = json.dumps(npc, ensure_ascii=False) if isinstance(npc, dict) else str(npc)
        examples.append(ExampleExchange(player_line=str(ex["player"]), npc_line=npc_line))
    try:
        return Persona(
            id=str(d["id"]),
            display_name=str(d.get("display_name") or d["id"]),
            system_prompt=str(d.get("system_prompt", "")),
            example_dialogue=tuple(examples),
            default_preset=str(d.get("default_preset") or ""),
            response_schema=schema,
            max_tokens=None if d.get("max_tokens") is None else int(d["max_tokens"]),
            stop=tuple(str(s) for s in d.get("stop") or ()),
            player_name=str(d.get("player_name") or ""),
            description=str(d.get("description") or ""),
            opening_lines=tuple(str(s) for s in d.get("opening_lines") or ()),
            post_history_instructions=str(d.get("post_history_instructions") or ""),
            source=str(d.get("source") or ""),
            load_error=str(d.get("load_error") or ""),
            card=d.get("card") if isinstance(d.get("card"), dict) else None,
        )
    except KeyError as exc:
        raise InvalidArgument(f"{origin}: missing field {exc.args[0]!r}") from exc


def load_persona_file(path: Path) -> Persona:
    """Reads one persona TOML file; its id defaults to the file's name. Raises OSError, TOMLDecodeError or
    InvalidArgument (naming the file) when it cannot be read."""
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    doc.setdefault("id", path.stem)
    stored_only = sorted(STORED_ONLY & set(doc))
    if stored_only:
        raise InvalidArgument(f"{path}: {stored_only} are set by the server, not by a persona file")
    return replace(persona_from_dict(doc, origin=str(path)), source=str(path))


def persona_files(folder: Path) -> list[Path]:
    """The persona files of a folder: its ``*.toml`` files, by name."""
    return sorted(p for p in folder.glob("*.toml") if p.is_file())


def load_persona_files(folder: Path) -> list[Persona]:
    """Reads every ``*.toml`` in folder. A file's id defaults to its name. Bad files are reported and skipped."""
    personas = []
    for path in persona_files(folder):
        try:
            personas.append(load_persona_file(path))
        except (OSError, tomllib.TOMLDecodeError, InvalidArgument) as exc:
            log.error("skipping persona file %s: %s", path, exc)
    return personas
