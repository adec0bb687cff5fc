"""Preset loading and sampling precedence: request field > request preset > persona default > server default."""

from pathlib import Path

import pytest

from npcserver.core.presets import PresetBook
from npcserver.core.types import Persona, SamplingOverrides
from npcserver.errors import NotFound


def test_builtin_presets_follow_the_use_case_table() -> None:
    book = PresetBook()
    temps = {p.name: p.temperature for p in book.list()}
    assert 0.1 <= temps["factual"] <= 0.3
    assert 0.6 <= temps["dialogue"] <= 0.8
    assert 0.9 <= temps["storytelling"] <= 1.2


def test_precedence() -> None:
    book = PresetBook(default="dialogue")
    persona = Persona(id="p", display_name="P", system_prompt="x", default_preset="storytelling", max_tokens=77)
    server = book.resolve(SamplingOverrides(), None, None, default_max_tokens=100)
    assert server.temperature == book.get("dialogue").temperature and server.max_tokens == 100
    by_persona = book.resolve(SamplingOverrides(), None, persona, default_max_tokens=100)
    assert by_persona.temperature == book.get("storytelling").temperature and by_persona.max_tokens == 77
    by_request_preset = book.resolve(SamplingOverrides(), "factual", persona, default_max_tokens=100)
    assert by_request_preset.temperature == book.get("factual").temperature
    assert by_request_preset.top_p == book.get("factual").top_p
    explicit = book.resolve(
        SamplingOverrides(temperature=0.0, max_tokens=5), "factual", persona, default_max_tokens=100
    )
    assert explicit.temperature == 0.0 and explicit.max_tokens == 5
    assert explicit.top_k == book.get("factual").top_k


def test_unknown_preset_is_not_found() -> None:
    with pytest.raises(NotFound, match="choose one of: dialogue, factual, storytelling"):
        PresetBook().resolve(SamplingOverrides(), "spooky", None, default_max_tokens=10)


def test_presets_file_adds_and_replaces(tmp_path: Path) -> None:
    f = tmp_path / "presets.toml"
    f.write_text(
        "[spooky]\ndescription='ghost stories'\ntemperature=0.9\ntop_p=0.9\ntop_k=50\nmin_p=0.05\nrepeat_penalty=1.1\n"
        "[factual]\ntemperature=0.1\ntop_p=0.5\ntop_k=10\nmin_p=0.2\nrepeat_penalty=1.0\n"
    )
    book = PresetBook(extra_file=f)
    assert book.get("spooky").temperature == 0.9
    assert book.get("factual").temperature == 0.1


def test_bad_presets_file_names_the_problem(tmp_path: Path) -> None:
    f = tmp_path / "presets.toml"
    f.write_text("[hot]\ntemperature=5\ntop_p=0.9\ntop_k=50\nmin_p=0.05\nrepeat_penalty=1.1\n")
    with pytest.raises(ValueError, match=r"preset \[hot\] temperature must be between 0 and 2"):
        PresetBook(extra_file=f)
