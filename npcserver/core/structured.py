"""Structured output: response format -> GBNF grammar (enforced while sampling) -> validation of the reply.

The grammar makes the model *produce* JSON of the right shape; the JSON Schema validator then *decides* whether the
reply is valid, because a grammar cannot express everything a schema can (``minimum``, ``uniqueItems``, ...) and a
reply cut off by max_tokens is never complete JSON. Invalid output is reported as such, never passed off as valid.

A schema is a small program sent by a client (or stored in a persona), so its work is bounded: its size, depth,
enum count, length bounds and patterns are checked against ``npcserver.core.limits`` before anything else, and the
conversion to a grammar, the llama.cpp parse of that grammar, and the validation of replies against ``pattern``s
run in a bounded worker process (``npcserver.core.bounded``) with a deadline, never on the event loop or the
server's main thread. Use the ``*_async`` functions from async code; the plain ones block (call them from a thread).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema

from npcserver.core import bounded
from npcserver.core.limits import (
    MAX_ENUM_VALUES,
    MAX_GRAMMAR_CHARS,
    MAX_ITEMS,
    MAX_PATTERN_CHARS,
    MAX_PATTERN_REPEAT,
    MAX_SCHEMA_CHARS,
    MAX_SCHEMA_DEPTH,
    MAX_STRING_LENGTH,
    SCHEMA_COMPILE_TIMEOUT_S,
    SCHEMA_VALIDATE_TIMEOUT_S,
)
from npcserver.core.types import ResponseFormat, ResponseKind, StructuredResult
from npcserver.errors import FailedPrecondition, InvalidArgument, NpcError, ResourceExhausted

log = logging.getLogger(__name__)

_PARAM = "response_format"
_SUBJECT = "response_format schema"
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
    #: The schema has regular expressions, so validating a reply can backtrack: it runs in a bounded worker.
    slow_validation: bool = False

    @property
    def structured(self) -> bool:
        """True for json_object and json_schema."""
        return self.kind != "text"


TEXT = CompiledFormat(kind="text", grammar=None, schema=None, name="")
#: Any JSON object, for ``json_object``.
_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


# --- compiling ---------------------------------------------------------------------------------------------------


def compile_format(fmt: ResponseFormat | None, *, param: str = _PARAM, subject: str = _SUBJECT) -> CompiledFormat:
    """Turns a response format into a grammar and a schema. Blocks on a bounded worker: call it from a thread.

    Raises ``InvalidArgument`` (naming ``param``) when the schema is over a limit, is not a valid Draft 2020-12
    schema, or uses something the grammar converter cannot express; the message gives the reason. Raises
    ``ResourceExhausted`` when compiling it runs out of time or memory.
    """
    ready = _prepare(fmt, param=param, subject=subject)
    if isinstance(ready, CompiledFormat):
        return ready
    canonical, name = ready
    grammar = _cached_grammar(canonical)
    if grammar is None:
        grammar = bounded.run(
            _compile_in_worker,
            canonical,
            param,
            subject,
            time_limit_s=SCHEMA_COMPILE_TIMEOUT_S,
            limit_name="SCHEMA_COMPILE_TIMEOUT_S",
            what=_compiling(subject),
            param=param,
        )
        _remember_grammar(canonical, grammar)
    return _compiled(canonical, grammar, name)


async def compile_format_async(
    fmt: ResponseFormat | None, *, param: str = _PARAM, subject: str = _SUBJECT
) -> CompiledFormat:
    """``compile_format`` for async code: the event loop only waits for the worker."""
    ready = _prepare(fmt, param=param, subject=subject)
    if isinstance(ready, CompiledFormat):
        return ready
    canonical, name = ready
    grammar = _cached_grammar(canonical)
    if grammar is None:
        grammar = await bounded.arun(
            _compile_in_worker,
            canonical,
            param,
            subject,
            time_limit_s=SCHEMA_COMPILE_TIMEOUT_S,
            limit_name="SCHEMA_COMPILE_TIMEOUT_S",
            what=_compiling(subject),
            param=param,
        )
        _remember_grammar(canonical, grammar)
    return _compiled(canonical, grammar, name)


async def compile_persona_schema(persona_id: str, schema: dict[str, Any]) -> CompiledFormat:
    """Compiles a stored persona's response schema at Talk time.

    A persona stored before the limits existed (or written to the store directly) may fail them: it is refused
    with ``FailedPrecondition`` naming the persona and the limit, and logged, never executed.
    """
    try:
        return await compile_format_async(
            ResponseFormat(type="json_schema", schema=schema, name=persona_id),
            param="response_schema",
            subject="the schema",
        )
    except (InvalidArgument, ResourceExhausted) as exc:
        log.error("refusing Talk with persona %r: its stored response_schema is refused: %s", persona_id, exc.message)
        raise FailedPrecondition(
            f"persona {persona_id!r} has a stored response_schema that this server refuses, so it cannot talk until "
            f"the schema is fixed (UpdatePersona): {exc.message}",
            param="persona_id",
            code=exc.code,
        ) from None


def check_schema(schema: Any, *, param: str = "response_schema", subject: str = "persona response_schema") -> None:
    """Raises ``InvalidArgument`` unless ``schema`` is within the limits, a valid JSON Schema, and compiles to a
    grammar llama.cpp accepts. Blocks on a bounded worker: call it from a thread."""
    compile_format(ResponseFormat(type="json_schema", schema=schema), param=param, subject=subject)


def _compiling(subject: str) -> str:
    return f"compiling the {subject} to a grammar"


def _prepare(fmt: ResponseFormat | None, *, param: str, subject: str) -> CompiledFormat | tuple[str, str]:
    """The cheap part, in the caller: a finished CompiledFormat, or the canonical schema JSON (within the limits)
    and the format's name, for the worker to compile."""
    if fmt is None or fmt.type == "text":
        return TEXT
    if fmt.type == "json_object":
        return CompiledFormat(kind="json_object", grammar=_object_grammar(), schema=None, name=fmt.name)
    if fmt.type == "json_schema":
        if fmt.schema is None:
            raise InvalidArgument(f"{subject}: json_schema needs a schema", param=param)
        if not isinstance(fmt.schema, dict):
            raise InvalidArgument(f"{subject} must be a JSON object, got {type(fmt.schema).__name__}", param=param)
        canonical = check_schema_limits(fmt.schema, param=param, subject=subject)
        return canonical, fmt.name or "schema"
    raise InvalidArgument(
        f"unknown response_format type {fmt.type!r}; use text, json_object or json_schema", param=param
    )


def _compiled(canonical: str, grammar: str, name: str) -> CompiledFormat:
    schema = json.loads(canonical)
    return CompiledFormat(
        kind="json_schema", grammar=grammar, schema=schema, name=name, slow_validation=_has_patterns(schema)
    )


# --- limits ------------------------------------------------------------------------------------------------------

#: Keywords whose values are data (instances), not schemas: their contents are counted for depth, not checked.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
_LENGTH_KEYWORDS = ("minLength", "maxLength")
_COUNT_KEYWORDS = ("minItems", "maxItems", "minProperties", "maxProperties", "minContains", "maxContains")
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def check_schema_limits(schema: Any, *, param: str = _PARAM, subject: str = _SUBJECT) -> str:
    """Raises ``InvalidArgument`` naming the first limit of ``npcserver.core.limits`` the schema is over; returns
    the schema as compact JSON.

    Iterative and linear in the schema's size, so a schema nested far too deep is refused without recursion.
    """
    enum_values = 0
    stack: list[tuple[Any, int, str, bool]] = [(schema, 1, "", False)]
    while stack:
        node, depth, path, data = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidArgument(
                f"{subject} nests deeper than {MAX_SCHEMA_DEPTH} levels of objects and arrays (MAX_SCHEMA_DEPTH) at "
                f"{path or '/'!r}",
                param=param,
            )
        if isinstance(node, list):
            stack.extend((v, depth + 1, f"{path}/{i}", data) for i, v in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        if not data:
            enum_values += _check_keywords(node, path, param=param, subject=subject)
            if enum_values > MAX_ENUM_VALUES:
                raise InvalidArgument(
                    f"{subject} has more than {MAX_ENUM_VALUES} enum and const values in all (MAX_ENUM_VALUES)",
                    param=param,
                )
        for key, value in node.items():
            if isinstance(value, dict | list):
                stack.append((value, depth + 1, f"{path}/{key}", data or key in _DATA_KEYWORDS))
    # Key order is kept (no sort_keys): it decides the order in which the grammar makes the model write
    # properties, so two schemas differing only in order compile to different grammars.
    canonical = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    if len(canonical) > MAX_SCHEMA_CHARS:
        raise InvalidArgument(
            f"{subject} is {len(canonical)} characters as compact JSON; the limit is {MAX_SCHEMA_CHARS} "
            "(MAX_SCHEMA_CHARS)",
            param=param,
        )
    return canonical


def _check_keywords(node: dict[str, Any], path: str, *, param: str, subject: str) -> int:
    """Checks one schema object's own keywords; returns how many enum/const values it has."""
    for key in _LENGTH_KEYWORDS:
        _check_bound(node, key, MAX_STRING_LENGTH, "MAX_STRING_LENGTH", path, param=param, subject=subject)
    for key in _COUNT_KEYWORDS:
        _check_bound(node, key, MAX_ITEMS, "MAX_ITEMS", path, param=param, subject=subject)
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        _check_pattern(pattern, f"{path}/pattern", param=param, subject=subject)
    props = node.get("patternProperties")
    if isinstance(props, dict):
        for key in props:
            _check_pattern(key, f"{path}/patternProperties", param=param, subject=subject)
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        # The converter would fetch a remote reference over the network: from a server, never.
        raise InvalidArgument(
            f"{subject}: $ref {ref!r} at {path or '/'!r} points outside the schema; only local references "
            "('#/$defs/...') are allowed",
            param=param,
        )
    count = 0
    enum = node.get("enum")
    if isinstance(enum, list):
        count += len(enum)
    if "const" in node:
        count += 1
    return count


def _check_bound(node: dict[str, Any], key: str, limit: int, name: str, path: str, *, param: str, subject: str) -> None:
    value = node.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
        raise InvalidArgument(
            f"{subject}: {key} {value:g} at {path or '/'!r} is over the limit of {limit} ({name})", param=param
        )


def _check_pattern(pattern: str, where: str, *, param: str, subject: str) -> None:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidArgument(
            f"{subject}: the pattern at {where!r} is {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS} "
            "(MAX_PATTERN_CHARS)",
            param=param,
        )
    for m in _QUANTIFIER.finditer(pattern):
        biggest = max(int(n) for n in m.groups() if n)
        if biggest > MAX_PATTERN_REPEAT:
            raise InvalidArgument(
                f"{subject}: the pattern at {where!r} repeats {m.group(0)!r}, over the limit of {MAX_PATTERN_REPEAT} "
                "(MAX_PATTERN_REPEAT)",
                param=param,
            )


def _has_patterns(schema: Any) -> bool:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str) or isinstance(node.get("patternProperties"), dict):
                return True
            stack.extend(v for k, v in node.items() if k not in _DATA_KEYWORDS)
        elif isinstance(node, list):
            stack.extend(node)
    return False


# --- grammar cache (in the server process) -----------------------------------------------------------------------

_grammars: OrderedDict[str, str] = OrderedDict()
_grammars_lock = threading.Lock()


def _cached_grammar(canonical: str) -> str | None:
    with _grammars_lock:
        grammar = _grammars.get(canonical)
        if grammar is not None:
            _grammars.move_to_end(canonical)
        return grammar


def _remember_grammar(canonical: str, grammar: str) -> None:
    with _grammars_lock:
        _grammars[canonical] = grammar
        while len(_grammars) > _CACHE_SIZE:
            _grammars.popitem(last=False)


# --- in the worker -----------------------------------------------------------------------------------------------


def _compile_in_worker(canonical: str, param: str, subject: str) -> str:
    """Checks the schema, converts it to GBNF, and has llama.cpp parse the grammar (all of which may be slow or,
    for llama.cpp's recursive parser, crash: so it runs here)."""
    schema = json.loads(canonical)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" at {where!r}" if where else ""
        raise InvalidArgument(f"{subject} is not a valid JSON Schema{at}: {exc.message}", param=param) from None
    try:
        grammar = _strict_strings(_to_gbnf(canonical))
    except RecursionError:
        raise InvalidArgument(f"{subject} nests too deeply to compile to a grammar", param=param) from None
    except MemoryError:
        raise  # the pool reports the memory limit
    except Exception as exc:  # the converter signals what it cannot express with assert/ValueError/KeyError
        reason = str(exc).replace("stdin#", "#") or type(exc).__name__
        raise InvalidArgument(f"{subject} cannot be compiled to a grammar: {reason}", param=param) from None
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise InvalidArgument(
            f"{subject} compiles to a grammar of {len(grammar)} characters; the limit is {MAX_GRAMMAR_CHARS} "
            "(MAX_GRAMMAR_CHARS): use fewer or shorter enums, patterns and length bounds",
            param=param,
        )
    _llama_parse(grammar, param=param, subject=subject)
    return grammar


def _llama_parse(grammar: str, *, param: str, subject: str) -> None:
    """Has llama.cpp parse the grammar as the engine will. Parsing reads no vocabulary, so none is given."""
    import llama_cpp

    # allow_leading_space adds one rule in front; parse the grammar as the engine may receive it.
    sampler = llama_cpp.llama_sampler_init_grammar(None, allow_leading_space(grammar).encode("utf-8"), b"root")
    if not sampler:
        raise InvalidArgument(
            f"{subject}: its grammar failed to compile in llama.cpp (the server log has the parse error); simplify "
            "the schema",
            param=param,
        )
    llama_cpp.llama_sampler_free(sampler)


def _to_gbnf(schema_json: str) -> str:
    # Imported here, not at the top: importing llama_cpp loads llama.cpp, which should happen after
    # npcserver.engine has set up the process environment for it (OMP_WAIT_POLICY).
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(schema_json))


@lru_cache(maxsize=1)
def _object_grammar() -> str:
    # A fixed schema: converting it is quick and cannot fail, so it runs in the caller.
    return _strict_strings(_to_gbnf(json.dumps(_OBJECT_SCHEMA)))


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


# --- judging replies ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NeedsSchema:
    """A parsed reply that still has to be checked against the schema."""

    value: Any


def check_output(text: str, compiled: CompiledFormat, finish_reason: str) -> StructuredResult | None:
    """Judges a finished reply against its format. None for free text. May block on a bounded worker (a schema
    with patterns): call it from a thread, or use ``check_output_async``.

    Valid only if generation stopped on its own (not cut off), the text parses as JSON and it matches the schema
    (for json_object: is an object). A validation that runs out of time is invalid, never valid.
    """
    judged = _judge(text, compiled, finish_reason)
    if not isinstance(judged, _NeedsSchema):
        return judged
    assert compiled.schema is not None
    canonical = _canonical(compiled.schema)
    if not compiled.slow_validation:
        return _verdict(compiled, judged.value, _first_error(canonical, judged.value))
    try:
        error = bounded.run(
            _first_error,
            canonical,
            judged.value,
            time_limit_s=SCHEMA_VALIDATE_TIMEOUT_S,
            what=_VALIDATING,
            limit_name="SCHEMA_VALIDATE_TIMEOUT_S",
        )
    except NpcError as exc:
        error = _unvalidated(exc)
    return _verdict(compiled, judged.value, error)


async def check_output_async(text: str, compiled: CompiledFormat, finish_reason: str) -> StructuredResult | None:
    """``check_output`` for async code: a validation that can backtrack runs in a bounded worker."""
    judged = _judge(text, compiled, finish_reason)
    if not isinstance(judged, _NeedsSchema):
        return judged
    assert compiled.schema is not None
    canonical = _canonical(compiled.schema)
    if not compiled.slow_validation:
        # No regular expressions: linear in the reply (which max_tokens bounds) and the schema (which the limits
        # bound), so it runs in place.
        return _verdict(compiled, judged.value, _first_error(canonical, judged.value))
    try:
        error = await bounded.arun(
            _first_error,
            canonical,
            judged.value,
            time_limit_s=SCHEMA_VALIDATE_TIMEOUT_S,
            what=_VALIDATING,
            limit_name="SCHEMA_VALIDATE_TIMEOUT_S",
        )
    except NpcError as exc:
        error = _unvalidated(exc)
    return _verdict(compiled, judged.value, error)


_VALIDATING = "validating the reply against the schema's patterns"


def _unvalidated(exc: NpcError) -> str:
    log.warning("reply validation stopped: %s", exc.message)
    return f"the reply could not be validated, so it is not reported valid: {exc.message}"


def _judge(text: str, compiled: CompiledFormat, finish_reason: str) -> StructuredResult | _NeedsSchema | None:
    """Everything but the schema check: the finish reason, JSON parsing, json_object's object check."""
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
    return _NeedsSchema(value)


def _verdict(compiled: CompiledFormat, value: Any, error: str) -> StructuredResult:
    if error:
        return StructuredResult(valid=False, error=error, schema_name=compiled.name, value=value)
    return StructuredResult(valid=True, schema_name=compiled.name, value=value)


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def _first_error(canonical: str, value: Any) -> str:
    """The best validation error, or "". Runs in the caller, or in a worker for a schema with patterns."""
    err = jsonschema.exceptions.best_match(_validator(canonical).iter_errors(value))
    if err is None:
        return ""
    where = "/".join(str(p) for p in err.absolute_path)
    return f"the reply does not match the schema{f' at {where!r}' if where else ''}: {err.message}"


@lru_cache(maxsize=_CACHE_SIZE)
def _validator(canonical: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(canonical))
