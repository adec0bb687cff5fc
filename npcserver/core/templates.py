"""Chat-template rendering under limits: a Jinja2 sandbox, in a bounded worker process, with a deadline.

Jinja2's ``ImmutableSandboxedEnvironment`` keeps a template away from Python's internals, but not from spending
time and memory: ``{{ 'a' * 100000000 }}`` or nested loops run for minutes and take gigabytes. So the template's
size is checked first (``MAX_TEMPLATE_CHARS``), and the render runs in a worker (``npcserver.core.bounded``) that
is killed at ``TEMPLATE_RENDER_TIMEOUT_S`` or when it passes the worker memory limit; a rendered prompt longer
than ``MAX_RENDERED_CHARS`` is refused in the worker, before it is sent back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from npcserver.core import bounded
from npcserver.core.limits import MAX_RENDERED_CHARS, MAX_TEMPLATE_CHARS, TEMPLATE_RENDER_TIMEOUT_S
from npcserver.errors import InvalidArgument, ResourceExhausted

_PARAM = "chat_template"


@dataclass(frozen=True)
class TemplateOptions:
    """What a request passes to the chat template besides the messages (HF ``apply_chat_template``'s kwargs)."""

    #: Qwen3-style templates read it: False makes them close the reasoning before the reply. None: not passed.
    enable_thinking: bool | None = None
    #: False renders the conversation without opening the assistant's reply.
    add_generation_prompt: bool = True
    #: "string": contents are text; "openai": lists of ``{"type": "text", "text": ...}`` parts; "auto" picks
    #: "openai" for a template that loops over a message's content, else "string" (as vLLM does).
    content_format: str = "auto"
    #: Reference documents as ``{"title": ..., "text": ...}`` (for templates that read ``documents``).
    documents: tuple[tuple[str, str], ...] = ()
    #: OpenAI-style tools (``{"type": "function", "function": {...}}``) for templates with a tool format.
    tools: tuple[dict[str, Any], ...] = ()


DEFAULT_OPTIONS = TemplateOptions()


def check_template(template: str) -> None:
    """Raises ``InvalidArgument`` when the template is over ``MAX_TEMPLATE_CHARS``."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise InvalidArgument(
            f"the chat template is {len(template)} characters; the limit is {MAX_TEMPLATE_CHARS} (MAX_TEMPLATE_CHARS)",
            param=_PARAM,
        )


def render_chat_template(
    template: str,
    messages: list[dict[str, Any]],
    *,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool,
    extra: dict[str, Any] | None = None,
) -> str:
    """Renders a chat template in a bounded worker. Blocks: call it from a worker thread, not the event loop.

    Raises ``InvalidArgument`` (the template is too long or fails to render) or ``ResourceExhausted`` (it ran out
    of time or memory, or its output is too long).
    """
    check_template(template)
    return bounded.run(
        _render_in_worker,
        template,
        messages,
        bos_token,
        eos_token,
        add_generation_prompt,
        extra or {},
        time_limit_s=TEMPLATE_RENDER_TIMEOUT_S,
        what="rendering the chat template",
        param=_PARAM,
        limit_name="TEMPLATE_RENDER_TIMEOUT_S",
    )


# --- in the worker -------------------------------------------------------------------------------------------------


def _raise_exception(message: str) -> None:
    # Templates call raise_exception() to refuse a conversation shape they do not support.
    raise jinja2.TemplateError(message)


@lru_cache(maxsize=16)
def _compiled(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template)


def _render_in_worker(
    template: str,
    messages: list[dict[str, Any]],
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool,
    extra: dict[str, Any],
) -> str:
    try:
        text = _compiled(template).render(
            **extra,
            messages=messages,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            raise_exception=_raise_exception,
        )
    except jinja2.TemplateError as exc:
        raise InvalidArgument(f"the chat template failed to render: {exc}", param=_PARAM) from None
    except RecursionError:
        raise InvalidArgument("the chat template failed to render: it recurses too deeply", param=_PARAM) from None
    except MemoryError:
        raise  # the pool reports the memory limit
    except Exception as exc:  # a template error that Jinja reports as a Python one: 1 + 'a', a missing attribute
        raise InvalidArgument(
            f"the chat template failed to render: {type(exc).__name__}: {exc}", param=_PARAM
        ) from None
    if len(text) > MAX_RENDERED_CHARS:
        raise ResourceExhausted(
            f"the chat template rendered {len(text)} characters; the limit is {MAX_RENDERED_CHARS} "
            "(MAX_RENDERED_CHARS)",
            param=_PARAM,
            code="rendered_too_long",
        )
    return text
