"""NPC actions (tool calling): checking declared actions, the grammar a reply is sampled with, and reading the call.

The reply format is the same on every model: the NPC's line, then optionally one call,
``<action>{"name": "give_item", "arguments": {...}}</action>``. The grammar allows only the declared names, each with
arguments from its own schema (compiled by ``core.structured`` in the bounded worker), and the choice changes it:
``none`` samples free text, ``auto`` a line and/or a call, ``required`` must call, ``named`` must call that action.
The arguments are validated against the schema again after sampling; a call that is cut off or does not validate is
never reported as a call (the final's ``structured`` says why, and the turn is not stored).

On a model whose chat template has a tool format (``has_tool_format``: the template reads ``tools`` and writes
``<tool_call>``, as Qwen 2.5 and Hermes do), the template renders the tools and the call is written its way,
``<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>``. ``auto`` then uses a lazy grammar: the line is
free, and the grammar starts at ``<tool_call>`` (llama.cpp's lazy grammars); ``required`` and ``named`` constrain
the whole reply to the call. ``none`` and models without a tool format (the transcript path) keep ``<action>``.

Stored turns keep calls and results inside their lines (the store's turn has two text fields): the NPC line carries
``SEP`` and a JSON list of calls, and a results turn's player line is ``SEP`` and a JSON list of results. ``SEP`` is a
control character that requests may not contain, so a player cannot forge one.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any

from npcserver.core.structured import CompiledFormat, check_output_async, compile_format_async
from npcserver.core.types import (
    Action,
    ActionCall,
    ActionChoice,
    ActionResult,
    ChatRequest,
    Completion,
    Message,
    Persona,
    ResponseFormat,
    StructuredResult,
    TalkRequest,
    Turn,
)
from npcserver.errors import InvalidArgument

#: Marks the calls/results part of a stored line (ASCII record separator).
SEP = "\x1e"
OPEN = "<action>"
CLOSE = "</action>"
MAX_ACTIONS = 64
MAX_NAME = 64
MAX_DESCRIPTION = 1000
MAX_RESULTS = 16
MAX_RESULT_CHARS = 8000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"
_READS_TOOLS = re.compile(r"\btools\b")


def has_tool_format(template: str | None) -> bool:
    """Whether a chat template renders ``tools`` and writes calls as ``<tool_call>`` JSON (Qwen 2.5, Hermes)."""
    return bool(template) and TOOL_OPEN in str(template) and _READS_TOOLS.search(str(template)) is not None


def template_tools(actions: tuple[Action, ...]) -> tuple[dict[str, Any], ...]:
    """The actions as OpenAI-style tools, the shape chat templates read."""
    return tuple(
        {
            "type": "function",
            "function": {"name": a.name, "description": a.description or a.name, "parameters": schema_of(a)},
        }
        for a in actions
    )


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def check_actions(actions: tuple[Action, ...], *, param: str = "actions", also: tuple[Action, ...] = ()) -> None:
    """Names are identifiers, unique (within ``actions`` and against ``also``, the persona's); descriptions fit."""
    if len(actions) + len(also) > MAX_ACTIONS:
        raise InvalidArgument(
            f"{param}: {len(actions) + len(also)} actions are declared; at most {MAX_ACTIONS} are allowed", param=param
        )
    seen = {a.name for a in also}
    for i, a in enumerate(actions):
        where = f"{param}[{i}].name"
        if not a.name:
            raise InvalidArgument(f"{where} must not be empty: name the action (for example give_item)", param=param)
        if len(a.name) > MAX_NAME or not _NAME.fullmatch(a.name):
            raise InvalidArgument(
                f"{where} {a.name[:80]!r} is not an identifier: use a letter or '_' then letters, digits or '_' "
                f"(at most {MAX_NAME} characters)",
                param=param,
            )
        if a.name in seen:
            raise InvalidArgument(
                f"{where}: the action name {a.name!r} is declared twice (the persona's and this request's actions "
                "share one namespace); rename one",
                param=param,
            )
        seen.add(a.name)
        if len(a.description) > MAX_DESCRIPTION:
            raise InvalidArgument(
                f"{param}[{i}].description is {len(a.description)} characters; at most {MAX_DESCRIPTION}", param=param
            )
        if a.parameters is not None and (
            not isinstance(a.parameters, dict) or a.parameters.get("type", "object") != "object"
        ):
            raise InvalidArgument(
                f'{param}[{i}].parameters_schema must be the JSON Schema of an object ("type": "object" or no '
                "type): the arguments are a JSON object",
                param=param,
            )


def parse_schema_text(text: str, *, where: str, param: str = "actions") -> dict[str, Any] | None:
    """An action's parameters_schema from JSON text ("" means no arguments)."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"{where} is not valid JSON: {exc}", param=param) from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be a JSON object (a JSON Schema)", param=param)
    return value


def schema_of(action: Action) -> dict[str, Any]:
    """The arguments' schema: always an object (``{}`` or a schema without a type means an object of any fields)."""
    if action.parameters is None:
        return _EMPTY_OBJECT
    return {**action.parameters, "type": "object"}


async def compile_actions(actions: tuple[Action, ...], *, param: str = "actions") -> dict[str, CompiledFormat]:
    """Each action's arguments schema compiled (limits, validity, grammar) in the bounded worker."""
    out: dict[str, CompiledFormat] = {}
    for i, a in enumerate(actions):
        out[a.name] = await compile_format_async(
            ResponseFormat(type="json_schema", schema=schema_of(a), name=a.name),
            param=param,
            subject=f"{param}[{i}] ({a.name}) parameters_schema",
        )
    return out


def check_choice(choice: ActionChoice, actions: tuple[Action, ...], *, param: str = "action_choice") -> None:
    if choice.mode == "named":
        names = [a.name for a in actions]
        if choice.name not in names:
            declared = ", ".join(names) or "none"
            raise InvalidArgument(
                f"{param} names the action {choice.name!r}, which is not declared (declared: {declared})", param=param
            )
    elif choice.mode == "required" and not actions:
        raise InvalidArgument(f"{param} is required but no actions are declared; declare one or use auto", param=param)


@dataclass(frozen=True)
class ActionPlan:
    """What a reply with actions is sampled with and checked against."""

    actions: tuple[Action, ...]
    choice: ActionChoice
    compiled: dict[str, CompiledFormat]
    grammar: str
    #: The call is written in the chat template's tool format (``<tool_call>``), which renders ``tools``.
    tool_format: bool = False
    #: Texts that start a lazy grammar (``GenerationRequest.grammar_triggers``); empty: the grammar is not lazy.
    triggers: tuple[str, ...] = ()

    @property
    def markers(self) -> tuple[str, str]:
        return (TOOL_OPEN, TOOL_CLOSE) if self.tool_format else (OPEN, CLOSE)

    @property
    def tools(self) -> tuple[dict[str, Any], ...]:
        """What the template renders (nothing unless it has the tool format and a call is possible)."""
        return template_tools(self.actions) if self.tool_format and self.choice.mode != "none" else ()

    def action(self, name: str) -> Action | None:
        return next((a for a in self.actions if a.name == name), None)


async def plan(
    actions: tuple[Action, ...], choice: ActionChoice, *, param: str = "actions", tool_format: bool = False
) -> ActionPlan | None:
    """The grammar for a reply that may (or must) call one of ``actions``; None when no call is possible.
    ``tool_format``: the call is written as the chat template's ``<tool_call>`` (see the module docstring)."""
    if not actions:
        return None
    if choice.mode == "none":
        # Declared but not callable now: the reply is spoken text only, enforced (no "<action>" written as text).
        return ActionPlan(actions, choice, {}, 'root ::= line? "\\n"?\nline ::= [^\\n<]+')
    callable_ = tuple(a for a in actions if choice.mode != "named" or a.name == choice.name)
    compiled = await compile_actions(actions, param=param)
    rules: list[str] = []
    alts: list[str] = []
    for i, a in enumerate(callable_):
        grammar = compiled[a.name].grammar
        assert grammar is not None
        prefix = f"a{i}-"
        rules.append(_prefixed(grammar, prefix))
        head = json.dumps('{"name": ' + json.dumps(a.name) + ', "arguments": ')
        alts.append(f'{head} {prefix}root "}}"')
    if tool_format:
        # As Qwen 2.5's template writes a call; the lazy grammar's root matches from the trigger on.
        call = f'call ::= "{TOOL_OPEN}" [ \\n]{{0,2}} ( {" | ".join(alts)} ) [ \\n]{{0,2}} "{TOOL_CLOSE}"'
        lazy = choice.mode == "auto"
        grammar = "\n".join(["root ::= call", call, *rules])
        return ActionPlan(actions, choice, compiled, grammar, True, (TOOL_OPEN,) if lazy else ())
    call = f'call ::= "{OPEN}" ( {" | ".join(alts)} ) "{CLOSE}"'
    line = "line ::= [^\\n<]+"
    # auto: talk, call, or both. required, named: the call comes first, so a small model cannot talk past
    # max_tokens without making it.
    root = 'root ::= line? ( call line? )? "\\n"?' if choice.mode == "auto" else 'root ::= " "? call line? "\\n"?'
    grammar = "\n".join([root, line, call, *rules])
    return ActionPlan(actions, choice, compiled, grammar)


_RULE_NAME = re.compile(r"(?<![\w-])([A-Za-z][\w-]*)(?=\s*::=)")


def _prefixed(grammar: str, prefix: str) -> str:
    """Renames every rule of ``grammar`` with ``prefix`` (so several schemas' rules can live in one grammar),
    skipping string literals and character classes."""
    names = set(_RULE_NAME.findall(grammar))
    ref = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")(?![\w-])")
    out: list[str] = []
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c in '"[':
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
        out.append(ref.sub(lambda m: prefix + m.group(1), grammar[i:j]))
        i = j
    return "".join(out)


def describe(actions: tuple[Action, ...], npc: str, *, now: bool = False) -> str:
    """The actions as the model reads them (in the persona block, or after the history for this turn's)."""
    if not actions:
        return ""
    lines = [f"Right now {npc} can also:" if now else f"{npc} can act in the game. Actions:"]
    for a in actions:
        args = json.dumps(schema_of(a).get("properties", {}), ensure_ascii=False)
        lines.append(f"- {a.name}: {a.description or a.name} Arguments: {args}")
    return "\n".join(lines)


def split_reply(text: str) -> tuple[str, str | None]:
    """The spoken line and the raw call text (None when the reply has no call)."""
    at = text.find(OPEN)
    if at < 0:
        return text, None
    return text[:at].rstrip(), text[at:]


async def read_call(
    raw: str, plan_: ActionPlan, finish_reason: str, index: int = 0
) -> tuple[ActionCall | None, StructuredResult | None]:
    """The validated call in ``raw`` (``<action>...</action>``), or None and why it is not one (fail closed)."""

    def bad(error: str) -> tuple[None, StructuredResult]:
        return None, StructuredResult(valid=False, error=f"the action call was not made: {error}", schema_name="action")

    open_, close = plan_.markers
    if finish_reason == "length" or not raw.rstrip().endswith(close) or not raw.startswith(open_):
        return bad("the reply was cut off by max_tokens before the call was complete")
    body = raw.rstrip()[len(open_) : -len(close)].strip()
    try:
        value = json.loads(body)
    except ValueError as exc:
        return bad(f"the call is not valid JSON: {exc}")
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or "arguments" not in value:
        return bad("the call is not an object with name and arguments")
    action = plan_.action(value["name"])
    if action is None:
        return bad(f"the call names {value['name']!r}, which is not a declared action")
    if plan_.choice.mode == "named" and action.name != plan_.choice.name:
        return bad(f"the call names {action.name!r}, but the choice requires {plan_.choice.name!r}")
    # The arguments as the model wrote them (the grammar fixes what comes before), so the stored turn renders back
    # to the same tokens and the next turn reuses their KV.
    arguments = body[body.index('"arguments": ') + len('"arguments": ') : body.rindex("}")].strip()
    verdict = await check_output_async(arguments, plan_.compiled[action.name], "stop")
    if verdict is None or not verdict.valid:
        return bad(verdict.error if verdict else "the arguments were not checked")
    call = ActionCall(new_call_id(), action.name, arguments, index=index, await_result=action.await_result)
    return call, None


# --- stored turns ------------------------------------------------------------------------------------------------


def encode_npc_line(line: str, calls: tuple[ActionCall, ...]) -> str:
    if not calls:
        return line
    return line + SEP + json.dumps([_call_dict(c) for c in calls], ensure_ascii=False)


def decode_npc_line(stored: str) -> tuple[str, tuple[ActionCall, ...]]:
    line, sep, tail = stored.partition(SEP)
    if not sep:
        return stored, ()
    try:
        items = json.loads(tail)
        return line, tuple(
            ActionCall(
                str(d["id"]),
                str(d["name"]),
                str(d["arguments"]),
                index=i,
                await_result=bool(d.get("await")),
                at=int(d.get("at", len(line))),
            )
            for i, d in enumerate(items)
        )
    except (ValueError, KeyError, TypeError):
        return line, ()


def encode_player_line(text: str, results: tuple[ActionResult, ...]) -> str:
    if not results:
        return text
    return SEP + json.dumps([{"call_id": r.call_id, "content": r.content} for r in results], ensure_ascii=False)


def decode_player_line(stored: str) -> tuple[str, tuple[ActionResult, ...]]:
    if not stored.startswith(SEP):
        return stored, ()
    try:
        items = json.loads(stored[1:])
        return "", tuple(ActionResult(str(d["call_id"]), str(d["content"])) for d in items)
    except (ValueError, KeyError, TypeError):
        return stored, ()


def _call_dict(c: ActionCall) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "arguments": c.arguments, "await": c.await_result, "at": c.at}


def call_text(c: ActionCall, tool_format: bool = False) -> str:
    """A call as the model writes it (so a stored turn renders as it was generated)."""
    body = f'{{"name": {json.dumps(c.name)}, "arguments": {c.arguments}}}'
    return f"{TOOL_OPEN}\n{body}\n{TOOL_CLOSE}" if tool_format else f"{OPEN}{body}{CLOSE}"


def render_npc_line(stored: str, tool_format: bool = False) -> str:
    """A stored NPC line as the prompt shows it: the line, then its call."""
    line, calls = decode_npc_line(stored)
    if not calls:
        return line
    at = min(max(calls[0].at, 0), len(line))
    return line[:at] + call_text(calls[0], tool_format) + line[at:]


def render_results(results: tuple[ActionResult, ...], calls: tuple[ActionCall, ...]) -> str:
    """Action results as the line the NPC hears instead of the player's."""
    names = {c.id: c.name for c in calls}
    return " ".join(f"[{names.get(r.call_id, 'action')} result: {r.content}]" for r in results)


def render_player_line(stored: str, previous_npc_line: str) -> str:
    text, results = decode_player_line(stored)
    if not results:
        return text
    return render_results(results, decode_npc_line(previous_npc_line)[1])


def check_results(
    results: tuple[ActionResult, ...], text: str, pending: tuple[ActionCall, ...], *, param: str = "action_results"
) -> None:
    """Results come alone, one for each call the previous reply awaited."""
    if text.strip():
        raise InvalidArgument(
            "text must be empty when action_results are sent: the results stand in for the player's line", param="text"
        )
    if len(results) > MAX_RESULTS:
        raise InvalidArgument(f"{param} has {len(results)} results; at most {MAX_RESULTS}", param=param)
    waiting = [c for c in pending if c.await_result]
    if not waiting:
        raise InvalidArgument(
            f"{param} were sent but no action call is pending: the previous reply did not end with an action that "
            "awaits a result (finish reason ACTION); send the player's text instead",
            param=param,
        )
    ids = {c.id for c in waiting}
    seen: set[str] = set()
    for i, r in enumerate(results):
        if r.call_id not in ids:
            raise InvalidArgument(
                f"{param}[{i}].call_id {r.call_id!r} is not a pending call; pending: {', '.join(sorted(ids))}",
                param=param,
            )
        if r.call_id in seen:
            raise InvalidArgument(f"{param}[{i}].call_id {r.call_id!r} is answered twice", param=param)
        seen.add(r.call_id)
        if len(r.content) > MAX_RESULT_CHARS:
            raise InvalidArgument(
                f"{param}[{i}].content is {len(r.content)} characters; at most {MAX_RESULT_CHARS}", param=param
            )
        if SEP in r.content:
            raise InvalidArgument(f"{param}[{i}].content contains the control character \\u001e", param=param)
    missing = ids - seen
    if missing:
        raise InvalidArgument(
            f"{param} has no result for the pending call(s) {', '.join(sorted(missing))}", param=param
        )


# --- what the core calls -----------------------------------------------------------------------------------------


class CallCutter:
    """Splits a streamed reply around its call: the spoken text streams, the call (from ``<``, which spoken text
    cannot contain under the grammar, to ``</action>``) is held in ``raw`` until it is complete and validated.
    With the template's tool format (``tool_format``) the line is free text: ``<`` is held only while it may still
    start ``<tool_call>``."""

    def __init__(self, tool_format: bool = False) -> None:
        self.open, self.close = (TOOL_OPEN, TOOL_CLOSE) if tool_format else (OPEN, CLOSE)
        self.tool_format = tool_format
        self.raw = ""
        #: The spoken text before the call (where the call goes when the turn is rendered again).
        self.before = ""
        self.done = False

    def feed(self, text: str) -> str:
        if self.done:
            return text
        head = ""
        if not self.raw:
            at = text.find("<")
            if at < 0:
                self.before += text
                return text
            head, text = text[:at], text[at:]
            self.before += head
        self.raw += text
        if self.tool_format and not self.raw.startswith(self.open) and not self.open.startswith(self.raw):
            # Not a call after all: "<" in the line. Give the text back, holding a later "<" the same way.
            released, self.raw = self.raw, ""
            at = released.find("<", 1)
            if at < 0:
                self.before += released
                return head + released
            self.before += released[:at]
            return head + released[:at] + self.feed(released[at:])
        end = self.raw.find(self.close)
        if end < 0:
            return head
        tail = self.raw[end + len(self.close) :]
        self.raw = self.raw[: end + len(self.close)]
        self.done = True
        return head + tail


async def finish_reply(
    cut: CallCutter, plan_: ActionPlan, finish_reason: str, text: str
) -> tuple[ActionCall | None, StructuredResult | None]:
    """The reply's call (validated) or why it made none when it had to, from its held call text."""
    raw = cut.raw
    if not raw.strip():
        if plan_.choice.mode in ("required", "named"):
            return None, StructuredResult(
                valid=False,
                error="the action call was not made: the reply ended (max_tokens) before the required call",
                schema_name="action",
            )
        return None, None
    call, problem = await read_call(raw, plan_, "stop" if cut.done else finish_reason)
    if call is not None:
        call = replace(call, at=min(len(cut.before.strip()), len(text)))
    return call, problem


def failed_call(structured: StructuredResult) -> bool:
    """Whether a final's structured result reports a dropped action call (rather than a JSON reply)."""
    return not structured.valid and structured.schema_name == "action"


async def check_persona_actions(persona: Persona) -> None:
    """A persona's actions: names, schemas that compile, and no response schema beside them."""
    check_actions(persona.actions, param="persona.actions")
    if persona.actions and persona.response_schema is not None:
        raise InvalidArgument(
            "persona.actions cannot be combined with a response_schema: a reply is either a JSON document or a line "
            "with an optional action call; drop one of them",
            param="actions",
        )
    await compile_actions(persona.actions, param="persona.actions")


def _no_grammar_clash(plan_: ActionPlan | None, compiled: CompiledFormat, param: str) -> None:
    if plan_ is not None and compiled.grammar is not None:
        raise InvalidArgument(
            f"{param} cannot be combined with a JSON response format: the reply is a line with an optional action "
            "call; use response_format text or set the action choice to none",
            param=param,
        )


async def prepare_talk(
    request: TalkRequest, persona: Persona, compiled: CompiledFormat, template: str | None = None
) -> tuple[ActionPlan | None, Persona]:
    """Checks a Talk's actions and choice; the plan, and the persona the NPC speaks as: its actions described in the
    persona block (the stable prefix), this turn's after the history. With a ``template`` that has a tool format
    the template renders the actions instead (``ActionPlan.tools``)."""
    check_actions(request.actions, param="actions", also=persona.actions)
    actions = persona.actions + request.actions
    choice = request.action_choice or ActionChoice("none" if request.action_results else "auto")
    check_choice(choice, actions)
    plan_ = await plan(actions, choice, tool_format=has_tool_format(template) and choice.mode != "none")
    _no_grammar_clash(plan_, compiled, "actions")
    if plan_ is not None and plan_.tool_format:
        # The example dialogue shows calls the way this template writes them.
        examples = tuple(replace(e, npc_line=_as_tool_calls(e.npc_line)) for e in persona.example_dialogue)
        return plan_, replace(persona, example_dialogue=examples)
    if plan_ is None:
        return None, persona
    npc = persona.display_name
    listed = describe(persona.actions, npc)
    system = "\n\n".join(s for s in (persona.system_prompt.strip(), listed, _how_to_act(npc)) if s)
    after = "\n\n".join(s for s in (persona.post_history_instructions, describe(request.actions, npc, now=True)) if s)
    return plan_, replace(persona, system_prompt=system, post_history_instructions=after)


_ACTION_TEXT = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.S)


def _as_tool_calls(text: str) -> str:
    return _ACTION_TEXT.sub(lambda m: f"{TOOL_OPEN}\n{m.group(1)}\n{TOOL_CLOSE}", text)


def _how_to_act(npc: str) -> str:
    return f'To act, {npc} ends the line with {OPEN}{{"name": "<action>", "arguments": {{...}}}}{CLOSE}.'


def prepare_turns(
    request: TalkRequest, turns: tuple[Turn, ...] | list[Turn], start: int, tool_format: bool = False
) -> tuple[str, list[Turn]]:
    """The line the NPC answers (the player's, or the results of its pending calls, checked) and the history as the
    prompt shows it (calls and results rendered as they were generated and heard)."""
    pending = decode_npc_line(turns[-1].npc_line)[1] if turns else ()
    if request.action_results:
        check_results(request.action_results, request.text, pending)
        line = render_results(request.action_results, pending)
    else:
        if SEP in request.text:
            raise InvalidArgument("text contains the control character \\u001e; remove it", param="text")
        line = request.text
    shown: list[Turn] = []
    for i in range(start, len(turns)):
        t = turns[i]
        before = turns[i - 1].npc_line if i > 0 else ""
        shown.append(
            replace(
                t,
                player_line=render_player_line(t.player_line, before),
                npc_line=render_npc_line(t.npc_line, tool_format),
            )
        )
    return line, shown


def stored_turn(request: TalkRequest, final: Completion, time_ms: int) -> Turn:
    return Turn(
        encode_player_line(request.text, request.action_results),
        encode_npc_line(final.text, final.action_calls),
        time_ms,
        request.player_name,
    )


async def prepare_chat(
    request: ChatRequest, compiled: CompiledFormat, template: str | None = None
) -> tuple[ActionPlan | None, ChatRequest]:
    """Checks a chat's tools and tool_choice; the plan, and the messages as the model reads them (tools described
    in the system message, or rendered by a ``template`` with a tool format; earlier calls and tool results
    rendered)."""
    check_actions(request.tools, param="tools")
    choice = request.tool_choice or ActionChoice("auto" if request.tools else "none")
    check_choice(choice, request.tools, param="tool_choice")
    tool_format = has_tool_format(template) and choice.mode != "none"
    plan_ = await plan(request.tools, choice, param="tools", tool_format=tool_format)
    _no_grammar_clash(plan_, compiled, "tools")
    described = request.tools if plan_ is not None and not tool_format else ()
    messages = chat_messages(request.messages, described, tool_format)
    return plan_, replace(request, messages=messages)


def chat_messages(
    messages: tuple[Message, ...], tools: tuple[Action, ...], tool_format: bool = False
) -> tuple[Message, ...]:
    calls: dict[str, ActionCall] = {}
    out: list[Message] = []
    for i, m in enumerate(messages):
        if m.tool_calls and m.role != "assistant":
            raise InvalidArgument(f"messages[{i}] has tool_calls but is not the assistant's", param="messages")
        if m.role == "assistant" and m.tool_calls:
            calls.update((c.id, c) for c in m.tool_calls)
            out.append(
                replace(m, content=m.content + "".join(call_text(c, tool_format) for c in m.tool_calls), tool_calls=())
            )
        elif m.role == "tool":
            call = calls.get(m.tool_call_id)
            if call is None:
                raise InvalidArgument(
                    f"messages[{i}].tool_call_id {m.tool_call_id!r} does not name a call of an earlier assistant "
                    f"message (known: {', '.join(calls) or 'none'})",
                    param="messages",
                )
            out.append(Message("user", f"[{call.name} result: {m.content}]"))
        else:
            out.append(m)
    if tools:
        text = describe(tools, "The assistant") + "\n" + _how_to_act("the assistant")
        if out and out[0].role in ("system", "developer"):
            out[0] = replace(out[0], content=out[0].content + "\n\n" + text)
        else:
            out.insert(0, Message("system", text))
    return tuple(out)
