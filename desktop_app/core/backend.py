"""The interface of a generation backend: what the app asks of the thing that runs the model.

The built-in :class:`desktop_app.core.engine.Engine` (llama.cpp in this process) is one;
plugins add others with ``register_backends`` (e.g. a client for a model server), and the
setting ``model.backend`` picks one by name. A backend that lacks part of this interface is
refused at start-up with the missing names, and the app uses llama.cpp.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

from desktop_app.core.turn import ChatMessage, GenerationOptions

__all__ = ["Backend", "BackendModel", "missing_backend_members", "writes_together"]


@dataclass(frozen=True)
class BackendModel:
    """A model a plugin backend offers, listed in the model picker beside the library's files.

    ``ref`` is what the app loads: the backend's registered name, a colon, then anything the
    backend understands (e.g. ``remote:gpu-box/llama-3-8b``). ``engine`` names where it runs.
    """

    ref: str
    name: str
    engine: str
    detail: str = ""
    #: What the backend found out about it, e.g. {"context_length": 8192, "tools": True}.
    capabilities: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@runtime_checkable
class Backend(Protocol):
    """What runs the model. Events are :mod:`desktop_app.core.engine`'s TokenEvent, DoneEvent
    and ErrorEvent; one generation runs at a time, and :meth:`cancel` may come from any thread."""

    @property
    def loaded(self) -> bool:
        """Whether a model is loaded."""

    @property
    def model_path(self) -> Path | None:
        """The loaded model's file (or what stands for it), None before a load."""

    @property
    def context_length(self) -> int:
        """The context window in tokens."""

    @property
    def chat_template(self) -> Any:
        """The model's chat template (a ChatTemplate; its ``source`` tells how tools are called), or None."""

    @property
    def cancel_event(self) -> threading.Event:
        """Set by :meth:`cancel` until a generation consumes it."""

    def load(self, path: Path | str, config: Any = None) -> list[str]:
        """Load a model; returns warnings for the user. Raises ModelLoadError when it cannot."""

    def unload(self) -> None:
        """Free the model."""

    def render(self, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text the model gets for ``messages`` (shown in the prompt inspector)."""

    def stream_chat(self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None,
                    tools: list[dict[str, Any]] | None = None, keep_last: int = 1) -> Iterator[Any]:
        """Stream one answer; the last event is a DoneEvent or an ErrorEvent."""

    def set_adapters(self, adapters: Sequence[Any]) -> bool:
        """Put these LoRA adapters on the model (an empty list: none); True when that changed anything."""

    def load_adapter(self, path: Path | str) -> None:
        """Check and read a LoRA adapter; EngineError when the backend cannot use it."""

    def cancel(self) -> None:
        """Stop the current or next generation."""

    def reset_cancel(self) -> None:
        """Forget a Stop that no generation consumed."""

    def gpu_offload_supported(self) -> bool:
        """Whether this backend can put layers on a GPU."""

    # Optional, not checked: ``models() -> list[BackendModel]``, the models this backend offers
    # (answered at once from what it knows: it is asked on the GUI thread),
    # ``describe() -> str``, a line about where the loaded model runs, and for a backend that
    # writes several answers at once: ``parallel`` (how many), ``answers(messages, options_list,
    # tools, keep_last, cancel=, adapters=)`` and ``stream_chat(..., cancel=, adapters=)`` safe
    # to call from several threads (see desktop_app.core.engine.Engine).


def writes_together(backend: Any) -> bool:
    """Whether ``backend`` has a model loaded and writes answers asked from several threads in
    one batch, each with its own Stop and adapters (the optional ``parallel`` and ``answers``)."""
    return bool(backend.loaded) and int(getattr(backend, "parallel", 1) or 1) > 1 and hasattr(backend, "answers")


def missing_backend_members(backend: Any) -> list[str]:
    """The names of :class:`Backend` that ``backend`` lacks (empty when it has them all)."""
    wanted = [name for name in dir(Backend) if not name.startswith("_")]
    return [name for name in wanted if not hasattr(backend, name)]
