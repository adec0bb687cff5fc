"""The designer's workbench: the prompt inspector (RenderPrompt) and side-by-side variants (Compare).

The inspector dry-runs a Talk or a chat completion: the same checks, persona, history, presets and prompt building
as the real request, then nothing is generated and nothing stored. Its sections tile the prompt's text and their
token counts add up to the prompt's tokens (what the request's usage.prompt_tokens reports), because each section is
counted inside the tokenizer calls the prompt was actually built with.

Compare runs one player line through 2 to 4 variants of a persona at once: they are submitted together, so the
batched engine decodes them in the same steps, against the conversation's history, and nothing is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from npcserver.core import actions as acts
from npcserver.core.prompt import BuiltPrompt, Span, Unit
from npcserver.core.structured import CompiledFormat
from npcserver.core.types import ChatRequest, Completion, Persona, SamplingOverrides, TalkRequest, new_id
from npcserver.engine.base import SamplingParams
from npcserver.errors import Internal, InvalidArgument

if TYPE_CHECKING:
    from npcserver.core.app import NpcCore

MIN_VARIANTS = 2
MAX_VARIANTS = 4

#: Persona fields a variant may override (the rest, like id and source, say which persona it is).
VARIANT_FIELDS = (
    "display_name",
    "system_prompt",
    "example_dialogue",
    "default_preset",
    "response_schema",
    "max_tokens",
    "stop",
    "player_name",
    "post_history_instructions",
)


@dataclass(frozen=True)
class Section:
    """One section of a prompt: its name, its exact text, and its tokens."""

    name: str
    text: str
    tokens: int


@dataclass(frozen=True)
class ResolvedParam:
    """One sampling parameter as the request will use it, and where its value came from.

    ``source``: "request" (the request's own field), "preset" (the preset the request named), "persona" (the
    persona's default preset or its own field), "server_default" (the server's default preset or setting).
    ``preset`` names the preset when the value came from one.
    """

    name: str
    value: float | int | None
    source: str
    preset: str = ""


@dataclass(frozen=True)
class Inspection:
    """What the model would receive for a request, without generating anything."""

    text: str
    sections: tuple[Section, ...]
    prompt_tokens: int
    #: Indexes of the history items left out for length (conversation turns for Talk, messages for chat).
    left_out: tuple[int, ...]
    #: The GBNF grammar replies are sampled with ("" for free text), and what set it.
    grammar: str
    grammar_source: str
    sampling: tuple[ResolvedParam, ...]
    #: Every stop sequence in force: the request's, the persona's, and the rendering's own.
    stop: tuple[str, ...]


@dataclass(frozen=True)
class Variant:
    """One column of a comparison: a preset, sampling options and persona field overrides (all optional)."""

    label: str = ""
    preset: str | None = None
    overrides: SamplingOverrides = field(default_factory=SamplingOverrides)
    #: Persona fields to replace, by name (see VARIANT_FIELDS).
    persona: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantResult:
    label: str
    completion: Completion
    #: The persona the variant spoke as (the stored one with the variant's fields): what saving it would store.
    persona: Persona


@dataclass(frozen=True)
class Comparison:
    results: tuple[VariantResult, ...]
    #: The most sequences the engine held at once during the comparison (the variants decoded in one batch).
    peak_batch: int
    #: Engine decode steps during the comparison: fewer than the replies' tokens together when they shared steps.
    engine_steps: int


# --- the inspector -----------------------------------------------------------------------------------------------


def count_sections(
    tokenize: Callable[[str, bool, bool], list[int]], text: str, spans: Sequence[Span], units: Sequence[Unit]
) -> list[int]:
    """Tokens per section. Each tokenizer call (unit) is counted cumulatively up to every section border inside it,
    so the counts add up to exactly the prompt's tokens."""
    counts = [0] * len(spans)

    def at(pos: int) -> int:
        for i, s in enumerate(spans):
            if s.start <= pos < s.end:
                return i
        return len(spans) - 1

    for u in units:
        cuts = sorted({s.end for s in spans if u.start < s.end < u.end} | {u.end})
        done, pos = 0, u.start
        for cut in cuts:
            n = len(tokenize(text[u.start : cut], u.add_bos, u.special))
            counts[at(pos)] += n - done
            done, pos = n, cut
    return counts


def explain_sampling(
    core: NpcCore, overrides: SamplingOverrides, preset_name: str | None, persona: Persona | None
) -> tuple[SamplingParams, tuple[ResolvedParam, ...]]:
    """The resolved parameters (exactly as a real request resolves them) and the source of each."""
    params = core.presets.resolve(overrides, preset_name, persona, default_max_tokens=core.default_max_tokens)
    if preset_name:
        source, preset = "preset", preset_name
    elif persona is not None and persona.default_preset:
        source, preset = "persona", persona.default_preset
    else:
        source, preset = "server_default", core.presets.default
    out = []
    for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty"):
        if getattr(overrides, name) is not None:
            out.append(ResolvedParam(name, getattr(params, name), "request"))
        else:
            out.append(ResolvedParam(name, getattr(params, name), source, preset))
    if overrides.max_tokens is not None:
        out.append(ResolvedParam("max_tokens", params.max_tokens, "request"))
    elif persona is not None and persona.max_tokens is not None:
        out.append(ResolvedParam("max_tokens", params.max_tokens, "persona"))
    else:
        out.append(ResolvedParam("max_tokens", params.max_tokens, "server_default"))
    # No seed means a random one per request.
    out.append(ResolvedParam("seed", params.seed, "request" if overrides.seed is not None else "server_default"))
    return params, tuple(out)


def _inspection(
    core: NpcCore,
    prompt: BuiltPrompt,
    params: SamplingParams,
    sampling: tuple[ResolvedParam, ...],
    compiled: CompiledFormat,
    grammar_source: str,
    plan: acts.ActionPlan | None,
) -> Inspection:
    engine = core.engine

    def tokenize(text: str, add_bos: bool, special: bool) -> list[int]:
        return engine.tokenize(text, add_bos=add_bos, special=special)

    counts = count_sections(tokenize, prompt.text, prompt.sections, prompt.units)
    sections = tuple(
        Section(s.name, prompt.text[s.start : s.end], n) for s, n in zip(prompt.sections, counts, strict=True)
    )
    if sum(counts) != len(prompt.tokens):  # a broken invariant would mislead the designer: say so loudly
        raise Internal(f"the inspector counted {sum(counts)} tokens for a prompt of {len(prompt.tokens)}")
    return Inspection(
        text=prompt.text,
        sections=sections,
        prompt_tokens=len(prompt.tokens),
        left_out=tuple(range(prompt.left_out)),
        # As NpcCore._generate picks it: the actions' grammar (which holds the reply's format too) when there are any.
        grammar=plan.grammar if plan is not None else compiled.grammar or "",
        grammar_source="actions" if plan is not None else grammar_source if compiled.grammar else "",
        sampling=sampling,
        stop=_stops(params, prompt),
    )


def _stops(params: SamplingParams, prompt: BuiltPrompt) -> tuple[str, ...]:
    from npcserver.core.app import MAX_STOP

    # The same list the generation loop uses (core.app.NpcCore._generate).
    return tuple(dict.fromkeys((*params.stop, *prompt.stop)))[: MAX_STOP + 4]


async def render_talk(core: NpcCore, request: TalkRequest, persona_fields: dict[str, Any] | None = None) -> Inspection:
    """The prompt a Talk would send, with nothing generated or stored. ``persona_fields`` replace the stored
    persona's (checked as a persona update would check them)."""
    core.check_talk(request)
    persona = await core._usable_persona(request.persona_id)
    if persona_fields:
        persona = variant_persona(persona, persona_fields, "render")
        await core.validate_persona(persona)
    compiled, grammar_source = await core.talk_format(request, persona)
    params, sampling = explain_sampling(core, request.overrides, request.preset, persona)
    plan, persona = await acts.prepare_talk(request, persona, compiled, core.prompts.chat_template)
    prompt = await talk_prompt(core, request, persona, params, compiled, plan)
    return await asyncio.to_thread(_inspection, core, prompt, params, sampling, compiled, grammar_source, plan)


async def talk_prompt(
    core: NpcCore,
    request: TalkRequest,
    persona: Persona,
    params: SamplingParams,
    compiled: CompiledFormat,
    plan: acts.ActionPlan | None = None,
) -> BuiltPrompt:
    """The Talk prompt exactly as NpcCore.stream_talk builds it (``persona`` as actions.prepare_talk returned it)."""
    # Looking leaves no trace: the summary the conversation's next Talk shows is not chosen here.
    prompt, _, _, _ = await core.talk_prompt(request, persona, params, compiled, plan, remember=False)
    return prompt


async def render_chat(core: NpcCore, request: ChatRequest) -> Inspection:
    """The prompt a chat completion would send, with nothing generated (built by the same NpcCore.prepare_chat)."""
    chat = await core.prepare_chat(request)
    _, sampling = explain_sampling(core, chat.request.overrides, chat.request.preset, None)
    return await asyncio.to_thread(
        _inspection, core, chat.prompt, chat.params, sampling, chat.compiled, "request response_format", chat.plan
    )


# --- side by side ------------------------------------------------------------------------------------------------


def variant_persona(persona: Persona, fields_: dict[str, Any], where: str) -> Persona:
    """The persona with a variant's fields in place of its own."""
    unknown = sorted(set(fields_) - set(VARIANT_FIELDS))
    if unknown:
        raise InvalidArgument(
            f"{where}.persona cannot override {', '.join(unknown)}; a variant may set: {', '.join(VARIANT_FIELDS)}",
            param="variants",
        )
    return replace(persona, **fields_)


async def compare(core: NpcCore, request: TalkRequest, variants: Sequence[Variant]) -> Comparison:
    """One player line through each variant at once, against the conversation's history; nothing is stored.

    ``request`` carries the line, the conversation and the player's name (its own sampling fields are ignored: each
    variant brings its own).
    """
    if not MIN_VARIANTS <= len(variants) <= MAX_VARIANTS:
        raise InvalidArgument(
            f"variants has {len(variants)} entries; compare takes {MIN_VARIANTS} to {MAX_VARIANTS}",
            param="variants",
        )
    core.check_talk(request)
    stored = await core._usable_persona(request.persona_id)
    prepared = []
    for i, v in enumerate(variants):
        where = f"variants[{i}]"
        core._check_overrides(v.overrides)
        persona = variant_persona(stored, v.persona, where)
        if v.persona:
            await core.validate_persona(persona)
        if v.preset:
            core.presets.get(v.preset, param=f"{where}.preset")
        compiled, _ = await core.talk_format(request, persona)
        params, _ = explain_sampling(core, v.overrides, v.preset, persona)
        # The variant speaks with its actions described (as a Talk would); its result keeps the persona as edited.
        plan, speaking = await acts.prepare_talk(request, persona, compiled, core.prompts.chat_template)
        prompt = await talk_prompt(core, request, speaking, params, compiled, plan)
        prepared.append((v.label or f"variant {i + 1}", persona, prompt, params, compiled, plan))

    async def one(
        prompt: BuiltPrompt, params: SamplingParams, compiled: CompiledFormat, plan: acts.ActionPlan | None
    ) -> Completion:
        # No session: a variant neither reuses nor disturbs the conversation's own KV.
        events: AsyncIterator[Any] = core._generate(
            new_id("compare"),
            request.created,
            prompt,
            params,
            compiled,
            session=None,
            template=core.engine.info.chat_template,
            plan=plan,
        )
        async with aclosing(events) as stream:  # type: ignore[type-var]
            async for event in stream:
                if isinstance(event, Completion):
                    return event
        raise Internal("the engine ended without a final result")

    stats = getattr(core.engine, "stats", None)
    steps_before = stats().steps if callable(stats) else 0
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, stats().running if callable(stats) else 0)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    try:
        # Submitted together: the batched engine admits them into the same decode steps.
        # A TaskGroup: when one fails, the others stop too.
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(p, params, c, plan)) for _, _, p, params, c, plan in prepared]
        except ExceptionGroup as failed:  # the doors map one domain error, not a group
            raise failed.exceptions[0] from None
        completions = [t.result() for t in tasks]
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    steps = (stats().steps - steps_before) if callable(stats) else 0
    results = tuple(
        VariantResult(label, completion, persona)
        for (label, persona, *_), completion in zip(prepared, completions, strict=True)
    )
    return Comparison(results, peak, steps)
