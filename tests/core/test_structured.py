"""Structured output without a model: schema checks, grammar compilation, and judging replies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from npcserver.core.structured import (
    TEXT,
    allow_leading_space,
    check_output,
    check_schema,
    compile_format,
)
from npcserver.core.types import ResponseFormat
from npcserver.errors import InvalidArgument

NPC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "line": {"type": "string"},
        "emotion": {"type": "string", "enum": ["calm", "angry", "happy"]},
        "action": {"type": "string"},
    },
    "required": ["line", "emotion", "action"],
}


def schema_format(schema: Any, name: str = "npc") -> ResponseFormat:
    return ResponseFormat(type="json_schema", schema=schema, name=name)


def test_text_has_no_grammar_and_no_verdict() -> None:
    assert compile_format(None) is TEXT
    assert compile_format(ResponseFormat(type="text")).grammar is None
    assert check_output("anything at all", TEXT, "stop") is None


def test_json_schema_compiles_to_a_grammar_with_its_properties_and_enum() -> None:
    c = compile_format(schema_format(NPC_SCHEMA))
    assert c.kind == "json_schema" and c.name == "npc" and c.schema == NPC_SCHEMA
    assert c.grammar is not None
    assert c.grammar.count("root ::=") == 1
    for literal in ('"\\"line\\""', '"\\"emotion\\""', '"\\"action\\""', '"\\"angry\\""'):
        assert literal in c.grammar, literal
    # JSON strings may not contain raw control characters (a raw newline would make the reply unparseable).
    assert "\\x00-\\x1F" in c.grammar


def test_compiled_grammars_are_cached_by_schema() -> None:
    a = compile_format(schema_format(NPC_SCHEMA))
    b = compile_format(schema_format(json.loads(json.dumps(NPC_SCHEMA))))
    assert a.grammar is b.grammar


def test_json_object_grammar_allows_any_object() -> None:
    c = compile_format(ResponseFormat(type="json_object"))
    assert c.kind == "json_object" and c.schema is None
    assert c.grammar is not None and "root ::= object" in c.grammar


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "fish"}, "not a valid JSON Schema at 'type'"),
        ({"type": "string", "minLength": -1}, "not a valid JSON Schema at 'minLength'"),
        ({"type": "string", "pattern": "abc"}, 'Pattern must start with "^"'),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "#/$defs/missing"),
        ({"$ref": "https://example.com/schema.json"}, "cannot be compiled to a grammar"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_schemas_are_invalid_argument_with_the_reason(schema: Any, reason: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        compile_format(schema_format(schema))
    assert exc.value.param == "response_format"
    assert reason in exc.value.message, exc.value.message


def test_check_schema_accepts_a_good_persona_schema_and_rejects_a_bad_one() -> None:
    check_schema(NPC_SCHEMA)
    with pytest.raises(InvalidArgument):
        check_schema({"type": "object", "properties": {"a": {"type": 5}}})


def test_matching_reply_is_valid_with_its_value() -> None:
    c = compile_format(schema_format(NPC_SCHEMA))
    reply = ' {"line": "Aye.", "emotion": "calm", "action": "nods"} '
    result = check_output(reply, c, "stop")
    assert result is not None
    assert result.valid and result.error == "" and result.schema_name == "npc"
    assert result.value == {"line": "Aye.", "emotion": "calm", "action": "nods"}


def test_reply_cut_off_by_max_tokens_is_never_valid() -> None:
    c = compile_format(schema_format(NPC_SCHEMA))
    result = check_output('{"line": "Aye, the', c, "length")
    assert result is not None and not result.valid
    assert "cut off by max_tokens" in result.error
    # Even JSON that happens to parse is not trusted when generation was cut off.
    whole = check_output('{"line": "Aye.", "emotion": "calm", "action": "nods"}', c, "length")
    assert whole is not None and not whole.valid


def test_reply_breaking_the_schema_is_invalid_and_says_where() -> None:
    c = compile_format(schema_format(NPC_SCHEMA))
    result = check_output('{"line": "Aye.", "emotion": "sleepy", "action": "nods"}', c, "stop")
    assert result is not None and not result.valid
    assert "'emotion'" in result.error and "sleepy" in result.error
    assert result.value["emotion"] == "sleepy"  # parsed, for the caller's logs, but flagged invalid


def test_unparseable_reply_is_invalid() -> None:
    c = compile_format(schema_format(NPC_SCHEMA))
    result = check_output('{"line": "Aye.",}', c, "stop")
    assert result is not None and not result.valid and "not valid JSON" in result.error


def test_json_object_requires_an_object() -> None:
    c = compile_format(ResponseFormat(type="json_object"))
    ok = check_output('{"a": [1, 2]}', c, "stop")
    assert ok is not None and ok.valid
    not_object = check_output("[1, 2]", c, "stop")
    assert not_object is not None and not not_object.valid and "not an object" in not_object.error


def test_allow_leading_space_wraps_the_root_only() -> None:
    c = compile_format(schema_format({"type": "object", "properties": {"root": {"type": "string"}}}))
    assert c.grammar is not None
    g = allow_leading_space(c.grammar)
    assert g.startswith('root ::= " "? json-root\n')
    assert g.count("root ::=") == 2  # the new start rule and json-root's definition
    assert "json-root ::=" in g
    assert '"\\"root\\""' in g, "a property literally named root must be left alone"
    assert "root-kv" in g, "rule names that merely start with root are not renamed"
