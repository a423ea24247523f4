"""Remote engines: models on other machines' servers, in the model picker beside local files. A built-in plugin.

Any OpenAI-compatible server can be an engine: llama.cpp's ``llama-server`` (with which
everything works as on this machine, LoRA adapters included), vLLM, Ollama, LM Studio, or
another Parley's API server. Add one in Settings → Engines… or with
``parley engines add NAME URL [--api-key-env VAR]``; its API key goes to the system keyring.
Its models are then listed in the picker as ``MODEL · ENGINE``. See
:mod:`desktop_app_remote.backend` for how answers are asked for.
"""

from __future__ import annotations

from typing import Any

from desktop_app.api import ParleyError, PluginContext, hookimpl

__version__ = "0.1.0"
__all__ = ["state"]

PLUGIN = "remote"


class State:
    """The plugin's context, its engines file and its backend (each made on first use)."""

    def __init__(self) -> None:
        self.context: PluginContext | None = None
        self._store: Any = None
        self.backend: Any = None

    @property
    def store(self) -> Any:
        """The :class:`~desktop_app_remote.engines.EngineStore`."""
        if self._store is None:
            if self.context is None:
                raise ParleyError("The remote engines plugin has not started yet.")
            from desktop_app_remote.engines import EngineStore

            self._store = EngineStore.of(self.context)
        return self._store

    def make_backend(self, settings: Any = None) -> Any:
        """A backend for the app's engine (the factory registered as ``remote``); the latest is
        kept as ``backend``, for the command line and the Engines dialog."""
        from desktop_app_remote.backend import RemoteBackend

        self.backend = RemoteBackend(lambda: self.store)
        return self.backend

    def current_backend(self) -> Any:
        """The backend made last (a new one when the app made none yet)."""
        return self.backend if self.backend is not None else self.make_backend()

    def start(self, context: PluginContext) -> None:
        self.context, self._store = context, None


state = State()


@hookimpl
def app_started(context: PluginContext) -> None:
    """Keep the context."""
    state.start(context)


@hookimpl
def register_backends(register) -> None:
    """The ``remote`` backend: it owns the model references ``remote:ENGINE/MODEL``."""
    register("remote", state.make_backend)


@hookimpl
def register_commands(subparsers) -> None:
    """`parley engines add|list|check|remove`."""
    from desktop_app_remote.cli import register

    register(subparsers)


@hookimpl
def register_actions(register) -> None:
    """Settings → Engines…: add, check and remove remote engines."""

    def open_dialog(window) -> None:
        from desktop_app_remote.ui import open_engines_dialog

        open_engines_dialog(window, state)

    register("&Engines…", open_dialog, menu="settings")
