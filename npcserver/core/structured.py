"""Structured output: response format -> GBNF grammar (enforced while sampling) -> validation of the reply.

The grammar makes the model *produce* JSON of the right shape; the JSON Schema validator then *decides* whether the
reply is valid, because a grammar cannot express everything a schema can (``minimum``, ``uniqueItems``, ...) and a
reply cut off by max_tokens is never complete JSON. Invalid output is reported as such, never passed off as valid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema

from npcserver.core.types import ResponseFormat, ResponseKind, StructuredResult
from npcserver.errors import InvalidArgument

_PARAM = "response_format"
_CACHE_SIZE = 256

# llama-cpp-python's converter lets a JSON string contain raw control characters (a newline, say), which no JSON
# parser accepts. llama.cpp's own converter excludes them; do the same.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


@dataclass(frozen=True)
class CompiledFormat:
    """A response format ready for the engine: the GBNF grammar to sample with, and the schema to validate with."""

    kind: ResponseKind
    grammar: str | None
    schema: dict[str, Any] | None
    name: str

    @property
    def structured(self) -> bool:
        """True for json_object and json_schema."""
        return self.kind != "text"


TEXT = CompiledFormat(kind="text", grammar=None, schema=None, name="")
#: Any JSON object, for ``json_object``.
_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


def compile_format(fmt: ResponseFormat | None) -> CompiledFormat:
    """Turns a response format into a grammar and a schema.

    Raises ``InvalidArgument`` (param ``response_format``) when the schema is not a valid Draft 2020-12 schema or
    uses something the grammar converter cannot express; the message gives the reason.
    """
    if fmt is None or fmt.type == "text":
        return TEXT
    if fmt.type == "json_object":
        return CompiledFormat(kind="json_object", grammar=_object_grammar(), schema=None, name=fmt.name)
    if fmt.type == "json_schema":
        if fmt.schema is None:
            raise InvalidArgument("response_format json_schema needs a schema", param=_PARAM)
        if not isinstance(fmt.schema, dict):
            raise InvalidArgument(
                f"response_format schema must be a JSON object, got {type(fmt.schema).__name__}", param=_PARAM
            )
        # Key order is kept (no sort_keys): it decides the order in which the grammar makes the model write
        # properties, so two schemas differing only in order compile to different grammars.
        canonical = json.dumps(fmt.schema, separators=(",", ":"), ensure_ascii=False)
        grammar = _schema_grammar(canonical)
        return CompiledFormat(kind="json_schema", grammar=grammar, schema=fmt.schema, name=fmt.name or "schema")
    raise InvalidArgument(
        f"unknown response_format type {fmt.type!r}; use text, json_object or json_schema", param=_PARAM
    )


def check_schema(schema: Any) -> None:
    """Raises ``InvalidArgument`` unless ``schema`` is a valid JSON Schema that the grammar converter accepts.

    Use it to validate a persona's response schema when the persona is saved.
    """
    compile_format(ResponseFormat(type="json_schema", schema=schema))


def _to_gbnf(schema_json: str) -> str:
    # Imported here, not at the top: importing llama_cpp loads llama.cpp, which should happen after
    # npcserver.engine has set up the process environment for it (OMP_WAIT_POLICY).
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(schema_json))


@lru_cache(maxsize=1)
def _object_grammar() -> str:
    return _strict_strings(_to_gbnf(json.dumps(_OBJECT_SCHEMA)))


@lru_cache(maxsize=_CACHE_SIZE)
def _schema_grammar(canonical: str) -> str:
    schema = json.loads(canonical)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" at {where!r}" if where else ""
        raise InvalidArgument(
            f"response_format schema is not a valid JSON Schema{at}: {exc.message}", param=_PARAM
        ) from None
    try:
        grammar = _to_gbnf(canonical)
    except RecursionError:
        raise InvalidArgument("response_format schema nests too deeply to compile to a grammar", param=_PARAM) from None
    except Exception as exc:  # the converter signals what it cannot express with assert/ValueError/KeyError
        reason = str(exc).replace("stdin#", "#") or type(exc).__name__
        raise InvalidArgument(
            f"response_format schema cannot be compiled to a grammar: {reason}", param=_PARAM
        ) from exc
    return _strict_strings(grammar)


def _strict_strings(grammar: str) -> str:
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


_ROOT_REF = re.compile(r"(?<![\w-])root(?![\w-])")


def allow_leading_space(grammar: str) -> str:
    """Lets the output start with one optional space before the JSON.

    A transcript prompt ends with ``Name:``, after which the model wants to write a space first; forcing ``{``
    straight away pushes it off its likely path. The JSON is unchanged (the space is dropped when parsing).
    """
    out: list[str] = []
    i = 0
    n = len(grammar)
    while i < n:
        c = grammar[i]
        if c in '"[':
            # Skip string literals and character classes so a literal "root" is not renamed.
            close = '"' if c == '"' else "]"
            j = i + 1
            while j < n and grammar[j] != close:
                j += 2 if grammar[j] == "\\" else 1
            out.append(grammar[i : j + 1])
            i = j + 1
            continue
        j = i
        while j < n and grammar[j] not in '"[':
            j += 1
        out.append(_ROOT_REF.sub("json-root", grammar[i:j]))
        i = j
    return 'root ::= " "? json-root\n' + "".join(out)


def check_output(text: str, compiled: CompiledFormat, finish_reason: str) -> StructuredResult | None:
    """Judges a finished reply against its format. None for free text.

    Valid only if generation stopped on its own (not cut off), the text parses as JSON and it matches the schema
    (for json_object: is an object).
    """
    if not compiled.structured:
        return None
    name = compiled.name
    value: Any = None
    parsed = False
    try:
        value = json.loads(text)
        parsed = True
    except ValueError as exc:
        parse_error = f"the reply is not valid JSON: {exc}"
    if finish_reason == "length":
        return StructuredResult(
            valid=False,
            error="the reply was cut off by max_tokens (or the end of the context) before the JSON was complete",
            schema_name=name,
            value=value if parsed else None,
        )
    if finish_reason != "stop":
        return StructuredResult(valid=False, error=f"generation ended with {finish_reason!r}", schema_name=name)
    if not parsed:
        return StructuredResult(valid=False, error=parse_error, schema_name=name)
    if compiled.schema is None:
        if not isinstance(value, dict):
            return StructuredResult(
                valid=False,
                error=f"the reply is JSON but not an object ({type(value).__name__})",
                schema_name=name,
                value=value,
            )
        return StructuredResult(valid=True, schema_name=name, value=value)
    error = _first_error(compiled.schema, value)
    if error:
        return StructuredResult(valid=False, error=error, schema_name=name, value=value)
    return StructuredResult(valid=True, schema_name=name, value=value)


def _first_error(schema: dict[str, Any], value: Any) -> str:
    validator = _validator(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
    err = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if err is None:
        return ""
    where = "/".join(str(p) for p in err.absolute_path)
    return f"the reply does not match the schema{f' at {where!r}' if where else ''}: {err.message}"


@lru_cache(maxsize=_CACHE_SIZE)
def _validator(canonical: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(canonical))
