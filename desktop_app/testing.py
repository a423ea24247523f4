"""Helpers for testing Parley and its plugins without loading a model.

:class:`FakeEngine` stands in for :class:`desktop_app.core.engine.Engine` in the turn
pipeline: queue the replies it should give with :meth:`FakeEngine.enqueue`, run turns, then
look at what it was asked in :attr:`FakeEngine.history`. Use the real model for anything
about what a model actually writes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from desktop_app.core.chat_template import ChatTemplate
from desktop_app.core.engine import DoneEvent, ErrorEvent, GenerationStats, TokenEvent
from desktop_app.core.turn import ChatMessage, GenerationOptions

__all__ = ["FakeEngine", "FakeRequest"]


@dataclass
class FakeRequest:
    """One call to :meth:`FakeEngine.stream_chat`: what the pipeline asked for."""

    messages: list[ChatMessage]
    options: GenerationOptions
    tools: list[dict[str, Any]] | None
    prompt: str = ""


@dataclass
class FakeEngine:
    """A scripted engine: each generation streams the next queued reply word by word.

    A queued reply may also be a callable ``reply(request) -> str`` (to answer from what was
    asked) or an exception instance (the generation fails with it). Stop strings end a reply
    as in the real engine. ``stop_after`` (a number of words) presses Stop in the middle of
    the next reply, as a user would.
    """

    template_source: str | None = None
    replies: list[Any] = field(default_factory=list)
    history: list[FakeRequest] = field(default_factory=list)
    model_path: Path | None = None
    stop_after: int | None = None

    def __post_init__(self) -> None:
        self._cancel = threading.Event()
        self.chat_template = ChatTemplate(self.template_source)

    def enqueue(self, *replies: str | Callable[[FakeRequest], str] | BaseException) -> "FakeEngine":
        """Queue replies for the next generations, in order."""
        self.replies.extend(replies)
        return self

    # The Engine interface the app uses (so it can also stand in as a backend).
    @property
    def loaded(self) -> bool:
        """Always True: the fake model is always there."""
        return True

    @staticmethod
    def gpu_offload_supported() -> bool:
        """The fake model needs no GPU."""
        return False

    def load(self, path: Path | str, config: Any = None) -> list[str]:
        """Remember the path; nothing is read."""
        self.model_path = Path(path)
        return []

    def unload(self) -> None:
        """Nothing to free."""

    def load_adapter(self, path: Path | str) -> None:
        """Accept any adapter file that exists."""
        if not Path(path).exists():
            from desktop_app.core.errors import EngineError

            raise EngineError(f"The LoRA adapter {path} does not exist.")

    def set_adapters(self, adapters: Sequence[Any]) -> bool:
        """Remember the LoRA adapters asked for (the fake model has no weights to change)."""
        wanted = [(a.path, a.scale) if hasattr(a, "path") else tuple(a) for a in adapters]
        for path, _ in wanted:
            self.load_adapter(path)
        changed = wanted != getattr(self, "adapters", [])
        self.adapters = wanted
        return changed

    @property
    def context_length(self) -> int:
        """A generous context window."""
        return 8192

    @property
    def cancel_event(self) -> threading.Event:
        """Set by :meth:`cancel` until a generation consumes it."""
        return self._cancel

    def cancel(self) -> None:
        """Stop the current or next generation."""
        self._cancel.set()

    def reset_cancel(self) -> None:
        """Forget a Stop nothing consumed."""
        self._cancel.clear()

    def render(self, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        """Render with the chat template given at construction (ChatML when none)."""
        return self.chat_template.render([m.as_dict() for m in messages], tools=tools)

    def stream_chat(self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None,
                    tools: list[dict[str, Any]] | None = None, keep_last: int = 1) -> Iterator[Any]:
        """Stream the next queued reply; fails clearly when the script has run out."""
        options = options or GenerationOptions()
        request = FakeRequest(list(messages), options, tools, self.render(messages, tools))
        self.history.append(request)
        if not self.replies:
            yield ErrorEvent("FakeEngine has no reply queued for this generation.")
            return
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            yield ErrorEvent(str(reply))
            return
        text = reply(request) if callable(reply) else reply
        ends = [i for i in (text.find(s) for s in options.stop if s) if i != -1]
        if ends:
            text = text[:min(ends)]
        stats = GenerationStats(prompt_tokens=len(request.prompt.split()))
        sent = ""
        stop_after, self.stop_after = self.stop_after, None
        for i, word in enumerate(text.split(" ")):
            if i == stop_after:
                self._cancel.set()
            if self._cancel.is_set():
                self._cancel.clear()
                yield DoneEvent(sent, "cancelled", stats, request.prompt)
                return
            piece = word if i == 0 else " " + word
            sent += piece
            stats.generated_tokens += 1
            yield TokenEvent(piece)
        yield DoneEvent(sent, "stop", stats, request.prompt)
