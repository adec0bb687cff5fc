"""Structured output without a model: schema checks, grammar compilation, and judging replies."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from npcserver.core import bounded
from npcserver.core.limits import (
    MAX_ITEMS,
    MAX_PATTERN_REPEAT,
    MAX_SCHEMA_DEPTH,
    MAX_STRING_LENGTH,
    SCHEMA_VALIDATE_TIMEOUT_S,
)
from npcserver.core.structured import (
    TEXT,
    _compile_in_worker,
    allow_leading_space,
    check_output,
    check_output_async,
    check_schema,
    check_schema_limits,
    compile_format,
    compile_format_async,
    compile_persona_schema,
)
from npcserver.core.types import ResponseFormat
from npcserver.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

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
        ({"$ref": "https://example.com/schema.json"}, "points outside the schema"),
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


# --- bounded work: limits checked first, compilation and slow validation in a worker --------------------------------


def nested_objects(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


OVER_LIMITS = [
    ({"type": "string", "maxLength": 20000}, "MAX_STRING_LENGTH"),  # crashed llama.cpp's parser (stack overflow)
    ({"type": "string", "minLength": 1001}, "MAX_STRING_LENGTH"),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 20000}, "MAX_ITEMS"),  # crashed it too
    ({"type": "object", "maxProperties": 5000}, "MAX_ITEMS"),
    ({"type": "string", "pattern": "^a{0,20000}$"}, "MAX_PATTERN_REPEAT"),  # and this
    ({"type": "string", "pattern": "^" + "a" * 600 + "$"}, "MAX_PATTERN_CHARS"),
    ({"type": "object", "patternProperties": {"^x{5000}$": {"type": "string"}}}, "MAX_PATTERN_REPEAT"),
    ({"type": "string", "enum": [f"v{i}" for i in range(100_000)]}, "MAX_ENUM_VALUES"),  # 39 s in llama.cpp
    ({"anyOf": [{"const": i} for i in range(1001)]}, "MAX_ENUM_VALUES"),
    (nested_objects(100), "MAX_SCHEMA_DEPTH"),  # 200 levels of JSON: a RecursionError before
    ({"type": "string", "description": "x" * 70_000}, "MAX_SCHEMA_CHARS"),
    ({"$defs": {"a": {"$ref": "file:///etc/passwd"}}, "$ref": "#/$defs/a"}, "points outside the schema"),
]


@pytest.mark.parametrize(("schema", "limit"), OVER_LIMITS, ids=[limit for _, limit in OVER_LIMITS])
def test_schema_over_a_limit_is_refused_before_any_work_naming_the_limit(schema: Any, limit: str) -> None:
    start = time.perf_counter()
    with pytest.raises(InvalidArgument) as exc:
        check_schema_limits(schema)
    assert limit in exc.value.message and exc.value.param == "response_format"
    # Generous for a loaded machine: the point is that no compile ran (the 100,000-value enum took 39 s in llama.cpp).
    assert time.perf_counter() - start < 5, "the limits are checked in linear time, before any work"
    with pytest.raises(InvalidArgument, match=limit):
        compile_format(schema_format(schema))


def test_schema_at_the_limits_compiles_and_llama_cpp_accepts_it() -> None:
    at_limits = {
        "type": "object",
        "properties": {
            "line": {"type": "string", "maxLength": MAX_STRING_LENGTH},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": MAX_ITEMS},
            "code": {"type": "string", "pattern": f"^[A-Z]{{{MAX_PATTERN_REPEAT}}}$"},
            "deep": nested_objects(MAX_SCHEMA_DEPTH // 2 - 3),
        },
    }
    c = compile_format(schema_format(at_limits))
    assert c.grammar is not None and c.slow_validation


def test_data_inside_enum_and_const_is_not_read_as_schema_keywords() -> None:
    check_schema_limits({"enum": [{"maxLength": 10**9, "pattern": "x" * 10_000}], "const": {"$ref": "https://x"}})


def test_a_crash_in_llama_cpp_grammar_parser_is_contained_in_the_worker() -> None:
    # Bypass the limits to reach the parse that overflowed the server's stack: only the worker dies.
    canonical = json.dumps({"type": "string", "maxLength": 20000})
    with pytest.raises(ResourceExhausted) as exc:
        bounded.run(_compile_in_worker, canonical, "response_format", "schema", time_limit_s=30, what="compiling it")
    assert exc.value.code == "worker_crashed" and "crashed its worker process" in exc.value.message
    assert compile_format(schema_format(NPC_SCHEMA)).grammar  # the pool replaced the worker


def test_a_grammar_llama_cpp_refuses_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match=r"failed to compile in llama\.cpp"):
        bounded.run(
            _compile_in_worker,
            json.dumps({"type": "string", "maxLength": 1500}),
            "response_format",
            "schema",
            time_limit_s=30,
            what="compiling it",
        )


#: The issue's regular expression: exponential backtracking on "aaaa…a!" (hours at 40 characters).
EVIL = {"type": "string", "enum": ["a" * 39 + "!"], "pattern": "^(a+)+$"}


def test_backtracking_pattern_is_stopped_and_reported_invalid_never_valid() -> None:
    c = compile_format(schema_format(EVIL))
    assert c.slow_validation
    start = time.perf_counter()
    result = check_output(json.dumps("a" * 39 + "!"), c, "stop")
    took = time.perf_counter() - start
    assert result is not None and not result.valid
    assert "could not be validated" in result.error and "SCHEMA_VALIDATE_TIMEOUT_S" in result.error
    assert took < SCHEMA_VALIDATE_TIMEOUT_S + 1.5, took
    # A pattern that matches quickly still validates normally in the worker.
    ok = check_output(json.dumps("a" * 40), compile_format(schema_format({**EVIL, "enum": ["a" * 40]})), "stop")
    assert ok is not None and ok.valid


async def test_async_validation_leaves_the_event_loop_free() -> None:
    c = await compile_format_async(schema_format(EVIL))
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    result = await check_output_async(json.dumps("a" * 39 + "!"), c, "stop")
    done.set()
    await tick
    assert result is not None and not result.valid and "could not be validated" in result.error
    assert max(gaps) < 1.0, f"the event loop stalled for {max(gaps):.2f} s"


async def test_stored_persona_schema_over_a_limit_is_refused_naming_the_persona() -> None:
    with pytest.raises(FailedPrecondition) as exc:
        await compile_persona_schema("old_bard", {"type": "string", "maxLength": 20000})
    assert "'old_bard'" in exc.value.message and "MAX_STRING_LENGTH" in exc.value.message
    assert "UpdatePersona" in exc.value.message
