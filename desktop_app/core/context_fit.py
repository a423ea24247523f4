"""Fitting a conversation into a model's context window, for any backend.

The local engine and the remote one drop the same messages, in the same order, so a long
conversation reads the same whichever machine answers it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence, TypeVar

from desktop_app.core.errors import EngineError
from desktop_app.core.turn import ChatMessage

__all__ = ["fit_to_context"]

T = TypeVar("T", bound=Sequence)


def fit_to_context(messages: Sequence[ChatMessage], render: Callable[[list[ChatMessage]], str],
                   tokenize: Callable[[str], T], n_ctx: int, reserve: int,
                   keep_last: int = 1) -> tuple[list[ChatMessage], str, T, int]:
    """Fit ``messages`` into ``n_ctx`` tokens, leaving ``reserve`` tokens for the answer.

    Keeps the leading system message and the newest ``keep_last`` messages (the question,
    and this turn's tool calls and results, which make no sense apart); drops the oldest
    others first; as a last resort shortens the middle of the longest remaining message.
    ``tokenize`` returns the prompt's tokens (only their number is used here).
    Returns (messages kept, rendered prompt, its tokens, how many messages were dropped).
    """
    budget = max(16, n_ctx - reserve)
    kept = list(messages)
    dropped = 0
    while True:
        prompt = render(kept)
        tokens = tokenize(prompt)
        if len(tokens) <= budget:
            return kept, prompt, tokens, dropped
        first = 1 if kept and kept[0].role == "system" else 0
        # Drop whole older messages while more than the newest one remains.
        if len(kept) - first > max(1, keep_last):
            del kept[first]
            dropped += 1
            continue
        # One system prompt and one huge message: shorten the longer of the two.
        longest = max(range(len(kept)), key=lambda i: len(kept[i].content))
        text = kept[longest].content
        excess = len(tokens) - budget
        # Tokens are at least one character, so cutting 'excess' tokens' worth of
        # characters (plus a margin) always converges.
        cut = max(excess * 4, len(text) // 4, 16)
        if cut >= len(text):
            kept[longest] = replace(kept[longest], content="")
            if all(not m.content for m in kept):
                raise EngineError("The context window is too small for even an empty prompt.")
            continue
        half = (len(text) - cut) // 2
        kept[longest] = replace(kept[longest], content=text[:half] + " … " + text[len(text) - half:])
