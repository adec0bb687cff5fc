"""The Ollama door's translation of ``options`` and ``keep_alive`` (the live server runs them in
test_ollama_live.py; these pin every rule, including the ones a live test would take minutes to reach)."""

from __future__ import annotations

from typing import Any

import pytest

from npcserver.core.types import SamplingOverrides
from npcserver.errors import InvalidArgument
from npcserver.http.ollama import keep_alive_seconds, overrides_from_options


def test_sampling_options_map_to_overrides() -> None:
    options = {
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 20,
        "min_p": 0.1,
        "seed": 9,
        "stop": ["\n", "###"],
        "repeat_penalty": 1.2,
        "num_predict": 50,
        "num_ctx": 8192,  # the server's own: ignored
        "presence_penalty": 0.0,  # off: what the sampler does anyway
        "mirostat": None,  # unset
    }
    assert overrides_from_options(options) == SamplingOverrides(
        temperature=0.3, top_p=0.8, top_k=20, min_p=0.1, seed=9, stop=("\n", "###"), repeat_penalty=1.2, max_tokens=50
    )
    assert overrides_from_options({"stop": "END"}).stop == ("END",)
    assert overrides_from_options({"num_predict": -1}).max_tokens == 0
    assert overrides_from_options({"num_predict": -2}).max_tokens == 0
    assert overrides_from_options(None) == SamplingOverrides()


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"bogus": 1}, "'bogus' is not an Ollama option"),
        ({"repeat_last_n": 64}, "'repeat_last_n' is not supported"),
        ({"frequency_penalty": 0.4}, "only 0.0 is accepted"),
        ({"typical_p": 0.5}, "'typical_p'"),
        ({"num_predict": 0}, "num_predict is 0"),
        ({"temperature": "hot"}, "options.temperature"),
        ({"stop": 5}, "options.stop"),
    ],
)
def test_options_it_cannot_honour_are_named(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        overrides_from_options(options)
    assert needle in refused.value.message and refused.value.param is not None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        (300, 300.0),
        (-1, -1.0),
        ("0", 0.0),
        ("90", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("-1m", -60.0),
    ],
)
def test_keep_alive_durations(value: Any, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "m", "", "5m3", True])
def test_keep_alive_that_is_not_a_duration(value: Any) -> None:
    with pytest.raises(InvalidArgument, match="keep_alive"):
        keep_alive_seconds(value)
