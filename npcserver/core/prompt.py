"""Prompt building: render a persona and a conversation for the model, within the context budget.

Two renderings:

* **Transcript** (models without a chat template, like the embedded Gemma 3 270M base model): the persona as a
  scene description, the example dialogue, then ``Name: line`` turns, ending with ``NpcName:``. Stops at the end of
  the line. llama-cpp-python's built-in "gemma" format would drop the system message, and with it the persona.
* **Chat template** (the GGUF's own Jinja2 template, or a request's override). If a template drops the system
  message, the persona is folded into the first user message so it always reaches the model.

Budget: the persona and examples always stay; the oldest turns are left out first, and the count is reported.
Transcript prompts are tokenized segment by segment (persona, then each turn), so a conversation's tokens only ever
grow at the end between turns and an engine can reuse their KV cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from npcserver.core.templates import render_chat_template
from npcserver.core.types import Message, Persona, Turn
from npcserver.errors import InvalidArgument

DEFAULT_PLAYER = "Player"
USER_NAME = "User"
ASSISTANT_NAME = "Assistant"

Tokenize = Callable[[str, bool], list[int]]  # (text, add_bos) -> ids


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


def reply_reserve(max_tokens: int, context_size: int) -> int:
    """Tokens kept free for the reply when fitting the prompt."""
    if max_tokens > 0:
        return min(max_tokens, context_size // 2)
    return max(context_size // 4, 1)


def _line(text: str) -> str:
    # A newline inside a line would read as a new speaker in the transcript.
    return " ".join(text.split("\n")).strip()


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
    ) -> BuiltPrompt:
        """The prompt for one Talk: persona, examples, as many recent turns as fit, and the player's line."""
        budget = self.context_size - reply_reserve(max_tokens, self.context_size)
        if self.chat_template:
            messages = self._persona_messages(persona)
            history = [(Message("user", t.player_line), Message("assistant", t.npc_line)) for t in turns]
            return self._fit_template(
                self.chat_template, messages, history, [Message("user", text)], budget, continue_final=False
            )
        player = player_name or persona.player_name or DEFAULT_PLAYER
        npc = persona.display_name
        prefix = persona.system_prompt.strip() + "\n\n"
        prefix += "".join(
            f"{player}: {_line(e.player_line)}\n{npc}: {_line(e.npc_line)}\n" for e in persona.example_dialogue
        )
        turn_texts = [f"{t.player_name or player}: {_line(t.player_line)}\n{npc}: {_line(t.npc_line)}\n" for t in turns]
        tail = f"{player}: {_line(text)}\n{npc}:"
        # One line per speaker: a text reply ends at the end of its line. JSON may span lines; its grammar ends it.
        stop = (f"\n{player}:", f"\n{npc}:") if structured else ("\n",)
        return self._fit_segments(prefix, turn_texts, tail, budget, stop)

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
    ) -> BuiltPrompt:
        """The prompt for an OpenAI-style message list. Leading system/developer messages are always kept."""
        budget = self.context_size - reply_reserve(max_tokens, self.context_size)
        lead = 0
        while lead < len(messages) and messages[lead].role in ("system", "developer"):
            lead += 1
        pinned, rest = list(messages[:lead]), list(messages[lead:])
        if not rest:
            raise InvalidArgument("messages need at least one user or assistant message after the system messages")
        last = rest.pop()
        template = chat_template or self.chat_template
        if template:
            history = [(m,) for m in rest]
            return self._fit_template(template, pinned, history, [last], budget, continue_final=continue_final)
        user_names = {m.name or USER_NAME for m in messages if m.role == "user"} | {USER_NAME}
        prefix = "".join(self._transcript_line(m) for m in pinned)
        if prefix:
            prefix += "\n"
        if continue_final:
            tail = f"{last.name or ASSISTANT_NAME}: {last.content}"
        else:
            tail = self._transcript_line(last) + f"{ASSISTANT_NAME}:"
        stop = tuple(sorted(f"\n{name}:" for name in user_names))
        built = self._fit_segments(prefix, [self._transcript_line(m) for m in rest], tail, budget, stop)
        if continue_final:
            return BuiltPrompt(
                built.tokens, built.prefix_len, built.truncated_turns, built.stop, built.text, strip_leading_space=False
            )
        return built

    @staticmethod
    def _transcript_line(m: Message) -> str:
        if m.role in ("system", "developer"):
            return m.content.strip() + "\n"
        name = m.name or {"user": USER_NAME, "assistant": ASSISTANT_NAME, "tool": "Tool"}[m.role]
        return f"{name}: {m.content.strip()}\n"

    # --- fitting -------------------------------------------------------------------------------------------------

    def _fit_segments(
        self, prefix: str, turns: list[str], tail: str, budget: int, stop: tuple[str, ...]
    ) -> BuiltPrompt:
        prefix_ids = self._tokenize(prefix, self.add_bos)
        tail_ids = self._tokenize(tail, False)
        turn_ids = [self._tokenize(t, False) for t in turns]
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
        text = prefix + "".join(turns[dropped:]) + tail
        return BuiltPrompt(tokens, len(prefix_ids), dropped, stop, text, strip_leading_space=True)

    def _fit_template(
        self,
        template: str,
        pinned: list[Message],
        history: Sequence[tuple[Message, ...]],
        last: list[Message],
        budget: int,
        *,
        continue_final: bool,
    ) -> BuiltPrompt:
        for dropped in range(len(history) + 1):
            msgs = pinned + [m for group in history[dropped:] for m in group] + last
            text = self.render_template(template, msgs, continue_final=continue_final)
            tokens = self._tokenize(text, self.add_bos and not text.startswith(self.bos_token))
            if len(tokens) <= budget:
                prefix_text = self.render_template(template, pinned, continue_final=False, generation_prompt=False)
                prefix_ids = self._tokenize(prefix_text, False) if pinned else []
                prefix_len = 0
                for a, b in zip(prefix_ids, tokens, strict=False):
                    if a != b:
                        break
                    prefix_len += 1
                return BuiltPrompt(tokens, prefix_len, dropped, (), text, strip_leading_space=False)
        raise InvalidArgument(
            f"the system prompt and the last message do not fit in the context window ({self.context_size} tokens, "
            "minus room for the reply): shorten them, lower max_tokens, or raise the server's ctx_size"
        )

    def render_template(
        self, template: str, messages: list[Message], *, continue_final: bool, generation_prompt: bool = True
    ) -> str:
        """Renders with a Jinja2 chat template. Guarantees the system prompt is in the output."""
        msgs = [{"role": m.role if m.role != "developer" else "system", "content": m.content} for m in messages]
        sentinel = "\x00NPCSERVER_CONTINUE\x00"
        final_content = ""
        if continue_final:
            if not msgs or msgs[-1]["role"] != "assistant":
                raise InvalidArgument(
                    "continue_final_message needs the last message to be the assistant's", param="messages"
                )
            final_content = msgs[-1]["content"]
            msgs[-1] = {"role": "assistant", "content": final_content + sentinel}
        text = self._render(template, msgs, generation_prompt and not continue_final)
        system = [m["content"] for m in msgs if m["role"] == "system" and m["content"].strip()]
        if system and any(s.strip() not in text for s in system):
            # The template dropped the system message: fold it into the first user message instead.
            joined = "\n\n".join(system)
            others = [m for m in msgs if m["role"] != "system"]
            for m in others:
                if m["role"] == "user":
                    m["content"] = f"{joined}\n\n{m['content']}"
                    break
            else:
                others.insert(0, {"role": "user", "content": joined})
            text = self._render(template, others, generation_prompt and not continue_final)
        if continue_final:
            text = text[: text.index(sentinel)]
        return text

    def _render(self, template: str, msgs: list[dict[str, str]], add_generation_prompt: bool) -> str:
        # In a bounded worker process with a deadline and a memory limit: a template is a program, and a request
        # may send its own (see npcserver.core.templates).
        return render_chat_template(
            template,
            msgs,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            add_generation_prompt=add_generation_prompt,
        )
