"""Engine helpers: streamed-text decoding, request and grammar pre-checks, and hardware discovery."""

from __future__ import annotations

import codecs
import ctypes
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import llama_cpp

from npcserver.engine.base import GenerationRequest
from npcserver.errors import InvalidArgument

#: Grammars already known to compile, kept so a persona's schema is parsed by llama.cpp once.
_GRAMMAR_CACHE = 256


class StreamDecoder:
    """Token bytes in, text safe to show out.

    Never ends inside a multi-byte UTF-8 character (a token may carry half of one), cuts the text at the first
    stop string, and holds back a tail that could be the start of a stop string until the next piece decides.
    """

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stop if s)
        self._held = ""
        #: True once a stop string was seen; push() returns the text before it.
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Adds one token's bytes; returns the text that can be shown now."""
        new = self._decoder.decode(piece)
        if not self._stops:
            return new
        buf = self._held + new
        cut = -1
        for s in self._stops:
            i = buf.find(s)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
        if cut != -1:
            self.stopped = True
            self._held = ""
            return buf[:cut]
        keep = self._partial_stop_len(buf)
        if keep:
            self._held = buf[-keep:]
            return buf[:-keep]
        self._held = ""
        return buf

    def flush(self) -> str:
        """At the end of generation: the held-back text, plus U+FFFD for a character left incomplete."""
        out = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return out

    def _partial_stop_len(self, buf: str) -> int:
        # Longest suffix of buf that is a proper prefix of some stop string.
        best = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:k]):
                    best = k
                    break
        return best


class GrammarCheck:
    """Checks that llama.cpp can parse a GBNF grammar before the request is queued (cached, thread-safe)."""

    def __init__(self) -> None:
        self._good: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, vocab: Any, grammar: str) -> None:
        """Raises InvalidArgument when llama.cpp cannot parse ``grammar``. Reads only the vocabulary, so it is safe
        beside a running decode."""
        with self._lock:
            if grammar in self._good:
                self._good.move_to_end(grammar)
                return
        smpl = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not smpl:
            raise InvalidArgument(
                "the response format's grammar failed to compile in llama.cpp (see the server log for the parse "
                "error); simplify the schema",
                param="response_format",
            )
        llama_cpp.llama_sampler_free(smpl)
        with self._lock:
            self._good[grammar] = None
            if len(self._good) > _GRAMMAR_CACHE:
                self._good.popitem(last=False)


def check_request(
    request: GenerationRequest, *, context_size: int, n_vocab: int, vocab: Any, grammars: GrammarCheck
) -> None:
    """The checks every engine makes on the event loop, before anything is queued."""
    prompt = request.prompt
    if not prompt:
        raise InvalidArgument("the prompt is empty", param="messages")
    if len(prompt) >= context_size:
        raise InvalidArgument(
            f"the prompt has {len(prompt)} tokens but the context window holds {context_size}; shorten it",
            param="messages",
        )
    if min(prompt) < 0 or max(prompt) >= n_vocab:
        raise InvalidArgument(f"prompt token ids must be in [0, {n_vocab})", param="prompt")
    if request.params.max_tokens < 0:
        raise InvalidArgument("max_tokens must be >= 0 (0 = until a stop)", param="max_tokens")
    if request.grammar:
        grammars.check(vocab, request.grammar)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_GGML_DEV_GPU = 1
_GGML_DEV_ACCEL = 2
_GGML_DEV_IGPU = 3
_BACKEND_NAMES = {"MTL": "Metal", "METAL": "Metal", "CUDA": "CUDA", "ROCM": "ROCm", "HIP": "ROCm", "VULKAN": "Vulkan"}


def detect_backend() -> tuple[str, str]:
    """The compute backend llama.cpp will use ("CPU", "CUDA", "Metal", ...) and a description of its devices."""
    try:
        lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml.so"))
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        lib.ggml_backend_dev_name.restype = ctypes.c_char_p
        lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_description.restype = ctypes.c_char_p
        lib.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_type.restype = ctypes.c_int
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        gpus: list[tuple[str, str]] = []
        cpus: list[str] = []
        for i in range(lib.ggml_backend_dev_count()):
            dev = lib.ggml_backend_dev_get(i)
            name = (lib.ggml_backend_dev_name(dev) or b"").decode(errors="replace")
            desc = (lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace")
            if lib.ggml_backend_dev_type(dev) in (_GGML_DEV_GPU, _GGML_DEV_ACCEL, _GGML_DEV_IGPU):
                gpus.append((name, desc))
            else:
                cpus.append(desc or name)
    except (OSError, AttributeError):  # a build without the ggml device API: fall back to the summary string
        info = llama_cpp.llama_print_system_info().decode(errors="replace")
        for key, label in _BACKEND_NAMES.items():
            if f"{key} :" in info.upper():
                return label, label
        return "CPU", "CPU"
    if gpus and llama_cpp.llama_supports_gpu_offload():
        base = gpus[0][0].rstrip("0123456789").upper()
        return _BACKEND_NAMES.get(base, base or "GPU"), ", ".join(f"{n}: {d}" for n, d in gpus)
    return "CPU", ", ".join(cpus) or "CPU"
