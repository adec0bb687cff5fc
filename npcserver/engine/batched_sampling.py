"""Per-sequence token sampling on llama.cpp's sampler API, with fast grammar-constrained decoding.

A sampler chain mirrors llama-cpp-python's ``Llama`` (repeat penalty, then greedy at temperature 0, else top-k,
top-p, min-p, temperature, and a seeded draw), so a request samples as it would there.

Constrained decoding follows llama.cpp's common sampler: draw from the unconstrained distribution first, ask the
grammar about that one token only, and apply the grammar to more of the vocabulary only when it rejects the token.
Applying a grammar costs a walk over every token of the vocabulary (262k for Gemma 3, ~60 ms here), which is what
made llama-cpp-python's JSON decoding 3x slower than plain text; checking one token is nearly free. On a rejection
the grammar first judges only the 1024, then 16384 most likely tokens, and the whole vocabulary only when none of
those is allowed: greedy decoding picks what a full pass would (barring a repeat-penalty corner case), and
sampling with top-k <= 1024 draws from the same candidates. Every accepted token has passed the grammar, so the
output is exactly as grammar-valid as with the grammar applied up front.

A lazy grammar (``triggers``: literal texts, passed as escaped patterns to llama.cpp's
``llama_sampler_init_grammar_lazy_patterns``) leaves the text free until the output contains a trigger, then
constrains from it on: the fast path needs no change, as the grammar allows every token until then. A token that
completes a trigger with more text after it is redrawn: llama.cpp replays that text into the grammar and aborts the
process when it does not fit.

``top_p`` below 1 always applies (0 keeps only the most likely token), as in llama-cpp-python.

Not thread-safe: one ``SequenceSampler`` belongs to the scheduler thread.
"""

from __future__ import annotations

import ctypes
import math
import random
import re

import llama_cpp.llama_cpp as ll
import numpy as np
import numpy.typing as npt

from npcserver.engine.base import SamplingParams
from npcserver.errors import InvalidArgument

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
#: How many recent tokens the repeat penalty looks at (llama-cpp-python's default ``last_n_tokens_size``).
PENALTY_LAST_N = 64
#: How many of the most likely tokens the grammar judges, in turn, before it judges the whole vocabulary.
GRAMMAR_SHORTLISTS = (1024, 16384)


class CandidateBuffer:
    """One reusable llama_token_data array over the whole vocabulary, shared by every sequence's slow path."""

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        #: top-k samplers that cut the candidates down to a shortlist before the grammar judges them.
        self.shortlists = [ll.llama_sampler_init_top_k(k) for k in GRAMMAR_SHORTLISTS if k < n_vocab]
        self.data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._ptr = self.data.ctypes.data_as(ll.llama_token_data_p)
        self.array = ll.llama_token_data_array(data=self._ptr, size=n_vocab, selected=-1, sorted=False)

    def load(self, logits: npt.NDArray[np.float32]) -> None:
        """Refills the array from one row of logits (samplers reorder and shrink it in place)."""
        self.data["id"] = self._ids
        self.data["logit"] = logits
        self.data["p"] = 0.0
        self.array.data = self._ptr  # type: ignore[assignment]  # the stub says Array; C wants a pointer
        self.array.size = self.n_vocab
        self.array.selected = -1
        self.array.sorted = False

    def any_allowed(self) -> bool:
        """Whether any candidate left in the array still has a finite logit."""
        view = np.ctypeslib.as_array(self.array.data, shape=(int(self.array.size),))
        return bool(np.isfinite(view["logit"]).any())

    def close(self) -> None:
        for smpl in self.shortlists:
            ll.llama_sampler_free(smpl)
        self.shortlists = []

    def selected(self) -> int:
        sel = int(self.array.selected)
        if sel < 0:
            raise RuntimeError("sampler chain selected no token")
        return int(self.array.data[sel].id)


class SequenceSampler:
    """The sampler state of one generation: chain (penalty history, RNG) and optional grammar."""

    def __init__(
        self,
        vocab: ll.llama_vocab_p,
        params: SamplingParams,
        grammar: str | None,
        triggers: tuple[str, ...] = (),
    ) -> None:
        self._chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        self._grammar: ll.llama_sampler_p | None = None
        n_vocab = ll.llama_vocab_n_tokens(vocab)
        #: Plain greedy decoding is an argmax over the logits: numpy does it in ~0.01 ms, where llama.cpp's sampler
        #: first copies all 262k logits into a candidate array (~0.25 ms per sequence and step).
        self._argmax = params.temperature <= 0.0 and params.repeat_penalty == 1.0 and grammar is None
        self._n_vocab = n_vocab
        if params.repeat_penalty != 1.0:
            self._add(ll.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, params.repeat_penalty, 0.0, 0.0))
        if params.temperature <= 0.0:
            self._add(ll.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                self._add(ll.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                self._add(ll.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                self._add(ll.llama_sampler_init_min_p(params.min_p, 1))
            self._add(ll.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else random.getrandbits(32)
            self._add(ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        self._vocab = vocab
        #: The texts the lazy grammar waits for, and the end of the output seen until then.
        self._waiting = triggers if grammar is not None else ()
        self._seen = ""
        if grammar is not None and triggers:
            patterns = (ctypes.c_char_p * len(triggers))(*(re.escape(t).encode("utf-8") for t in triggers))
            g = ll.llama_sampler_init_grammar_lazy_patterns(
                vocab, grammar.encode("utf-8"), b"root", patterns, len(triggers), None, 0
            )
        elif grammar is not None:
            g = ll.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if grammar is not None:
            if not g:
                self.close()
                raise InvalidArgument(
                    "the response format's grammar failed to compile in llama.cpp; simplify the schema",
                    param="response_format",
                )
            self._grammar = g
        #: Tokens checked against the grammar, how many it rejected, and how many needed the whole vocabulary.
        self.grammar_checks = 0
        self.grammar_rejections = 0
        self.grammar_full_passes = 0

    def _add(self, smpl: ll.llama_sampler_p) -> None:
        ll.llama_sampler_chain_add(self._chain, smpl)

    def sample(self, ctx: ll.llama_context_p, idx: int, buf: CandidateBuffer) -> int:
        """Draws the next token from output row ``idx`` of the last decode and records it in the sampler state."""
        if self._argmax:
            logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, idx), shape=(self._n_vocab,))
            return int(np.argmax(logits))  # the first maximum, as llama.cpp's greedy sampler picks
        if self._grammar is None:
            # All in C: fill the candidates, run the chain, accept the token into the penalty history.
            return int(ll.llama_sampler_sample(self._chain, ctx, idx))
        logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, idx), shape=(buf.n_vocab,))
        buf.load(logits)
        ll.llama_sampler_apply(self._chain, ctypes.byref(buf.array))
        token = buf.selected()
        if self._waiting:
            token = self._before_trigger(token, logits, buf)
        self.grammar_checks += 1
        if not self._grammar_allows(token):
            # Rejected: redo the draw over the grammar-allowed tokens of the smallest shortlist that has any.
            self.grammar_rejections += 1
            for shortlist in buf.shortlists:
                buf.load(logits)
                ll.llama_sampler_apply(shortlist, ctypes.byref(buf.array))
                ll.llama_sampler_apply(self._grammar, ctypes.byref(buf.array))
                if buf.any_allowed():
                    break
            else:
                self.grammar_full_passes += 1
                buf.load(logits)
                ll.llama_sampler_apply(self._grammar, ctypes.byref(buf.array))
            ll.llama_sampler_apply(self._chain, ctypes.byref(buf.array))
            token = buf.selected()
        ll.llama_sampler_accept(self._grammar, token)
        ll.llama_sampler_accept(self._chain, token)
        return token

    def _before_trigger(self, token: int, logits: npt.NDArray[np.float32], buf: CandidateBuffer) -> int:
        """While a lazy grammar waits: redraws a token that would complete a trigger with more text after it, and
        notes when the grammar has started."""
        while True:
            seen = self._seen + self._piece(token)
            hit = min((at + len(t) for t in self._waiting if (at := seen.find(t)) >= 0), default=-1)
            if hit < 0:
                self._seen = seen[-max(len(t) for t in self._waiting) :]
                return token
            if hit == len(seen):
                self._waiting = ()  # the grammar takes over from here
                return token
            logits[token] = -math.inf
            buf.load(logits)
            ll.llama_sampler_apply(self._chain, ctypes.byref(buf.array))
            token = buf.selected()

    def _piece(self, token: int) -> str:
        out = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(self._vocab, token, out, len(out), 0, True)
        return out.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def _grammar_allows(self, token: int) -> bool:
        one = ll.llama_token_data(id=token, logit=1.0, p=0.0)
        arr = ll.llama_token_data_array(data=ctypes.pointer(one), size=1, selected=-1, sorted=False)
        assert self._grammar is not None
        ll.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        return not math.isinf(arr.data[0].logit)

    def close(self) -> None:
        """Frees the native samplers (the chain owns its members)."""
        if self._chain:
            ll.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar:
            ll.llama_sampler_free(self._grammar)
            self._grammar = None
