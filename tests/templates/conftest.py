"""Copies of the embedded model that carry real instruct chat templates (made by bench.template_gguf), made on
first use and deleted at the end of the session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.template_gguf import make_copy
from npcserver.config import Settings
from npcserver.engine.model import resolve_model_path


@pytest.fixture(scope="session")
def template_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """``template_model(family)``: the path of a copy of the embedded model carrying that family's template."""
    base = resolve_model_path(None, Settings().cache_dir)
    folder = tmp_path_factory.mktemp("template-models")
    made: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in made:
            made[name] = make_copy(base, name, folder / f"{name}.gguf")
        return made[name]

    yield make
    for path in made.values():  # a copy is as big as the model: do not leave them in the temp folder
        path.unlink(missing_ok=True)
