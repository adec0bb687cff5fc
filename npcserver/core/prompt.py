"""Prompt building: render a persona and a conversation for the model, within the context budget.

Two renderings:

* **Transcript** (models without a chat template, like the embedded Gemma 3 270M base model): the persona as a
  scene description, the example dialogue, then ``Name: line`` turns, ending with ``NpcName:``. Stops at the end of
  the line. llama-cpp-python's built-in "gemma" format would drop the system message, and with it the persona.
* **Chat template** (the GGUF's own Jinja2 template, or a request's override). If a template drops the system
  message, the persona is folded into the first user message so it always reaches the model.

Budget: the persona and examples always stay; the oldest turns are left out first, and the count is reported.

Overflow (a Talk's stored history): left to itself, dropping the oldest turn each time one more arrives would change
the prompt right after the persona on every line, and the engine would read the whole window again each time. So a
conversation that outgrows its room (``history_room``) leaves it in big steps instead (``overflow_start``): the kept
history starts at a turn boundary that moves by half the room at once, and the following lines only extend the
cached prefix until the room fills again. The turns left out before that start are where a summary of them goes.
Transcript prompts are tokenized segment by segment (persona, then each turn), so a conversation's tokens only ever
grow at the end between turns and an engine can reuse their KV cache.

Text is text: every string a client sends (lines, messages, names, personas, imported turns) is tokenized with
special-token parsing off, so typing ``<end_of_turn>`` cannot close a turn. Only the chat template's own markup is
parsed for special tokens: the template is rendered with placeholders in place of the client text, and the pieces
are tokenized separately. Tools (actions on a template with a tool format) are client text too: any of their strings
in which this vocabulary would read a special token reaches the template as a placeholder as well. A placeholder that
the template escaped (``tojson``) is filled with the text escaped the same way. In a transcript, every line-breaking
character in client text becomes a space, so no client text can start a speaker line of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from jinja2.utils import htmlsafe_json_dumps

from npcserver.core.personas import LINE_BREAKS
from npcserver.core.templates import DEFAULT_OPTIONS, TemplateOptions, render_chat_template
from npcserver.core.types import Document, Message, Persona, Turn
from npcserver.errors import InvalidArgument

DEFAULT_PLAYER = "Player"
USER_NAME = "User"
ASSISTANT_NAME = "Assistant"

Tokenize = Callable[[str, bool, bool], list[int]]  # (text, add_bos, special) -> ids

# Client text reaches the template as a numbered private-use placeholder, so the template's output is all markup
# except where the placeholders land.
_SLOT = "\ue000{}\ue001"
_SLOTS = re.compile("\ue000([0-9]+)\ue001")
# In the output also escaped, as ``tojson`` (and Python's repr) writes one: the ASCII text \ue0003\ue001.
_OUT_SLOTS = re.compile("\ue000([0-9]+)\ue001" + r"|\\ue000([0-9]+)\\ue001")


@dataclass(frozen=True)
class Span:
    """A named stretch ``[start, end)`` of a prompt's text: one of its sections (persona, history, ...)."""

    name: str
    start: int
    end: int


@dataclass(frozen=True)
class Unit:
    """A stretch of a prompt's text that was tokenized in one call, with that call's flags. The units tile the text,
    and their tokens, in order, are the prompt's tokens: what the inspector needs to count each section's tokens."""

    start: int
    end: int
    add_bos: bool
    special: bool


@dataclass(frozen=True)
class BuiltPrompt:
    """A prompt ready for the engine."""

    tokens: list[int]
    #: Leading tokens that are the persona's fixed part (system prompt and examples).
    prefix_len: int
    #: Turns (or chat messages) left out to fit the context window.
    truncated_turns: int
    #: Stop sequences the rendering needs (the end of the NPC's line).
    stop: tuple[str, ...]
    #: The rendered text, for logs and tests.
    text: str
    #: The reply follows "Name:", so the model's first token usually carries a leading space to drop.
    strip_leading_space: bool
    #: The sections of ``text``, in order, tiling it (persona, examples, history, post_history_instructions,
    #: player_line, reply_start for Talk; system, history, last_message, reply_start for chat).
    sections: tuple[Span, ...] = ()
    #: How ``text`` was tokenized (see Unit).
    units: tuple[Unit, ...] = ()
    #: History items left out for length, oldest first: turns for Talk, messages for chat.
    left_out: int = 0


@dataclass(frozen=True)
class Knowledge:
    """What a Talk's prompt carries besides persona and history, as rendered text (each part may be empty).

    ``world`` (constant lore) goes before the persona, ``summary`` after it; ``lore`` (entries whose keys matched),
    ``memories`` and ``game_state`` are for this line only and go after the history, right before the player's line.
    """

    world: str = ""
    summary: str = ""
    lore: str = ""
    memories: str = ""
    game_state: str = ""

    @property
    def per_line(self) -> tuple[tuple[str, str], ...]:
        return (("lore", self.lore), ("memories", self.memories), ("game_state", self.game_state))


NO_KNOWLEDGE = Knowledge()


def reply_reserve(max_tokens: int, context_size: int) -> int:
    """Tokens kept free for the reply when fitting the prompt."""
    if max_tokens > 0:
        return min(max_tokens, context_size // 2)
    return max(context_size // 4, 1)


def _line(text: str) -> str:
    # A line break inside a line would read as a new speaker in the transcript.
    return LINE_BREAKS.sub(" ", text).strip()


@dataclass(frozen=True)
class _Rendered:
    """A template's output as pieces: (text, is_markup). Only markup is parsed for special tokens."""

    pieces: tuple[tuple[str, bool], ...]
    #: Where each message's client text landed: (start, end, index of the message) in ``text``.
    spans: tuple[tuple[int, int, int], ...] = ()

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.pieces)


#: Tokens a Talk's history leaves for the player's new line. A longer line still fits: the prompt then drops one
#: more old turn for that line only.
LINE_ALLOWANCE = 64


def overflow_start(counts: Sequence[int], tokens_before: int, room: int) -> int:
    """Where a Talk's kept history starts: an index into the newest turns, whose token counts are ``counts``, when
    the turns before them add up to ``tokens_before`` and the history may take ``room`` tokens.

    While the whole conversation fits, everything stays (0). Beyond that, the history starts at the first turn at or
    after the k-th multiple of half the room, with k as small as makes the rest fit: k only moves when another half
    room has been said, so the start, and with it the cached prefix, stays the same for many lines, and after each
    move about half the room is left for the lines to come. The counts must be the stored ones (``Turn.tokens``),
    the same on every line, so every replica and every restart picks the same start.
    """
    total = tokens_before + sum(counts)
    if total <= room:
        return 0
    at = _turn_at(counts, tokens_before, _cut_tokens(total, room))
    return len(counts) if at is None else at


def next_cut(counts: Sequence[int], tokens_before: int, room: int) -> int | None:
    """Where ``overflow_start`` will move the kept history next (same arguments): the first turn at or after the
    next multiple of half the room, or None while the turns said so far do not reach that far.

    Right after every move the next start is already known (the kept history is longer than half the room), so the
    summary of the turns it will leave out can be written ahead, while the player is still talking, and the prompt
    changes once per move instead of once at the move and again when the summary is ready."""
    total = tokens_before + sum(counts)
    cut = _cut_tokens(total, room) if total > room else 0
    return _turn_at(counts, tokens_before, cut + max(room // 2, 1))


def _cut_tokens(total: int, room: int) -> int:
    step = max(room // 2, 1)
    return -(-(total - room) // step) * step  # the smallest multiple of step at or above total - room


def _turn_at(counts: Sequence[int], tokens_before: int, cut: int) -> int | None:
    """The index of the first of ``counts`` whose preceding tokens (from the conversation's start) reach ``cut``."""
    reached = tokens_before
    for i, n in enumerate(counts):
        if reached >= cut:
            return i
        reached += n
    return len(counts) if reached >= cut else None


class PromptBuilder:
    """Renders prompts for one loaded model."""

    def __init__(
        self,
        tokenize: Tokenize,
        context_size: int,
        *,
        chat_template: str | None,
        bos_token: str,
        eos_token: str,
        add_bos: bool,
    ) -> None:
        self._tokenize = tokenize
        self.context_size = context_size
        self.chat_template = chat_template
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.add_bos = add_bos
        self._end_of_turn: dict[str, tuple[str, ...]] = {}
        self._needs_slot_cache: dict[str, bool] = {}

    # --- Talk ----------------------------------------------------------------------------------------------------

    def talk(
        self,
        persona: Persona,
        turns: Sequence[Turn],
        text: str,
        *,
        player_name: str,
        max_tokens: int,
        structured: bool,
        options: TemplateOptions = DEFAULT_OPTIONS,
        knowledge: Knowledge = NO_KNOWLEDGE,
    ) -> BuiltPrompt:
        """The prompt for one Talk: persona, examples, as many recent turns as fit, and the player's line (with
        ``knowledge`` in the places its docstring gives)."""
        budget = self.context_size - reply_reserve(max_tokens, self.context_size)
        per_line = [(name, block) for name, block in knowledge.per_line if block]
        if self.chat_template:
            messages = self._persona_messages(persona)
            world, summary = knowledge.world, knowledge.summary.rstrip()
            system = world + messages[0].content + (f"\n\n{summary}" if summary else "")
            messages[0] = Message("system", system)
            history = [(Message("user", t.player_line), Message("assistant", t.npc_line)) for t in turns]
            # Post-history instructions ride on the player's line: a system message there breaks templates that
            # require alternating roles. So does this line's knowledge, before the line itself.
            lead = "".join(block for _, block in per_line)
            last = lead + text + (f"\n\n{after}" if (after := persona.post_history_instructions.strip()) else "")
            names = ["persona"] + ["examples"] * (len(messages) - 1)
            return self._fit_template(
                self.chat_template,
                messages,
                history,
                [Message("user", last)],
                budget,
                continue_final=False,
                names=(names, "history", "player_line"),
                post_chars=len(after),
                options=options,
                splits={
                    0: ((("world", len(world)),), (("summary", len(summary) + 2 if summary else 0),)),
                    -1: (tuple((name, len(block)) for name, block in per_line), ()),
                },
            )
        player = _line(player_name or persona.player_name) or DEFAULT_PLAYER
        npc = _line(persona.display_name)
        prefix = knowledge.world + persona.system_prompt.strip() + "\n\n"
        persona_chars = len(prefix) - len(knowledge.world)
        prefix += "".join(
            f"{player}: {_line(e.player_line)}\n{npc}: {_line(e.npc_line)}\n" for e in persona.example_dialogue
        )
        prefix += knowledge.summary
        turn_texts = [
            f"{_line(t.player_name) or player}: {_line(t.player_line)}\n{npc}: {_line(t.npc_line)}\n" for t in turns
        ]
        said = f"{player}: {_line(text)}\n"
        # After the whole history, right before the NPC answers (SillyTavern's place for them).
        after = f"{after}\n" if (after := persona.post_history_instructions.strip()) else ""
        lead = "".join(block for _, block in per_line)
        tail = f"{lead}{said}{after}{npc}:"
        # One line per speaker: a text reply ends at the end of its line. JSON may span lines; its grammar ends it.
        stop = (f"\n{player}:", f"\n{npc}:") if structured else ("\n",)
        return self._fit_segments(
            prefix,
            turn_texts,
            tail,
            budget,
            stop,
            prefix_parts=(
                ("world", len(knowledge.world)),
                ("persona", persona_chars),
                ("examples", len(prefix) - persona_chars - len(knowledge.world) - len(knowledge.summary)),
                ("summary", len(knowledge.summary)),
            ),
            tail_parts=(
                *((name, len(block)) for name, block in per_line),
                ("player_line", len(said)),
                ("post_history_instructions", len(after)),
                ("reply_start", len(npc) + 1),
            ),
        )

    def history_room(self, persona: Persona, max_tokens: int, *, fixed_text: str = "", reserved: int = 0) -> int:
        """Tokens a Talk's history may take with this persona: the window less the reply's reserve, the persona's
        fixed text, and ``LINE_ALLOWANCE`` for the player's new line. The same on every line, so the overflow
        steps of ``overflow_start`` stay put from one line to the next. ``fixed_text`` (constant lore, the summary)
        is in every prompt too; ``reserved`` tokens are kept for per-line knowledge (lore and memory budgets)."""
        fixed = fixed_text + persona.system_prompt.strip() + "\n\n" + persona.post_history_instructions.strip()
        fixed += "".join(f"{e.player_line}\n{e.npc_line}\n" for e in persona.example_dialogue)
        used = len(self._tokenize(fixed, self.add_bos, False))
        allowance = min(LINE_ALLOWANCE, self.context_size // 8)
        room = self.context_size - reply_reserve(max_tokens, self.context_size) - used - allowance - reserved
        return max(room, 0)

    def turn_tokens(self, persona: Persona, turn: Turn) -> int:
        """A turn's size in this model's tokens as a Talk prompt shows it: what the store keeps as ``Turn.tokens``."""
        if self.chat_template:
            # The two messages' text plus the markup around them (a few tokens a message in the common templates).
            return (
                len(self._tokenize(turn.player_line, False, False))
                + len(self._tokenize(turn.npc_line, False, False))
                + 10
            )
        player = _line(turn.player_name) or _line(persona.player_name) or DEFAULT_PLAYER
        text = f"{player}: {_line(turn.player_line)}\n{_line(persona.display_name)}: {_line(turn.npc_line)}\n"
        return len(self._tokenize(text, False, False))

    def _persona_messages(self, persona: Persona) -> list[Message]:
        messages = [Message("system", persona.system_prompt.strip())]
        for e in persona.example_dialogue:
            messages += [Message("user", e.player_line), Message("assistant", e.npc_line)]
        return messages

    # --- Chat completions ----------------------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        continue_final: bool,
        chat_template: str | None,
        options: TemplateOptions = DEFAULT_OPTIONS,
        documents: Sequence[Document] = (),
    ) -> BuiltPrompt:
        """The prompt for an OpenAI-style message list. Leading system/developer messages are always kept.

        ``documents`` go to a template that reads ``documents``; otherwise they are rendered as reference text in
        the first system message (one is added when there is none), before the conversation."""
        budget = self.context_size - reply_reserve(max_tokens, self.context_size)
        template = chat_template or self.chat_template
        if documents:
            if template and "documents" in template:
                options = replace(options, documents=tuple((d.title, d.text) for d in documents))
            else:
                messages = _with_reference_text(messages, documents)
        lead = 0
        while lead < len(messages) and messages[lead].role in ("system", "developer"):
            lead += 1
        pinned, rest = list(messages[:lead]), list(messages[lead:])
        if not rest:
            raise InvalidArgument("messages need at least one user or assistant message after the system messages")
        last = rest.pop()
        if template:
            # Older messages leave in exchanges that start at a user message, so what stays still alternates the
            # way templates require.
            history: list[tuple[Message, ...]] = []
            for m in rest:
                if m.role == "user" or not history:
                    history.append((m,))
                else:
                    history[-1] += (m,)
            return self._fit_template(
                template,
                pinned,
                history,
                [last],
                budget,
                continue_final=continue_final,
                names=(["system"] * len(pinned), "history", "last_message"),
                options=options,
            )
        user_names = {_line(m.name) or USER_NAME for m in messages if m.role == "user"} | {USER_NAME}
        prefix = "".join(self._transcript_line(m) for m in pinned)
        if prefix:
            prefix += "\n"
        if continue_final:
            # The text to continue keeps its trailing space: the model carries on right after it.
            tail = f"{_line(last.name) or ASSISTANT_NAME}: {LINE_BREAKS.sub(' ', last.content).lstrip()}"
        elif not options.add_generation_prompt:
            tail = self._transcript_line(last)
        else:
            tail = self._transcript_line(last) + f"{ASSISTANT_NAME}:"
        stop = tuple(sorted(f"\n{name}:" for name in user_names))
        said = len(tail) if continue_final else len(self._transcript_line(last))
        built = self._fit_segments(
            prefix,
            [self._transcript_line(m) for m in rest],
            tail,
            budget,
            stop,
            prefix_parts=(("system", len(prefix)),),
            tail_parts=(("last_message", said), ("reply_start", len(tail) - said)),
        )
        if continue_final:
            return replace(built, strip_leading_space=False)
        return built

    @staticmethod
    def _transcript_line(m: Message) -> str:
        if m.role in ("system", "developer"):
            return m.content.strip() + "\n"
        name = _line(m.name) or {"user": USER_NAME, "assistant": ASSISTANT_NAME, "tool": "Tool"}[m.role]
        return f"{name}: {_line(m.content)}\n"

    # --- fitting -------------------------------------------------------------------------------------------------

    def _fit_segments(
        self,
        prefix: str,
        turns: list[str],
        tail: str,
        budget: int,
        stop: tuple[str, ...],
        *,
        prefix_parts: tuple[tuple[str, int], ...],
        tail_parts: tuple[tuple[str, int], ...],
    ) -> BuiltPrompt:
        # A transcript has no markup: all of it is text, speaker labels included.
        prefix_ids = self._tokenize(prefix, self.add_bos, False)
        tail_ids = self._tokenize(tail, False, False)
        turn_ids = [self._tokenize(t, False, False) for t in turns]
        fixed = len(prefix_ids) + len(tail_ids)
        if fixed > budget:
            raise InvalidArgument(
                f"the persona/system prompt and the new line need {fixed} tokens, but only {budget} fit in the "
                f"context window ({self.context_size} tokens, minus room for the reply): shorten them, lower "
                "max_tokens, or raise the server's ctx_size"
            )
        used, keep = fixed, len(turn_ids)
        for i in range(len(turn_ids) - 1, -1, -1):  # newest first
            if used + len(turn_ids[i]) > budget:
                keep = len(turn_ids) - 1 - i
                break
            used += len(turn_ids[i])
        dropped = len(turn_ids) - keep
        tokens = list(prefix_ids)
        for ids in turn_ids[dropped:]:
            tokens += ids
        tokens += tail_ids
        kept = "".join(turns[dropped:])
        text = prefix + kept + tail
        # Sections and units as character spans over the text (the inspector counts their tokens).
        parts = (*prefix_parts, ("history", len(kept)), *tail_parts)
        unit_lengths = [(len(prefix), self.add_bos), *((len(t), False) for t in turns[dropped:]), (len(tail), False)]
        units, pos = [], 0
        for length, bos in unit_lengths:
            units.append(Unit(pos, pos + length, bos, False))
            pos += length
        return BuiltPrompt(
            tokens,
            len(prefix_ids),
            dropped,
            stop,
            text,
            strip_leading_space=True,
            sections=_tile(parts),
            units=tuple(units),
            left_out=dropped,
        )

    def _fit_template(
        self,
        template: str,
        pinned: list[Message],
        history: Sequence[tuple[Message, ...]],
        last: list[Message],
        budget: int,
        *,
        continue_final: bool,
        names: tuple[list[str], str, str],
        post_chars: int = 0,
        options: TemplateOptions = DEFAULT_OPTIONS,
        splits: dict[int, tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]] | None = None,
    ) -> BuiltPrompt:
        """``splits``: for a message index (-1: the last), the sections its text starts and ends with (name,
        characters); the rest of it is the message's own section."""

        def attempt(dropped: int) -> tuple[list[int], str, _Rendered]:
            msgs = pinned + [m for group in history[dropped:] for m in group] + last
            rendered = self._render_slots(
                template,
                msgs,
                continue_final=continue_final,
                generation_prompt=options.add_generation_prompt,
                options=options,
            )
            return self._tokenize_rendered(rendered), rendered.text, rendered

        # Everything, if it fits: the common case, one render. A template's complaint about the whole conversation
        # is the client's to fix, so it is raised as it is.
        tokens, text, rendered = attempt(0)
        dropped = 0
        if len(tokens) > budget:
            # Otherwise the fewest dropped groups that fit, by bisection (a prompt never grows when older groups
            # leave it). A template may refuse a shortened conversation ("roles must alternate"): that count is
            # treated as not fitting.
            found: tuple[int, list[int], str, _Rendered] | None = None
            lo, hi = 1, len(history)
            while lo <= hi:
                mid = (lo + hi) // 2
                try:
                    got = attempt(mid)
                except InvalidArgument:
                    got = None
                if got is not None and len(got[0]) <= budget:
                    found, hi = (mid, *got), mid - 1
                else:
                    lo = mid + 1
            if found is None:
                raise InvalidArgument(
                    "the system prompt and the last message do not fit in the context window "
                    f"({self.context_size} tokens, minus room for the reply): shorten them, lower max_tokens, or "
                    "raise the server's ctx_size"
                )
            dropped, tokens, text, rendered = found
        prefix_len = 0
        if pinned:
            try:
                prefix = self._render_slots(
                    template, pinned, continue_final=False, generation_prompt=False, options=options
                )
            except InvalidArgument:  # a template may refuse a conversation without a user turn: no shared prefix
                prefix = _Rendered(())
            for a, b in zip(self._tokenize_rendered(prefix), tokens, strict=False):
                if a != b:
                    break
                prefix_len += 1
        stop = self.end_of_turn(template)
        # Sections: each message's text with the markup that opens it; the markup after the last one opens the reply.
        pinned_names, history_name, last_name = names
        kept = sum(len(g) for g in history[dropped:])
        owner = [*pinned_names, *[history_name] * kept, *[last_name] * len(last)]
        parts: list[tuple[str, int]] = []
        pos = 0
        split = {(len(owner) + k if k < 0 else k): v for k, v in (splits or {}).items()}
        for start, end, index in rendered.spans:
            lead, trail = split.get(index, ((), ()))
            if post_chars and index == len(owner) - 1:
                trail = (*trail, ("post_history_instructions", post_chars))
            head = sum(n for _, n in lead)
            tail_n = sum(n for _, n in trail)
            if (lead or trail) and head + tail_n <= end - start:
                parts.append((owner[index], start - pos))  # the markup before the text
                parts += lead
                parts.append((owner[index], end - start - head - tail_n))
                parts += trail
            else:
                parts.append((owner[index], end - pos))
            pos = end
        parts.append(("reply_start", len(text) - pos))
        return BuiltPrompt(
            tokens,
            prefix_len,
            dropped,
            stop,
            text,
            strip_leading_space=False,
            sections=_tile(parts),
            units=self._units(rendered),
            left_out=sum(len(g) for g in history[:dropped]),
        )

    def end_of_turn(self, template: str) -> tuple[str, ...]:
        """The markup a template closes an assistant turn with (``<|im_end|>``, ``<|eot_id|>``, ...), as a stop.

        A marker that is one end-of-generation token stops the engine anyway; one that is not a token of this
        vocabulary (a Llama 3 template on a Gemma vocabulary) only ends the reply as text.
        """
        cached = self._end_of_turn.get(template)
        if cached is not None:
            return cached
        try:
            rendered = self._render_slots(
                template,
                [Message("user", "Hi."), Message("assistant", "Hello.")],
                continue_final=False,
                generation_prompt=False,
            )
        except InvalidArgument:
            return ()
        last_text = max((i for i, (_, markup) in enumerate(rendered.pieces) if not markup), default=-1)
        after = "".join(t for t, _ in rendered.pieces[last_text + 1 :]) if last_text >= 0 else ""
        # The first word after the reply: "<|end|>" of Phi's "<|end|>\n<eos>", "<end_of_turn>" of "<end_of_turn>\n".
        words = after.split()
        stop = (words[0],) if words else ()
        if len(self._end_of_turn) >= 64:
            self._end_of_turn.clear()
        self._end_of_turn[template] = stop
        return stop

    def render_template(
        self, template: str, messages: list[Message], *, continue_final: bool, generation_prompt: bool = True
    ) -> str:
        """Renders with a Jinja2 chat template. Guarantees the system prompt is in the output."""
        return self._render_slots(
            template, messages, continue_final=continue_final, generation_prompt=generation_prompt
        ).text

    def _render_slots(
        self,
        template: str,
        messages: Sequence[Message],
        *,
        continue_final: bool,
        generation_prompt: bool,
        options: TemplateOptions = DEFAULT_OPTIONS,
    ) -> _Rendered:
        msgs = [{"role": m.role if m.role != "developer" else "system", "content": m.content} for m in messages]
        if continue_final and (not msgs or msgs[-1]["role"] != "assistant"):
            raise InvalidArgument(
                "continue_final_message needs the last message to be the assistant's", param="messages"
            )
        add_generation_prompt = generation_prompt and not continue_final
        rendered, missing = self._render_with_slots(template, msgs, add_generation_prompt, continue_final, options)
        if missing:
            system_at = [i for i, m in enumerate(msgs) if m["role"] == "system"]
            kept_at = [i for i, m in enumerate(msgs) if m["role"] != "system"]
            # The template dropped the system message: fold it into the first user message instead.
            joined = "\n\n".join(m["content"] for m in msgs if m["role"] == "system" and m["content"].strip())
            others = [dict(m) for m in msgs if m["role"] != "system"]
            for m in others:
                if m["role"] == "user":
                    m["content"] = f"{joined}\n\n{m['content']}"
                    break
            else:
                others.insert(0, {"role": "user", "content": joined})
                kept_at.insert(0, system_at[0])
            folded, _ = self._render_with_slots(template, others, add_generation_prompt, continue_final, options)
            # Spans point at the caller's messages again; the system text folded into a user message is the system's.
            spans: list[tuple[int, int, int]] = []
            first_user = next((j for j, m in enumerate(others) if m["role"] == "user"), -1)
            for start, end, index in folded.spans:
                if index == first_user and system_at:
                    cut = min(end, start + len(joined.strip()) + 2)
                    spans.append((start, cut, system_at[0]))
                    if cut < end:
                        spans.append((cut, end, kept_at[index]))
                else:
                    spans.append((start, end, kept_at[index]))
            rendered = _Rendered(folded.pieces, tuple(spans))
        return rendered

    def _render_with_slots(
        self,
        template: str,
        msgs: list[dict[str, str]],
        add_generation_prompt: bool,
        continue_final: bool,
        options: TemplateOptions = DEFAULT_OPTIONS,
    ) -> tuple[_Rendered, bool]:
        """Renders with placeholders for the contents; returns the pieces and whether a system message vanished."""
        cores: list[str] = []
        slotted = []
        for i, m in enumerate(msgs):
            content = m["content"]
            final = continue_final and i == len(msgs) - 1
            if not content and not final:
                slotted.append(m)  # an empty content stays empty: templates test it ("if message.content")
                continue
            core = content.lstrip() if final else content.strip()
            # Surrounding whitespace stays outside the placeholder, so "| trim" in the template still removes it;
            # the text to continue keeps its trailing space.
            start = len(content) - len(content.lstrip())
            slot = content[:start] + _SLOT.format(len(cores)) + content[start + len(core) :]
            cores.append(core)
            slotted.append({**m, "content": slot})
        final_slot = len(cores) - 1 if continue_final else -1
        message_slots = len(cores)
        # Documents are client text too: they reach the template as placeholders, and are never parsed for markup.
        documents = []
        for title, body in options.documents:
            doc = {"text": _SLOT.format(len(cores))}
            cores.append(body)
            if title:
                doc["title"] = _SLOT.format(len(cores))
                cores.append(title)
            documents.append(doc)
        tools = self._slot_tools(options.tools, cores)
        text = self._render(template, slotted, add_generation_prompt, options, documents, tools)
        pieces: list[tuple[str, bool]] = []
        spans: list[tuple[int, int, int]] = []
        message_of = [j for j, m in enumerate(slotted) if _SLOTS.search(m["content"])]
        out = 0  # length of the output so far
        seen: set[int] = set()
        pos = 0
        for match in _OUT_SLOTS.finditer(text):
            raw = match.group(1) is not None
            index = int(match.group(1) if raw else match.group(2))
            if index >= len(cores):
                continue
            # An escaped placeholder sits inside a JSON string: the text goes in as tojson would have written it.
            piece = cores[index] if raw else str(htmlsafe_json_dumps(cores[index]))[1:-1]
            pieces.append((text[pos : match.start()], True))
            pieces.append((piece, False))
            out += match.start() - pos
            if index < message_slots:
                spans.append((out, out + len(piece), message_of[index]))
            out += len(piece)
            seen.add(index)
            pos = match.end()
            if index == final_slot:
                break  # continue_final_message: the prompt ends inside the assistant's turn
        else:
            if final_slot >= 0:
                raise InvalidArgument(
                    "continue_final_message: the chat template does not show the final assistant message",
                    param="continue_final_message",
                )
            pieces.append((text[pos:], True))
        system = [j for j, m in enumerate(slotted) if m["role"] == "system" and msgs[j]["content"].strip()]
        slot_of = {
            j: int(_SLOTS.findall(m["content"])[0]) for j, m in enumerate(slotted) if _SLOTS.search(m["content"])
        }
        missing = any(slot_of[j] not in seen for j in system)
        return _Rendered(tuple(p for p in pieces if p[0]), tuple(spans)), missing

    def _slot_tools(self, tools: Sequence[dict[str, Any]], cores: list[str]) -> list[dict[str, Any]]:
        """The tools with each string (key or value, at any depth) that needs it replaced by a placeholder whose text
        is appended to ``cores``. Other strings stay as they are, so the template reads types, enums and required
        names as usual and the prompt is the same as without placeholders; one string gets one placeholder, so
        ``required`` still names the keys of ``properties``."""
        memo: dict[str, str] = {}

        def slot(text: str) -> str:
            if text in memo:
                return memo[text]
            if not self._needs_slot(text):
                return text
            core = text.strip()
            start = len(text) - len(text.lstrip())
            memo[text] = text[:start] + _SLOT.format(len(cores)) + text[start + len(core) :]
            cores.append(core)
            return memo[text]

        def walk(value: Any) -> Any:
            if isinstance(value, str):
                return slot(value)
            if isinstance(value, dict):
                return {slot(k) if isinstance(k, str) else k: walk(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [walk(v) for v in value]
            return value

        return [walk(dict(t)) for t in tools]

    def _needs_slot(self, text: str) -> bool:
        """Whether a tool's string would not read as plain text inside markup: this vocabulary parses a special token
        in it, or it looks like a placeholder."""
        needs = self._needs_slot_cache.get(text)
        if needs is None:
            needs = (
                "\ue000" in text
                or "\\ue000" in text
                or self._tokenize(text, False, True) != self._tokenize(text, False, False)
            )
            if len(self._needs_slot_cache) >= 4096:
                self._needs_slot_cache.clear()
            self._needs_slot_cache[text] = needs
        return needs

    def _wants_bos(self, rendered: _Rendered) -> bool:
        pieces = rendered.pieces
        wrote_bos = bool(self.bos_token and pieces and pieces[0][1] and pieces[0][0].startswith(self.bos_token))
        return self.add_bos and not wrote_bos

    def _units(self, rendered: _Rendered) -> tuple[Unit, ...]:
        """How ``_tokenize_rendered`` splits the text into tokenizer calls."""
        add_bos = self._wants_bos(rendered)
        if not rendered.pieces:
            return (Unit(0, 0, add_bos, False),) if add_bos else ()
        units, pos = [], 0
        for i, (text, markup) in enumerate(rendered.pieces):
            units.append(Unit(pos, pos + len(text), add_bos and i == 0, markup))
            pos += len(text)
        return tuple(units)

    def _tokenize_rendered(self, rendered: _Rendered) -> list[int]:
        """Markup is parsed for special tokens; client text never is. BOS once, unless the template wrote it."""
        pieces = rendered.pieces
        add_bos = self._wants_bos(rendered)
        ids: list[int] = []
        for text, markup in pieces:
            ids += self._tokenize(text, add_bos and not ids, markup)
        if add_bos and not ids:
            ids = self._tokenize("", True, False)
        return ids

    def _render(
        self,
        template: str,
        msgs: list[dict[str, str]],
        add_generation_prompt: bool,
        options: TemplateOptions = DEFAULT_OPTIONS,
        documents: list[dict[str, str]] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        # In a bounded worker process with a deadline and a memory limit: a template is a program, and a request
        # may send its own (see npcserver.core.templates).
        extra: dict[str, Any] = {}
        if options.enable_thinking is not None:
            extra["enable_thinking"] = options.enable_thinking
        if documents:
            extra["documents"] = documents
        if tools:
            extra["tools"] = tools
        content: list[dict[str, Any]] = [dict(m) for m in msgs]
        if _content_format(template, options.content_format) == "openai":
            content = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in msgs]
        return render_chat_template(
            template,
            content,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            add_generation_prompt=add_generation_prompt,
            extra=extra,
        )


# A template that loops over a message's content expects OpenAI's list of parts (vLLM detects it the same way).
_LOOPS_OVER_CONTENT = re.compile(r"\{%-?\s*for\s+\w+\s+in\s+\w+(\[['\"]content['\"]\]|\.content)\s*-?%\}")


def _content_format(template: str, requested: str) -> str:
    if requested != "auto":
        return requested
    return "openai" if _LOOPS_OVER_CONTENT.search(template) else "string"


def _with_reference_text(messages: Sequence[Message], documents: Sequence[Document]) -> list[Message]:
    """The documents as reference text in the first system message, for a template or transcript that has no
    place of its own for them."""
    blocks = [f"[{i}] {d.title}\n{d.text}" if d.title else f"[{i}] {d.text}" for i, d in enumerate(documents, 1)]
    reference = "Reference documents:\n\n" + "\n\n".join(blocks)
    out = list(messages)
    if out and out[0].role in ("system", "developer"):
        out[0] = replace(out[0], content=f"{out[0].content.rstrip()}\n\n{reference}")
    else:
        out.insert(0, Message("system", reference))
    return out


def _tile(parts: Sequence[tuple[str, int]]) -> tuple[Span, ...]:
    """Consecutive (name, length) parts as spans: empty ones dropped, neighbours of one name joined."""
    spans: list[Span] = []
    pos = 0
    for name, length in parts:
        if length <= 0:
            continue
        if spans and spans[-1].name == name:
            spans[-1] = Span(name, spans[-1].start, pos + length)
        else:
            spans.append(Span(name, pos, pos + length))
        pos += length
    return tuple(spans)
