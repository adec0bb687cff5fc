"""Copies of the embedded model that carry real instruct chat templates (Gemma 3, Llama 3, ChatML, Mistral, Phi),
for the template tests (tests/templates) and the benchmark's ``--template`` runs.

The base model's words are meaningless, but rendering, tokenization, stops and parsing are the real ones. A copy is
what ``gguf-new-metadata --chat-template`` makes, but made with ggml's own GGUF code (the C library llama.cpp loads
models with): the gguf package's Python reader parses the 262k-entry vocabulary for about a minute per copy on a
busy machine, ggml's writes the new metadata in milliseconds, and the tensor data is copied unchanged.
"""

from __future__ import annotations

import ctypes
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp

TEMPLATES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "templates"


@dataclass(frozen=True)
class Family:
    name: str
    #: The markup that closes an assistant turn.
    end_of_turn: str
    #: Whether the base model can write that marker. It copies text markers (``<|im_end|>``) and ordinary tokens
    #: (``</s>``) from the turns before, but never samples Gemma's ``<end_of_turn>``: a base model never learned it.
    #: Where it cannot, the turn's end is tested where a grammar forces it (structured output).
    model_writes_end: bool = True
    #: Special tokens the family's GGUFs name ("eos", "eot"), where the embedded vocabulary has them.
    special_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def template(self) -> str:
        return (TEMPLATES / f"{self.name}.jinja").read_text()


FAMILIES = {
    f.name: f
    for f in (
        # Gemma 3 IT ends a turn with <end_of_turn>, a token of the embedded vocabulary: name it the EOT token.
        Family("gemma3", "<end_of_turn>", False, {"eot": "<end_of_turn>"}),
        # Mistral closes a turn with its EOS, "</s>"; the Gemma vocabulary has that token too.
        Family("mistral", "</s>", True, {"eos": "</s>"}),
        # The other families' markers are no tokens of the Gemma vocabulary: the server must stop on their text.
        Family("llama3", "<|eot_id|>"),
        Family("qwen2_5", "<|im_end|>"),
        Family("phi3", "<|end|>"),
    )
}


class _GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def _ggml() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _GgufInitParams]
    lib.gguf_set_val_str.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.gguf_set_val_u32.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
    lib.gguf_get_data_offset.restype = ctypes.c_size_t
    lib.gguf_get_data_offset.argtypes = [ctypes.c_void_p]
    lib.gguf_get_alignment.restype = ctypes.c_size_t
    lib.gguf_get_alignment.argtypes = [ctypes.c_void_p]
    lib.gguf_get_meta_size.restype = ctypes.c_size_t
    lib.gguf_get_meta_size.argtypes = [ctypes.c_void_p]
    lib.gguf_get_meta_data.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    return lib


def stamp_template(src: Path, dst: Path, template: str, token_ids: dict[str, int]) -> None:
    """Copies a GGUF with a chat template and special token ids set, as ``gguf-new-metadata`` would."""
    lib = _ggml()
    ctx = lib.gguf_init_from_file(str(src).encode(), _GgufInitParams(True, None))  # metadata only
    assert ctx, f"ggml could not read {src}"
    try:
        data_offset = lib.gguf_get_data_offset(ctx)
        lib.gguf_set_val_str(ctx, b"tokenizer.chat_template", template.encode())
        for name, token in token_ids.items():
            lib.gguf_set_val_u32(ctx, f"tokenizer.ggml.{name}_token_id".encode(), token)
        meta = ctypes.create_string_buffer(lib.gguf_get_meta_size(ctx))
        lib.gguf_get_meta_data(ctx, meta)
        alignment = lib.gguf_get_alignment(ctx)
    finally:
        lib.gguf_free(ctx)
    # Tensor offsets are relative to the aligned start of the data, so the data is copied byte for byte.
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(meta.raw)
        fout.write(b"\0" * (-len(meta.raw) % alignment))
        fin.seek(data_offset)
        shutil.copyfileobj(fin, fout, 16 << 20)


def make_copy(base: Path, name: str, out: Path) -> Path:
    """Writes ``out``: a copy of the GGUF ``base`` carrying the template of family ``name`` (a key of FAMILIES)."""
    family = FAMILIES[name]
    vocab = llama_cpp.Llama(str(base), vocab_only=True, verbose=False)
    ids = {}
    for kind, text in family.special_tokens.items():
        [ids[kind]] = vocab.tokenize(text.encode(), add_bos=False, special=True)
    stamp_template(base, out, family.template, ids)
    return out
