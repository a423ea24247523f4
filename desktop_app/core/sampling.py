"""Choosing each next token: llama.cpp's native sampler chain, or a plain argmax for greedy answers.

A sampler belongs to one sequence: several sequences decoded in one batch each have their own
(their own temperature, seed, penalties and grammar) and read their own row of the logits.
"""

from __future__ import annotations

import collections
import ctypes
from typing import Any, Callable

from desktop_app.core.errors import EngineError
from desktop_app.core.turn import GenerationOptions

__all__ = ["ChainSampler", "GreedySampler", "PENALTY_LAST_N", "Sampler", "build_sampler", "json_schema_grammar"]


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """Return a GBNF grammar that only admits JSON matching ``schema`` (llama.cpp's converter)."""
    import json

    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:
        raise EngineError(f"The JSON schema cannot be used for output: {exc}") from exc


#: How many recent tokens the repeat penalty looks at (llama.cpp's usual default).
PENALTY_LAST_N = 64


class ChainSampler:
    """llama.cpp's native sampler chain."""

    def __init__(self, chain: Any):
        self.chain = chain

    def sample(self, ctx: Any, index: int = -1) -> int:
        """Pick the next token from row ``index`` of the last logits (and remember it)."""
        import llama_cpp

        return llama_cpp.llama_sampler_sample(self.chain, ctx, index)

    def accept(self, token: int) -> None:
        """Remember a token generated elsewhere (for the repeat penalty)."""
        import llama_cpp

        llama_cpp.llama_sampler_accept(self.chain, token)

    def free(self) -> None:
        """Free the chain."""
        import llama_cpp

        llama_cpp.llama_sampler_free(self.chain)


class GreedySampler:
    """Greedy decoding with llama.cpp's repeat penalty, straight from the logits.

    llama.cpp's samplers first copy all logits into a candidate array (the whole vocabulary,
    every token); for greedy decoding that copy and the sort that follows cost several
    percent of the time per token. The same choice is an argmax: the best token not in the
    penalty window, against the best penalised one (a test compares both token for token).

    The code here runs right after each llama_decode, which has just streamed the whole
    model through the CPU caches, so every extra Python call is a cold one (tens of µs):
    hence the cached view of the logits and the short path when the best token is not
    penalised at all.
    """

    def __init__(self, vocab: Any, repeat_penalty: float):
        import numpy

        import llama_cpp

        self.np = numpy
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.penalty = repeat_penalty
        self.recent: collections.deque[int] = collections.deque()
        self.counts: dict[int, int] = {}  # how often each token occurs in ``recent``
        self._logits_address = _logits_address_function()
        self._address = 0
        self._view: Any = None

    def _logits(self, ctx: Any, index: int) -> Any:
        """Row ``index`` of the last logits as a numpy array over llama.cpp's buffer (not a copy)."""
        address = self._logits_address(ctx, index)
        if not address:
            raise EngineError("llama.cpp has no logits to sample from.")
        if address != self._address:  # the buffer moves only when llama.cpp reallocates it
            self._view = self.np.ctypeslib.as_array((ctypes.c_float * self.n_vocab).from_address(address))
            self._address = address
        return self._view

    def sample(self, ctx: Any, index: int = -1) -> int:
        """The token with the highest (penalised) logit in row ``index``."""
        logits = self._logits(ctx, index)
        best = int(logits.argmax())
        # A penalty above 1 only lowers logits, so an unpenalised winner stays the winner;
        # one below 1 (asking for repetition) may lift a recent token above it.
        if self.counts and self.penalty != 1.0 and (best in self.counts or self.penalty < 1.0):
            best = self._penalised_best(logits)
        self.accept(best)
        return best

    def _penalised_best(self, logits: Any) -> int:
        np = self.np
        ids = np.fromiter(self.counts, dtype=np.int64, count=len(self.counts))
        saved = logits[ids].copy()
        logits[ids] = -np.inf  # the buffer is llama.cpp's scratch until the next decode
        best = int(logits.argmax())
        value = logits[best]
        logits[ids] = saved
        penalised = np.where(saved <= 0, saved * self.penalty, saved / self.penalty)
        j = int(penalised.argmax())
        if penalised[j] > value:
            best = int(ids[j])
        return best

    def accept(self, token: int) -> None:
        """Remember a token (for the repeat penalty over the last PENALTY_LAST_N)."""
        self.recent.append(token)
        self.counts[token] = self.counts.get(token, 0) + 1
        if len(self.recent) > PENALTY_LAST_N:
            old = self.recent.popleft()
            left = self.counts[old] - 1
            if left:
                self.counts[old] = left
            else:
                del self.counts[old]

    def free(self) -> None:
        """Nothing to free."""


def _logits_address_function() -> Callable[[Any, int], int | None]:
    """``llama_get_logits_ith`` returning a plain address, so no ctypes pointer is built per token."""
    import llama_cpp

    library = getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None)
    if library is None:  # another packaging of the bindings: go through the public function
        get = llama_cpp.llama_get_logits_ith
        return lambda ctx, i: ctypes.cast(get(ctx, i), ctypes.c_void_p).value
    function = library["llama_get_logits_ith"]  # indexing gives a new object: the bindings' own is untouched
    function.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    function.restype = ctypes.c_void_p
    return function


def build_sampler(vocab: Any, options: GenerationOptions) -> "Sampler":
    """The sampler for ``options``: llama.cpp's native chain, or plain greedy when that is all."""
    grammar_text = options.grammar or options.json_schema
    extras = options.logit_bias or options.presence_penalty or options.frequency_penalty
    if options.temperature <= 0 and not grammar_text and not extras:
        return GreedySampler(vocab, options.repeat_penalty or 1.0)
    return ChainSampler(build_chain(vocab, options))


def build_chain(vocab: Any, options: GenerationOptions) -> Any:
    """Build llama.cpp's native sampler chain for ``options``."""
    import llama_cpp

    # Converting the schema may fail: do it before anything needs freeing.
    grammar_text = options.grammar or (json_schema_grammar(options.json_schema) if options.json_schema else None)
    params = llama_cpp.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(params)
    add = llama_cpp.llama_sampler_chain_add
    if grammar_text:
        grammar = llama_cpp.llama_sampler_init_grammar(vocab, grammar_text.encode("utf-8"), b"root")
        if not grammar:
            llama_cpp.llama_sampler_free(chain)
            raise EngineError("The output grammar is not valid GBNF.")
        add(chain, grammar)
    if options.logit_bias:
        # Before the penalties' cut below, which must see the biased logits.
        add(chain, _logit_bias_sampler(vocab, options.logit_bias))
    repeat = options.repeat_penalty or 1.0
    freq, present = options.frequency_penalty or 0.0, options.presence_penalty or 0.0
    penalize = repeat != 1.0 or bool(freq) or bool(present)
    if penalize:
        # A repeat penalty above 1 (and positive frequency and presence penalties) only lower
        # the logits of the last PENALTY_LAST_N tokens, so the winners after them are always
        # among the top (wanted + PENALTY_LAST_N) before them. Cutting to those first gives
        # exactly the same tokens, but spares llama.cpp a penalty lookup for every entry of
        # the vocabulary (tens of thousands) per token. (Penalties that raise them: no cut.)
        wanted = 1 if options.temperature <= 0 else options.top_k
        if wanted > 0 and repeat >= 1.0 and freq >= 0 and present >= 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(wanted + PENALTY_LAST_N))
        penalty_args = (PENALTY_LAST_N, repeat, freq, present)
        init = llama_cpp.llama_sampler_init_penalties
        # Some llama.cpp versions also take the vocabulary size first.
        if len(getattr(init, "argtypes", ()) or ()) == 5:
            penalty_args = (llama_cpp.llama_vocab_n_tokens(vocab), *penalty_args)
        add(chain, init(*penalty_args))
    if options.temperature <= 0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if options.top_k > 0:
        add(chain, llama_cpp.llama_sampler_init_top_k(options.top_k))
    if options.top_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_top_p(options.top_p, 1))
    if options.min_p > 0.0:
        add(chain, llama_cpp.llama_sampler_init_min_p(options.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(options.temperature))
    seed = options.seed if options.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED
    add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain


def _logit_bias_sampler(vocab: Any, bias: dict[int, float]) -> Any:
    """llama.cpp's logit-bias sampler: each token's logit plus its bias (-100: never the token)."""
    import llama_cpp

    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    wrong = sorted(t for t in bias if not 0 <= int(t) < n_vocab)
    if wrong:
        raise EngineError(f"logit_bias names token {wrong[0]}, but the model's tokens are 0 to {n_vocab - 1}.")
    entries = (llama_cpp.llama_logit_bias * len(bias))()
    for entry, (token, value) in zip(entries, bias.items()):
        entry.token = int(token)
        # OpenAI: -100 "should result in a ban"; adding -100 to a logit nearly does, -inf does.
        entry.bias = float("-inf") if value <= -100 else float(value)
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), entries)


#: What :func:`build_sampler` returns.
Sampler = ChainSampler | GreedySampler
