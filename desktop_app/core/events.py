"""What a backend's ``stream_chat`` yields: pieces of the answer, then its end or an error.

Every backend (the local engine, a remote engine, a plugin's) speaks in these events, so the
chat, the tool loop and the stats work the same whichever runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DoneEvent", "ErrorEvent", "Event", "GenerationStats", "TokenEvent"]


@dataclass
class GenerationStats:
    """Numbers about one answer. Times are seconds; ``prompt_tokens_evaluated`` excludes cache hits."""

    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0
    generated_tokens: int = 0
    time_to_first_token: float = 0.0
    tokens_per_second: float = 0.0
    total_time: float = 0.0
    dropped_messages: int = 0
    context_length: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the stats as JSON-ready data."""
        return dict(self.__dict__)


@dataclass
class TokenEvent:
    """A piece of the answer's text, in order."""

    text: str


@dataclass
class DoneEvent:
    """The answer is finished. ``finish_reason``: stop, length, cancelled."""

    text: str
    finish_reason: str
    stats: GenerationStats
    prompt: str = ""


@dataclass
class ErrorEvent:
    """Generation failed; ``text`` is what was generated before the failure."""

    message: str
    text: str = ""


Event = TokenEvent | DoneEvent | ErrorEvent
