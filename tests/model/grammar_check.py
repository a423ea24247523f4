"""Ask llama.cpp's own grammar sampler whether a grammar admits a text, token by token.

Sampling shows what a model *happens* to write under a grammar; this shows what the grammar
*allows*, whatever the seed or the CPU, which is what a test of the grammar should check.
"""

from __future__ import annotations

import ctypes
import math


def grammar_admits(engine, grammar: str, text: str) -> bool:
    """Whether ``grammar`` accepts all of ``text`` and may end right after it."""
    import llama_cpp

    loaded = engine._require()
    sampler = llama_cpp.llama_sampler_init_grammar(loaded.vocab, grammar.encode("utf-8"), b"root")
    assert sampler, "the grammar does not compile"
    try:
        for token in loaded.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False):
            if not _allowed(sampler, token):
                return False
            llama_cpp.llama_sampler_accept(sampler, token)
        return _allowed(sampler, llama_cpp.llama_vocab_eos(loaded.vocab))
    finally:
        llama_cpp.llama_sampler_free(sampler)


def _allowed(sampler, token: int) -> bool:
    """Whether the grammar, in its current state, lets ``token`` come next."""
    import llama_cpp

    data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
    candidates = llama_cpp.llama_token_data_array(data, 1, -1, False)
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
    return not math.isinf(data[0].logit)
