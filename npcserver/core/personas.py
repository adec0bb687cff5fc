"""Persona rules: validation, the stored dict form, and designer-editable TOML files."""

from __future__ import annotations

import json
import logging
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from npcserver.core import limits
from npcserver.core.actions import parse_schema_text
from npcserver.core.inputs import check_strings
from npcserver.core.types import Action, ExampleExchange, Persona
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
    check_strings(p, "persona")
    check_persona_size(p)
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
    if p.max_tokens is not None and not 0 <= p.max_tokens <= limits.MAX_PERSONA_MAX_TOKENS:
        raise InvalidArgument(
            f"persona.max_tokens is {p.max_tokens}: use 0 (until stop) to {limits.MAX_PERSONA_MAX_TOKENS} "
            "(MAX_PERSONA_MAX_TOKENS)",
            param="max_tokens",
        )
    if any(not s for s in p.stop):
        raise InvalidArgument("persona.stop must not contain empty strings", param="stop")
    if len(p.stop) > limits.MAX_PERSONA_STOPS:
        raise InvalidArgument(
            f"persona.stop has {len(p.stop)} sequences; the limit is {limits.MAX_PERSONA_STOPS} (MAX_PERSONA_STOPS)",
            param="stop",
        )
    fields = {"description": p.description, "default_preset": p.default_preset}
    fields.update({f"stop[{i}]": s for i, s in enumerate(p.stop)})
    for name, text in fields.items():
        if len(text) > limits.MAX_PERSONA_FIELD_CHARS:
            raise InvalidArgument(
                f"persona.{name} is {len(text)} characters; the limit is {limits.MAX_PERSONA_FIELD_CHARS} "
                "(MAX_PERSONA_FIELD_CHARS)",
                param=name.split("[")[0],
            )
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


def persona_chars(p: Persona) -> int:
    """A persona's size as the API returns it: its text fields and its response schema as JSON, in characters."""
    texts = [p.id, p.display_name, p.system_prompt, p.default_preset, p.player_name, p.description]
    texts += [p.post_history_instructions, p.source, p.load_error, *p.stop, *p.opening_lines]
    texts += [t for e in p.example_dialogue for t in (e.player_line, e.npc_line)]
    schema = len(json.dumps(p.response_schema, ensure_ascii=False)) if p.response_schema is not None else 0
    return sum(map(len, texts)) + schema


def check_persona_size(p: Persona) -> None:
    size = persona_chars(p)
    if size > limits.MAX_PERSONA_CHARS:
        raise InvalidArgument(
            f"persona {p.id!r} is {size} characters in all; the limit is {limits.MAX_PERSONA_CHARS} "
            "(MAX_PERSONA_CHARS): shorten its system prompt, examples or description",
            param="persona",
        )


def _as_text(value: Any, limit: int) -> str:
    """Stored text made safe to send: valid Unicode, no NUL, at most ``limit`` characters."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:limit]


def readable_persona(d: dict[str, Any], *, max_chars: int) -> tuple[Persona, str]:
    """A stored persona for reading, and "" or why it fails the limits.

    A body stored before the limits (or written behind the server's back) must not make GetPersona or ListPersonas
    fail for everyone: one that fails them comes back cut to the limits with ``load_error`` saying why, and the core
    refuses it at Talk until it is fixed."""
    try:
        persona = persona_from_dict(d)
        check_persona(persona, max_chars=max_chars)
        return persona, ""
    except (InvalidArgument, ValueError, TypeError, OverflowError) as exc:
        problem = exc.message if isinstance(exc, InvalidArgument) else f"{type(exc).__name__}: {exc}"
    field = limits.MAX_PERSONA_FIELD_CHARS
    max_tokens = d.get("max_tokens")
    schema = d.get("response_schema")
    shown = Persona(
        id=_as_text(d.get("id"), 64),
        display_name=_as_text(d.get("display_name") or d.get("id"), MAX_NAME),
        system_prompt=_as_text(d.get("system_prompt"), MAX_SYSTEM_PROMPT),
        default_preset=_as_text(d.get("default_preset"), 64),
        response_schema=schema if isinstance(schema, dict) and len(json.dumps(schema)) <= field else None,
        max_tokens=max_tokens
        if isinstance(max_tokens, int) and 0 <= max_tokens <= limits.MAX_PERSONA_MAX_TOKENS
        else None,
        player_name=_as_text(d.get("player_name"), MAX_NAME),
        description=_as_text(d.get("description"), field),
        source=_as_text(d.get("source"), field),
        load_error=_as_text(
            f"this stored persona fails the server's limits and is refused at Talk until it is updated: {problem}",
            field,
        ),
    )
    return shown, problem


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
        "enable_thinking": p.enable_thinking,
        "propose_memories": p.propose_memories,
        "source": p.source,
        "load_error": p.load_error,
        "card": p.card,
        "actions": [
            {
                "name": a.name,
                "description": a.description,
                "parameters": a.parameters,
                "await_result": a.await_result,
            }
            for a in p.actions
        ],
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
        "enable_thinking",
        "propose_memories",
        "actions",
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
    thinking = d.get("enable_thinking")
    if thinking is not None and not isinstance(thinking, bool):
        raise InvalidArgument(f"{origin}: enable_thinking must be true or false", param="enable_thinking")
    propose = d.get("propose_memories", False)
    if not isinstance(propose, bool):
        raise InvalidArgument(f"{origin}: propose_memories must be true or false", param="propose_memories")
    actions = _actions_from(d.get("actions") or [], origin)
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
            enable_thinking=thinking,
            propose_memories=propose,
            source=str(d.get("source") or ""),
            load_error=str(d.get("load_error") or ""),
            card=d.get("card") if isinstance(d.get("card"), dict) else None,
            actions=actions,
        )
    except KeyError as exc:
        raise InvalidArgument(f"{origin}: missing field {exc.args[0]!r}") from exc


def _actions_from(items: Any, origin: str) -> tuple[Action, ...]:
    """A persona's actions from the stored / TOML form: ``[[actions]]`` tables with name, description, parameters (a
    table, or JSON text as parameters_schema) and await_result."""
    if not isinstance(items, list):
        raise InvalidArgument(f"{origin}: actions must be a list of tables ([[actions]])", param="actions")
    out = []
    for i, a in enumerate(items):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise InvalidArgument(f"{origin}: actions[{i}] needs a name", param="actions")
        unknown = sorted(set(a) - {"name", "description", "parameters", "parameters_schema", "await_result"})
        if unknown:
            raise InvalidArgument(
                f"{origin}: actions[{i}] has unknown fields {unknown}; use name, description, parameters, await_result",
                param="actions",
            )
        params = a.get("parameters")
        if params is None and isinstance(a.get("parameters_schema"), str):
            params = parse_schema_text(a["parameters_schema"], where=f"{origin}: actions[{i}].parameters_schema")
        if params is not None and not isinstance(params, dict):
            raise InvalidArgument(f"{origin}: actions[{i}].parameters must be a table (a JSON Schema)", param="actions")
        out.append(
            Action(
                name=a["name"],
                description=str(a.get("description") or ""),
                parameters=params,
                await_result=bool(a.get("await_result", False)),
            )
        )
    return tuple(out)


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
