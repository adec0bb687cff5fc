"""Copies of the embedded model that carry real instruct chat templates (Gemma 3, Llama 3, ChatML, Mistral, Phi).

The base model's words are meaningless, but rendering, tokenization, stops and parsing are the real ones. Each copy
is made with the gguf package's ``gguf-new-metadata`` in about a second, on first use, and deleted at the end of
the session.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from npcserver.config import Settings
from npcserver.engine.model import resolve_model_path

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"


@dataclass(frozen=True)
class Family:
    name: str
    #: The markup that closes an assistant turn.
    end_of_turn: str
    #: Whether the base model can write that marker. It copies text markers (``<|im_end|>``) and ordinary tokens
    #: (``</s>``) from the turns before, but never samples Gemma's ``<end_of_turn>``: a base model never learned it.
    #: Where it cannot, the turn's end is tested where a grammar forces it (structured output).
    model_writes_end: bool = True
    #: Extra gguf-new-metadata arguments: the EOS / EOT token the family's GGUFs carry, where the vocabulary has it.
    metadata: tuple[str, ...] = ()

    @property
    def template(self) -> str:
        return (TEMPLATES / f"{self.name}.jinja").read_text()


FAMILIES = {
    f.name: f
    for f in (
        # Gemma 3 IT ends a turn with <end_of_turn>, a token of the embedded vocabulary: name it the EOT token.
        Family("gemma3", "<end_of_turn>", False, ("--special-token", "eot", "<end_of_turn>")),
        # Mistral closes a turn with its EOS, "</s>"; the Gemma vocabulary has that token too.
        Family("mistral", "</s>", True, ("--special-token", "eos", "</s>")),
        # The other families' markers are no tokens of the Gemma vocabulary: the server must stop on their text.
        Family("llama3", "<|eot_id|>"),
        Family("qwen2_5", "<|im_end|>"),
        Family("phi3", "<|end|>"),
    )
}


@pytest.fixture(scope="session")
def template_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """``template_model(family)``: the path of a copy of the embedded model carrying that family's template."""
    base = resolve_model_path(None, Settings().cache_dir)
    folder = tmp_path_factory.mktemp("template-models")
    made: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in made:
            family = FAMILIES[name]
            out = folder / f"{name}.gguf"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gguf.scripts.gguf_new_metadata",
                    "--force",
                    "--chat-template-file",
                    str(TEMPLATES / f"{name}.jinja"),
                    *family.metadata,
                    str(base),
                    str(out),
                ],
                check=True,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=120,
            )
            made[name] = out
        return made[name]

    yield make
    for path in made.values():  # a copy is as big as the model: do not leave them in the temp folder
        path.unlink(missing_ok=True)
