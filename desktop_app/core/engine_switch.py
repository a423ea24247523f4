"""One engine for the app, several behind it: the local llama.cpp engine and the plugins' backends.

The rest of Parley holds one object as "the engine". :class:`EngineSwitch` is that object: it
passes every call to the backend of the loaded model, and :meth:`EngineSwitch.load` picks the
backend from the model's reference. A plugin backend named ``remote`` owns the references
``remote:…`` (the models its :meth:`models` lists, shown in the model picker beside the
library's files); anything else, a library name or a file's path, goes to the default backend
(llama.cpp, or the one the setting ``model.backend`` names).

Switching to another backend's model unloads the previous backend's model first: one model is
loaded at a time, whichever machine runs it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from desktop_app.core.backend import BackendModel, missing_backend_members
from desktop_app.core.errors import ModelLoadError
from desktop_app.core.turn import ChatMessage, GenerationOptions

__all__ = ["EngineSwitch", "reference_backend"]

log = logging.getLogger(__name__)


def reference_backend(ref: str, names: Sequence[str]) -> str | None:
    """The backend among ``names`` that owns the model reference ``ref`` (``NAME:…``), or None.

    Names of one letter never match, so a Windows path such as ``C:\\models\\x.gguf`` stays a file.
    """
    head, sep, _ = str(ref).partition(":")
    if sep and len(head) > 1 and head in names:
        return head
    return None


class EngineSwitch:
    """A :class:`~desktop_app.core.backend.Backend` that runs each model on the backend that owns it.

    ``factories`` maps a plugin backend's name to ``(plugin, factory)``; each backend is made
    on first use, with ``factory(settings)``. Attributes beyond the Backend interface (such as
    ``tokenize``) come from the backend in use.
    """

    def __init__(self, default: Any, factories: dict[str, tuple[str, Callable[..., Any]]], settings: Any):
        self._default = default
        self._active = default
        self._factories = dict(factories)
        self._settings = settings
        self._made: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()
        #: The load options each backend's model was loaded with (to load it again after a failed switch).
        self._configs: dict[int, Any] = {}

    # -- which backend ----------------------------------------------------------------------
    @property
    def active(self) -> Any:
        """The backend of the loaded model (the default one before any load)."""
        return self._active

    @property
    def backend_names(self) -> list[str]:
        """The plugin backends that own model references."""
        return sorted(self._factories)

    def owns(self, ref: Any) -> bool:
        """Whether ``ref`` names a model of a plugin backend (not a file of the library)."""
        return isinstance(ref, str) and reference_backend(ref, self._factories) is not None

    def backend(self, name: str) -> Any:
        """The plugin backend ``name``, made now if it was not; raises ModelLoadError when it cannot start."""
        with self._lock:
            if name in self._made:
                return self._made[name]
            if name in self._failed:
                raise ModelLoadError(self._failed[name])
            plugin, factory = self._factories[name]
            try:
                backend = factory(self._settings)
            except Exception as exc:
                log.exception("backend %s failed to start", name)
                self._failed[name] = f"The backend {name!r} of plugin {plugin} failed to start: {exc}"
                raise ModelLoadError(self._failed[name]) from None
            missing = missing_backend_members(backend)
            if missing:
                self._failed[name] = (f"The backend {name!r} of plugin {plugin} lacks {', '.join(missing)} "
                                      "(see desktop_app.api.Backend).")
                raise ModelLoadError(self._failed[name])
            self._made[name] = backend
            return backend

    def catalog(self) -> list[BackendModel]:
        """The models the plugin backends offer (from what they know; no backend waits on a network here)."""
        found: list[BackendModel] = []
        for name in self.backend_names:
            try:
                backend = self.backend(name)
                listed = backend.models() if hasattr(backend, "models") else []
            except Exception as exc:  # a backend that cannot list its models offers none
                log.warning("backend %s could not list its models: %s", name, exc)
                continue
            found.extend(m for m in listed if isinstance(m, BackendModel) and self.owns(m.ref))
        return found

    def describe(self) -> str:
        """A line about where the loaded model runs ("" for the default backend)."""
        describe = getattr(self._active, "describe", None) if self._active is not self._default else None
        return describe() if callable(describe) else ""

    # -- the Backend interface ----------------------------------------------------------------
    def load(self, path: Path | str, config: Any = None) -> list[str]:
        """Load ``path`` (a file, a library name, or a backend's model reference) on its backend."""
        name = reference_backend(str(path), self._factories) if isinstance(path, str) else None
        target = self.backend(name) if name else self._default
        if target is self._active:
            warnings = target.load(path, config)  # a backend keeps its model when a load fails
            self._configs[id(target)] = config
            return warnings
        previous = self._active
        before = (previous.model_path, self._configs.get(id(previous))) if previous.loaded else None
        previous.unload()  # one model at a time, wherever it runs
        self._active = target
        try:
            warnings = target.load(path, config)
        except Exception:
            # As a failed load on one backend does: the model that was loaded is loaded again.
            self._active = previous
            if before is not None:
                try:
                    previous.load(before[0], before[1])
                except Exception:
                    log.exception("the previous model %s could not be loaded again", before[0])
            raise
        self._configs[id(target)] = config
        return warnings

    def unload(self) -> None:
        self._active.unload()

    @property
    def loaded(self) -> bool:
        return bool(self._active.loaded)

    @property
    def model_path(self) -> Path | None:
        return self._active.model_path

    @property
    def context_length(self) -> int:
        return self._active.context_length

    @property
    def chat_template(self) -> Any:
        return self._active.chat_template

    @property
    def cancel_event(self) -> threading.Event:
        return self._active.cancel_event

    @property
    def load_plan(self) -> Any:
        """How the loaded model's context and GPU layers were chosen (None on a backend that does not say)."""
        return getattr(self._active, "load_plan", None)

    @property
    def fit_explanation(self) -> str:
        """Why the loaded model has its context and GPU layers ("" on a backend that does not say)."""
        return getattr(self._active, "fit_explanation", "") or ""

    def render(self, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        return self._active.render(messages, tools)

    def stream_chat(self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None,
                    tools: list[dict[str, Any]] | None = None, keep_last: int = 1, **more: Any) -> Iterator[Any]:
        # ``cancel`` and ``adapters`` go only to a backend that writes several answers at once.
        return self._active.stream_chat(messages, options, tools, keep_last, **more)

    def set_adapters(self, adapters: Sequence[Any]) -> bool:
        return self._active.set_adapters(adapters)

    def load_adapter(self, path: Path | str) -> None:
        self._active.load_adapter(path)

    def cancel(self) -> None:
        self._active.cancel()

    def reset_cancel(self) -> None:
        self._active.reset_cancel()

    def gpu_offload_supported(self) -> bool:
        return self._active.gpu_offload_supported()

    def __getattr__(self, name: str) -> Any:
        # Only for names this class lacks (tokenize, count_tokens, fit_messages…): the backend's own.
        if name.startswith("__") or name in _OWN:  # its own, before __init__ set them
            raise AttributeError(name)
        return getattr(self._active, name)


#: EngineSwitch's own attributes, never looked up on the backend.
_OWN = frozenset({"_default", "_active", "_factories", "_settings", "_made", "_failed", "_lock", "_configs"})

