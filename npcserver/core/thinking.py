"""Reasoning of thinking models, kept apart from the reply.

A thinking model (Qwen3, DeepSeek-R1, QwQ, Magistral ...) writes its reasoning between markers before it answers:
``<think>…</think>`` or its chat template's own pair. An NPC must never say it, and a stored turn must never hold
it, so the generation loop feeds every sampled piece through a ``ReasoningSplitter``: text between the markers
comes out as reasoning, the rest as the reply. A marker may arrive split over several pieces, so a piece's tail that
could begin a marker is held back until the next piece decides it. A template that opens the reasoning itself (its
generation prompt ends with ``<think>``) makes the reply start inside it, and a reply cut off before the closing
marker (max_tokens) is all reasoning: a half thought never reaches the player.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Marker pairs that models write, the common one first. A template that names another pair uses that one.
MARKERS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("[THINK]", "[/THINK]"),
    ("<|begin_of_thought|>", "<|end_of_thought|>"),
)


@dataclass(frozen=True)
class Markers:
    open: str = "<think>"
    close: str = "</think>"


def markers_for(template: str | None) -> Markers:
    """The reasoning markers of a chat template: the first known pair it writes, else ``<think>…</think>``."""
    if template:
        for open_, close in MARKERS:
            if open_ in template and close in template:
                return Markers(open_, close)
    return Markers()


def opens_inside(prompt_text: str, markers: Markers) -> bool:
    """Whether a prompt leaves the reasoning open (its template wrote the opening marker as the reply's start)."""
    opened = prompt_text.rfind(markers.open)
    return (
        opened >= 0
        and prompt_text.rfind(markers.close) < opened
        and not prompt_text[opened + len(markers.open) :].strip()
    )


def template_reads_thinking(template: str | None) -> bool:
    """Whether a chat template has a switch for thinking (it reads ``enable_thinking``)."""
    return bool(template) and "enable_thinking" in (template or "")


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest tail of ``text`` that is a proper prefix of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ReasoningSplitter:
    """Splits a stream of sampled text into (is_reasoning, text) pieces. ``feed`` each piece, then ``finish``."""

    def __init__(self, markers: Markers = Markers(), *, inside: bool = False) -> None:
        self.markers = markers
        self.inside = inside
        self._held = ""
        #: After a closing marker, the blank lines models put before the answer are not part of it.
        self._after_close = False

    def feed(self, text: str) -> list[tuple[bool, str]]:
        out: list[tuple[bool, str]] = []
        buf = self._held + text
        self._held = ""
        while buf:
            marker = self.markers.close if self.inside else self.markers.open
            at = buf.find(marker)
            if at >= 0:
                self._emit(out, buf[:at])
                buf = buf[at + len(marker) :]
                self.inside = not self.inside
                self._after_close = not self.inside
                continue
            keep = _partial_suffix(buf, marker)
            self._emit(out, buf[: len(buf) - keep])
            self._held = buf[len(buf) - keep :]
            break
        return out

    def finish(self) -> list[tuple[bool, str]]:
        """The held tail: it began like a marker, but the reply ended before the marker did."""
        out: list[tuple[bool, str]] = []
        held, self._held = self._held, ""
        self._emit(out, held)
        return out

    def _emit(self, out: list[tuple[bool, str]], text: str) -> None:
        if not self.inside and self._after_close:
            text = text.lstrip()
            if text:
                self._after_close = False
        if text:
            out.append((self.inside, text))
