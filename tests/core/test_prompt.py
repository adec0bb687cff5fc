"""Prompt rendering: the persona always reaches the model, and the context budget drops the oldest turns first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from npcserver.core.personas import load_persona_files
from npcserver.core.prompt import PromptBuilder, reply_reserve
from npcserver.core.types import Message, Persona, Turn
from npcserver.errors import InvalidArgument

REPO = Path(__file__).resolve().parents[2]
PERSONAS = {p.id: p for p in load_persona_files(REPO / "personas")}

# A template that silently drops system messages, as llama-cpp-python's built-in "gemma" format does.
DROPS_SYSTEM = (
    "{{ bos_token }}{% for m in messages %}{% if m.role != 'system' %}<start_of_turn>{{ m.role }}\n"
    "{{ m.content }}<end_of_turn>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
    "{% endif %}"
)


def builder(vocab: Any, ctx: int = 4096, template: str | None = None) -> PromptBuilder:
    return PromptBuilder(
        lambda text, add_bos: vocab.tokenize(text.encode(), add_bos=add_bos, special=True),
        ctx,
        chat_template=template,
        bos_token="<bos>",
        eos_token="<eos>",
        add_bos=True,
    )


def test_transcript_carries_persona_examples_and_ends_with_npc_name(vocab: Any) -> None:
    greta = PERSONAS["tavern_keeper"]
    built = builder(vocab).talk(greta, [], "What's on the menu?", player_name="", max_tokens=60, structured=False)
    assert built.text.startswith(greta.system_prompt.strip())
    for ex in greta.example_dialogue:
        assert f"Traveler: {ex.player_line}\nGreta: {ex.npc_line}\n" in built.text
    assert built.text.endswith("Traveler: What's on the menu?\nGreta:")
    assert built.stop == ("\n",)
    system_tokens = len(vocab.tokenize(greta.system_prompt.encode(), add_bos=False))
    # The persona's tokens are all in the prompt, and they are the fixed prefix an engine may share.
    assert built.prefix_len > system_tokens
    assert len(built.tokens) > built.prefix_len + 10
    assert vocab.detokenize(built.tokens[1:]).decode() == built.text


def test_builtin_gemma_format_would_drop_the_persona_but_ours_keeps_it(vocab: Any) -> None:
    from llama_cpp import llama_chat_format

    greta = PERSONAS["tavern_keeper"]
    messages = [{"role": "system", "content": greta.system_prompt}, {"role": "user", "content": "Hello"}]
    gemma = llama_chat_format.format_gemma(messages=messages)  # type: ignore[arg-type]
    assert "Rusty Flagon" not in gemma.prompt  # the persona vanishes with the built-in format
    built = builder(vocab, template=DROPS_SYSTEM).talk(
        greta, [], "Hello", player_name="", max_tokens=60, structured=False
    )
    assert "Rusty Flagon" in built.text  # folded into the first user message instead
    assert built.text.endswith("<start_of_turn>model\n")


def test_oldest_turns_drop_first_and_persona_stays(vocab: Any) -> None:
    greta = PERSONAS["tavern_keeper"]
    turns = [Turn(f"Question number {i}: " + "tell me more " * 20, f"Answer {i}. " + "Busy. " * 20) for i in range(40)]
    b = builder(vocab, ctx=1024)
    built = b.talk(greta, turns, "Last question?", player_name="", max_tokens=64, structured=False)
    assert built.truncated_turns > 0
    assert len(built.tokens) <= 1024 - reply_reserve(64, 1024)
    assert greta.system_prompt.strip() in built.text
    assert "Question number 39" in built.text  # the newest survives
    assert "Question number 0:" not in built.text  # the oldest went first
    kept = 40 - built.truncated_turns
    assert all(f"Question number {i}:" in built.text for i in range(40 - kept, 40))


def test_turns_only_grow_at_the_end_so_kv_can_be_reused(vocab: Any) -> None:
    greta = PERSONAS["tavern_keeper"]
    b = builder(vocab)
    first = b.talk(greta, [], "Hello there.", player_name="", max_tokens=60, structured=False)
    second = b.talk(
        greta, [Turn("Hello there.", "Evening.")], "A room, please.", player_name="", max_tokens=60, structured=False
    )
    # Everything of the first prompt but its open "Greta:" tail is a prefix of the second prompt.
    tail = len(vocab.tokenize(b"Traveler: Hello there.\nGreta:", add_bos=False))
    assert second.tokens[: len(first.tokens) - tail] == first.tokens[:-tail]


def test_persona_too_large_for_the_context_is_invalid(vocab: Any) -> None:
    big = Persona(id="big", display_name="Big", system_prompt="word " * 3000)
    with pytest.raises(InvalidArgument, match="context window"):
        builder(vocab, ctx=1024).talk(big, [], "hi", player_name="", max_tokens=64, structured=False)


def test_chat_transcript_and_continue_final_message(vocab: Any) -> None:
    b = builder(vocab)
    msgs = [Message("system", "You are a quartermaster."), Message("user", "Count the swords.", name="Bob")]
    built = b.chat(msgs, max_tokens=32, continue_final=False, chat_template=None)
    assert built.text == "You are a quartermaster.\n\nBob: Count the swords.\nAssistant:"
    assert "\nBob:" in built.stop and "\nUser:" in built.stop
    cont = b.chat([*msgs, Message("assistant", "There are")], max_tokens=32, continue_final=True, chat_template=None)
    assert cont.text.endswith("Assistant: There are")
    assert not cont.strip_leading_space


def test_chat_template_continue_final_message_leaves_the_turn_open(vocab: Any) -> None:
    b = builder(vocab, template=DROPS_SYSTEM)
    msgs = [Message("user", "Name a fruit."), Message("assistant", "Ban")]
    built = b.chat(msgs, max_tokens=16, continue_final=True, chat_template=None)
    assert built.text.endswith("<start_of_turn>assistant\nBan")


def test_broken_template_override_is_invalid(vocab: Any) -> None:
    with pytest.raises(InvalidArgument, match="chat template"):
        builder(vocab).chat(
            [Message("user", "hi")],
            max_tokens=8,
            continue_final=False,
            chat_template="{% for m in messages %}{{ m.content }",
        )
