"""Every limit on the work one request may cause, in one place.

A game server faces players' input, and a persona is data a designer (or a client) stores. Schemas, grammars,
regular expressions and chat templates are small programs: each is checked against these limits before any work
starts, and the work that can still take long runs in a bounded worker process (``npcserver.core.bounded``) with a
deadline and a memory limit. An error names the limit it hit by the constant's name here.

Over a size limit is ``INVALID_ARGUMENT`` (HTTP 400); running out of time or memory is ``RESOURCE_EXHAUSTED``
(HTTP 413).
"""

from __future__ import annotations

# --- response schemas (response_format json_schema, a persona's response_schema) -------------------------------------

#: Length of the schema as compact JSON, in characters.
MAX_SCHEMA_CHARS = 65_536
#: Nesting of objects and arrays in the schema's JSON (a nested property costs two levels: the schema and its
#: "properties"). Deeper schemas overflow the grammar converter's recursion.
MAX_SCHEMA_DEPTH = 40
#: Values in all ``enum`` lists (plus each ``const``) of one schema. Each is an alternative in the grammar.
MAX_ENUM_VALUES = 1_000
#: ``minLength`` / ``maxLength``. The grammar spells a bounded string as one nested rule per character, and
#: llama.cpp's grammar parser recurses once per nesting: 20,000 overflowed its stack and killed the process.
MAX_STRING_LENGTH = 1_000
#: ``minItems`` / ``maxItems``, ``minProperties`` / ``maxProperties``, ``minContains`` / ``maxContains``: nested the
#: same way as string lengths.
MAX_ITEMS = 256
#: Length of one ``pattern`` (or ``patternProperties`` key), in characters.
MAX_PATTERN_CHARS = 512
#: ``{n}`` / ``{n,m}`` counts inside a pattern (compiled to nested grammar rules, like string lengths).
MAX_PATTERN_REPEAT = 256
#: Length of the GBNF grammar a schema compiles to, in characters. llama.cpp parses the grammar again when the
#: request is queued; this keeps that parse short.
MAX_GRAMMAR_CHARS = 262_144
#: Time to check a schema, compile it to a grammar, and have llama.cpp parse the grammar, in seconds.
SCHEMA_COMPILE_TIMEOUT_S = 5.0
#: Time to validate one reply against a schema with regular expressions (``pattern``), in seconds. A validation
#: that runs out of time reports ``structured.valid = false``, never true.
SCHEMA_VALIDATE_TIMEOUT_S = 1.0

# --- chat templates (a request's chat_template override, and the GGUF's own template) --------------------------------

#: Length of a chat template, in characters. The largest GGUF templates in common use are around 20,000.
MAX_TEMPLATE_CHARS = 100_000
#: Length of one rendered prompt, in characters (far more than any context window holds).
MAX_RENDERED_CHARS = 4_000_000
#: Time to render one prompt with a chat template, in seconds.
TEMPLATE_RENDER_TIMEOUT_S = 2.0

# --- the bounded workers -----------------------------------------------------------------------------------------

#: Worker processes kept warm. One runaway task holds one worker until its deadline; the others keep serving.
WORKERS = 2
#: Address space a worker may add to what it uses once started (RLIMIT_AS), in MiB.
WORKER_MEMORY_MB = 128
#: Longest wait for a free worker, in seconds, on top of the task's own time limit; past it the request gets
#: RESOURCE_EXHAUSTED (retry later) instead of waiting behind a flood of runaway tasks.
WORKER_QUEUE_TIMEOUT_S = 10.0

# --- requests, personas and imports ----------------------------------------------------------------------------

#: A REST request body, in bytes (the gRPC door's message limit, 16 MiB, applies to gRPC and gRPC-Web). Over it is
#: HTTP 413 before the body is read whole.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Nesting of a JSON request body (objects and arrays). Deeper bodies are refused before they are parsed.
MAX_JSON_DEPTH = 64
#: Turns in one imported conversation, and the characters of all its lines and names together.
MAX_IMPORT_TURNS = 10_000
MAX_IMPORT_CHARS = 8_000_000
#: A persona's ``max_tokens`` (0 means until a stop); larger than any context window.
MAX_PERSONA_MAX_TOKENS = 131_072
#: One persona text field other than the system prompt (description, a stop sequence, a preset name), characters.
MAX_PERSONA_FIELD_CHARS = 8_000
#: Stop sequences of a persona.
MAX_PERSONA_STOPS = 16
#: A whole persona (every field the API returns together, the response schema as JSON), in characters.
MAX_PERSONA_CHARS = 200_000
#: The personas of one ListPersonas page together, in characters: a page ends early (its next_page_token goes on)
#: rather than outgrow the 16 MiB message limit.
MAX_PAGE_CHARS = 4_000_000
#: ``seed``: a signed 64-bit integer, as the API's int64 field holds it.
MIN_SEED, MAX_SEED = -(2**63), 2**63 - 1
#: The largest ``create_time_ms`` an imported turn may carry (the store's 64-bit integer).
MAX_TIME_MS = 2**63 - 1

# --- health ------------------------------------------------------------------------------------------------------

#: The event loop is stuck when a 0.25 s timer fires this late, in seconds; health says NOT_SERVING until it has run
#: on time for LOOP_RECOVERY_S.
LOOP_LAG_LIMIT_S = 1.0
LOOP_RECOVERY_S = 5.0
#: The engine is stuck when it holds requests and its scheduler has not finished a step for this long, in seconds.
ENGINE_STALL_S = 30.0
