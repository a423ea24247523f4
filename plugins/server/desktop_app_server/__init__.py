"""The API server: Parley's models for other programs, through OpenAI's API. A built-in plugin.

``parley serve`` and the window's Settings → Server… (:mod:`desktop_app_server.ui`) start the
same :class:`~desktop_app_server.controller.ServerController`. It binds 127.0.0.1 unless told
otherwise, and beyond loopback it requires an API key. See the README's
"API server" section for the endpoints and the security model.
"""

from __future__ import annotations

from typing import Any

from desktop_app.api import Option, PluginContext, hookimpl

__version__ = "0.1.0"
__all__ = ["state", "PLUGIN"]

PLUGIN = "server"


class State:
    """The plugin's context and its server controller (made on first use)."""

    def __init__(self) -> None:
        self.context: PluginContext | None = None
        self._controller: Any = None

    @property
    def controller(self) -> Any:
        """The :class:`ServerController` of this process."""
        if self._controller is None:
            from desktop_app_server.controller import ServerController

            self._controller = ServerController(self.context)
        return self._controller

    def start(self, context: PluginContext) -> None:
        self.close()
        self.context = context

    def close(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


state = State()


@hookimpl
def app_started(context: PluginContext) -> None:
    """Keep the context."""
    state.start(context)


@hookimpl
def app_closing(context: PluginContext) -> None:
    """Stop the server if it runs."""
    state.close()


@hookimpl
def register_settings(register) -> None:
    """The server's settings."""
    register([
        Option("host", str, "127.0.0.1", "Address to listen on. 127.0.0.1 keeps the server to this computer; "
               "any other address (e.g. 0.0.0.0) requires the API key."),
        Option("port", int, 8080, "Port to listen on.", minimum=0, maximum=65535),
        Option("api_key_required", bool, False, "Require the API key even on 127.0.0.1 (always required "
               "beyond it). `parley serve --rotate-key` makes one."),
        Option("allowed_hosts", list, [], "Host names the server answers to besides localhost and the address "
               "it listens on (e.g. this computer's LAN name); '*' turns the check off."),
        Option("cors_origins", list, [], "Web page origins allowed to call the server from a browser, e.g. "
               "http://localhost:3000; empty = none (CORS off)."),
        Option("max_body_mb", float, 4.0, "Largest request body accepted, in MB.", minimum=0.001, maximum=1000),
        Option("queue_limit", int, 8, "Requests that may wait for the model; more get 429 Too Many Requests.",
               minimum=0, maximum=1000),
        Option("load_models", bool, True, "Load a library model a request names when another is loaded "
               "(else only the loaded model is served)."),
    ])


@hookimpl
def register_commands(subparsers) -> None:
    """`parley serve` and `parley profiles save|list|show|delete`."""
    from desktop_app_server.cli import register

    register(subparsers)


@hookimpl
def register_actions(register) -> None:
    """Settings → Server… (start and stop the server, see its requests) and Plugins → “Save as API profile…”."""

    def open_dialog(window) -> None:
        from desktop_app_server.ui import open_server_dialog

        open_server_dialog(window, state.context, state.controller)

    def save(window) -> None:
        from desktop_app_server.profile_ui import save_profile_dialog

        save_profile_dialog(window, state.context)

    register("&Server…", open_dialog, menu="settings")
    register("Save as API profile…", save)


@hookimpl
def register_services(register) -> None:
    """``profiles.save`` for other plugins (the strategy lab applies its winner with it)."""
    from desktop_app_server.services import save_profile

    register("profiles.save", save_profile)
