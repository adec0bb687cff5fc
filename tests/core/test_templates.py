"""Chat templates render in a bounded worker: the same output as Jinja2's sandbox, template errors as
INVALID_ARGUMENT, and bombs stopped at the time or memory limit (RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import time

import pytest

from npcserver.core.limits import MAX_TEMPLATE_CHARS, TEMPLATE_RENDER_TIMEOUT_S
from npcserver.core.templates import render_chat_template
from npcserver.errors import InvalidArgument, ResourceExhausted

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MESSAGES = [{"role": "system", "content": "You are Greta."}, {"role": "user", "content": "Ale?"}]


def render(template: str, add_generation_prompt: bool = True) -> str:
    return render_chat_template(
        template, MESSAGES, bos_token="<s>", eos_token="</s>", add_generation_prompt=add_generation_prompt
    )


def test_renders_like_the_sandbox() -> None:
    assert render(CHATML) == (
        "<|im_start|>system\nYou are Greta.<|im_end|>\n<|im_start|>user\nAle?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render("{{ bos_token }}{{ messages | length }}{{ eos_token }}", False) == "<s>2</s>"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ raise_exception('no system role') }}", "no system role"),
        ("{% for %}", "failed to render"),
        ("{{ 1 + 'a' }}", "TypeError"),
        ("{{ ''.__class__.__mro__ }}", "failed to render"),  # the sandbox still guards Python's internals
    ],
)
def test_template_errors_are_invalid_argument(template: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        render(template)
    assert exc.value.param == "chat_template" and reason in exc.value.message, exc.value.message


def test_an_oversized_template_is_refused_before_rendering() -> None:
    with pytest.raises(InvalidArgument) as exc:
        render("x" * (MAX_TEMPLATE_CHARS + 1))
    assert "MAX_TEMPLATE_CHARS" in exc.value.message


def test_a_cpu_bomb_is_stopped_at_the_deadline() -> None:
    start = time.perf_counter()
    with pytest.raises(ResourceExhausted) as exc:
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    assert exc.value.code == "time_limit" and "TEMPLATE_RENDER_TIMEOUT_S" in exc.value.message
    assert time.perf_counter() - start < TEMPLATE_RENDER_TIMEOUT_S + 1.5
    assert render(CHATML).endswith("assistant\n"), "a fresh worker took over"


def test_a_memory_bomb_is_stopped() -> None:
    with pytest.raises(ResourceExhausted) as exc:
        render("{{ 'a' * 100000000 }}{{ 'b' * 100000000 }}")
    # Usually the memory limit stops it; on a heavily loaded machine the 2 s render deadline can come first. Either
    # way the render is bounded (the memory limit on its own is tested in test_bounded.py).
    assert exc.value.code in ("memory_limit", "rendered_too_long", "time_limit"), exc.value.message
