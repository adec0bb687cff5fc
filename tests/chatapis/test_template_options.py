"""What a chat completion passes to the chat template besides its messages: enable_thinking, add_generation_prompt,
chat_template_content_format and documents (through the real prompt builder and template sandbox; a tokenizer that
records its calls stands in for the model's, so the tests see which text is parsed for special tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest

from npcserver.core.prompt import PromptBuilder
from npcserver.core.templates import TemplateOptions
from npcserver.core.types import Document, Message, Persona

QWEN3 = (Path(__file__).resolve().parents[1] / "fixtures" / "templates" / "qwen3_thinking.jinja").read_text()
# A template with its own place for documents (as Command R's and Granite's have).
WITH_DOCUMENTS = (
    "{% for d in documents %}<doc>{{ d.title }}|{{ d.text }}</doc>{% endfor %}"
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
# A template that reads a message's content as OpenAI's list of parts.
PARTS = (
    "{% for m in messages %}<{{ m.role }}>{% for part in m['content'] %}{{ part.text }}{% endfor %}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
USER = [Message("user", "Is the pass open?")]


class Recorder:
    """Tokenizes into bytes and keeps (text, special) for each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, text: str, add_bos: bool, special: bool) -> list[int]:
        self.calls.append((text, special))
        return list(text.encode())


def builder(template: str | None = QWEN3, tokenize: Recorder | None = None) -> PromptBuilder:
    return PromptBuilder(
        tokenize or Recorder(), 4096, chat_template=template, bos_token="", eos_token="", add_bos=False
    )


def chat(b: PromptBuilder, messages: list[Message] = USER, **kw: object) -> str:
    return b.chat(messages, max_tokens=64, continue_final=False, chat_template=None, **kw).text  # type: ignore[arg-type]


def test_enable_thinking_reaches_a_template_that_reads_it() -> None:
    b = builder()
    off = chat(b, options=TemplateOptions(enable_thinking=False))
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert chat(b, options=TemplateOptions(enable_thinking=True)).endswith("<|im_start|>assistant\n<think>\n")
    assert chat(b).endswith("<|im_start|>assistant\n")  # unset: the template's own default
    talk = b.talk(
        Persona("brom", "Brom", "You are Brom."),
        [],
        "Hello.",
        player_name="",
        max_tokens=64,
        structured=False,
        options=TemplateOptions(enable_thinking=False),
    )
    assert talk.text.endswith("<think>\n\n</think>\n\n")


def test_add_generation_prompt_false_leaves_the_reply_unopened() -> None:
    text = chat(builder(), options=TemplateOptions(add_generation_prompt=False))
    assert text == "<|im_start|>user\nIs the pass open?<|im_end|>\n"
    transcript = chat(builder(None), options=TemplateOptions(add_generation_prompt=False))
    assert transcript == "User: Is the pass open?\n"


def test_documents_go_to_a_template_that_reads_them_as_text_never_markup() -> None:
    tokenize = Recorder()
    b = builder(WITH_DOCUMENTS, tokenize)
    docs = [Document("Snow closed it.<eos>", "Ranger log"), Document("Open in spring.")]
    text = chat(b, documents=docs)
    assert text.startswith("<doc>Ranger log|Snow closed it.<eos></doc><doc>|Open in spring.</doc><user>")
    # Document text is client text: tokenized with special-token parsing off, like a message's content.
    assert ("Snow closed it.<eos>", False) in tokenize.calls and ("Ranger log", False) in tokenize.calls


def test_documents_without_a_place_in_the_template_become_reference_text_first() -> None:
    docs = [Document("Snow closed it.", "Ranger log")]
    text = chat(builder(), [Message("system", "You are a guard."), *USER], documents=docs)
    assert text.startswith(
        "<|im_start|>system\nYou are a guard.\n\nReference documents:\n\n[1] Ranger log\nSnow closed it.<|im_end|>\n"
    )
    transcript = chat(builder(None), documents=docs)
    assert transcript.startswith("Reference documents:\n\n[1] Ranger log\nSnow closed it.\n")
    assert transcript.index("Snow closed it.") < transcript.index("Is the pass open?")


def test_content_format_auto_detects_templates_that_read_parts() -> None:
    assert chat(builder(PARTS)) == "<user>Is the pass open?</s><assistant>"
    assert chat(builder(PARTS), options=TemplateOptions(content_format="openai")) == chat(builder(PARTS))
    # Forced to strings, the same template loops over the characters' parts, which have no text.
    assert chat(builder(PARTS), options=TemplateOptions(content_format="string")) == "<user></s><assistant>"


@pytest.mark.parametrize("fmt", ["string", "openai"])
def test_content_format_leaves_a_string_template_working(fmt: str) -> None:
    text = chat(builder(WITH_DOCUMENTS), options=TemplateOptions(content_format=fmt))
    if fmt == "string":
        assert text == "<user>Is the pass open?</s><assistant>"
    else:  # the list of parts is what the template prints: the client chose a format this template does not read
        assert text.startswith("<user>[{")
