"""Start and stop the API server: uvicorn on its own thread, with its own event loop.

The same controller serves ``parley serve`` and the window's Settings → Server… (``ui.py``). It
touches no Qt. :meth:`ServerController.start` returns once the port is bound and uvicorn
serves (milliseconds), but the first start also imports FastAPI and uvicorn (about 0.3 s), so
the window should call it through ``run_task``; :meth:`~ServerController.stop` waits up to a
couple of seconds for open connections.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from typing import Any

from desktop_app.api import ParleyError, PluginContext

from desktop_app_server.gateway import Gateway, LogEntry, ServerConfig
from desktop_app_server.security import KeyStore, is_loopback

__all__ = ["ServerController", "ServerError", "config_from_settings"]


class ServerError(ParleyError):
    """The server cannot start; the message says why and what to do."""


def config_from_settings(context: PluginContext, host: str | None = None, port: int | None = None) -> ServerConfig:
    """The server's configuration from the plugin's settings (``host``/``port`` override them)."""
    s = context.settings.get
    host = host or s("host")
    return ServerConfig(
        host=host, port=s("port") if port is None else int(port),
        key_required=bool(s("api_key_required")) or not is_loopback(host),
        allowed_hosts=tuple(s("allowed_hosts") or ()), cors_origins=tuple(s("cors_origins") or ()),
        max_body_bytes=int(s("max_body_mb") * 1_000_000), queue_limit=int(s("queue_limit")),
        load_models=bool(s("load_models")))


class ServerController:
    """One API server: :meth:`start`, :meth:`stop`, :attr:`status`, :attr:`request_log`.

    A key is required when the settings ask for one or the address is beyond loopback; then
    one must exist (``keys.create()`` makes it; :meth:`start` refuses otherwise, so a server
    reachable from the network is never open).
    """

    def __init__(self, context: PluginContext):
        self.context = context
        self.keys = KeyStore(context.data_dir / "server")
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._gateway: Gateway | None = None
        self._url = ""
        self._error = ""

    @property
    def is_running(self) -> bool:
        """Whether the server is serving."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._server is not None and self._server.started

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` while running, else ""."""
        return self._url if self.is_running else ""

    @property
    def gateway(self) -> Gateway | None:
        """The running server's gateway (its queue and request log)."""
        return self._gateway

    @property
    def status(self) -> dict[str, Any]:
        """What the server is doing, for a status line."""
        gateway = self._gateway
        return {"running": self.is_running, "url": self.url, "error": self._error,
                "key_required": bool(gateway and gateway.config.key_required),
                "waiting": gateway.waiting if gateway and self.is_running else 0,
                "busy": bool(gateway and self.is_running and gateway.busy),
                "served": gateway.log.served if gateway else 0}

    @property
    def request_log(self) -> list[LogEntry]:
        """The recent requests, oldest first."""
        return self._gateway.log.entries() if self._gateway else []

    def start(self, host: str | None = None, port: int | None = None, *,
              config: ServerConfig | None = None, timeout: float = 30.0) -> str:
        """Bind and start serving in the background; returns ``http://HOST:PORT``.

        ``port`` 0 picks a free port. Raises :class:`ServerError` (port taken, key missing...).
        """
        import uvicorn

        from desktop_app_server.app import create_app

        with self._lock:
            if self.is_running:
                raise ServerError(f"The server is already running on {self._url}.")
            config = config or config_from_settings(self.context, host, port)
            if host is not None or port is not None:
                config = replace(config, host=host or config.host, port=config.port if port is None else port)
            if not is_loopback(config.host) and not config.key_required:
                config = replace(config, key_required=True)
            if config.key_required and not self.keys.exists:
                raise ServerError("An API key is required to serve beyond this computer (or the settings ask "
                                  "for one), and none has been made: run `parley serve --rotate-key`, or use "
                                  "“New key…” in the window's Settings → Server….")
            sock = _bind(config.host, config.port)
            bound_port = sock.getsockname()[1]
            config = replace(config, port=bound_port)
            gateway = Gateway(self.context, config)
            app = create_app(gateway, self.keys)
            server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                                   timeout_graceful_shutdown=2, ws="none"))
            thread = threading.Thread(target=self._serve, args=(server, sock), name="parley-api-server", daemon=True)
            self._server, self._thread, self._gateway, self._error = server, thread, gateway, ""
            thread.start()
            deadline = time.monotonic() + timeout
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not server.started:
                server.should_exit = True
                sock.close()
                raise ServerError(f"The server did not start: {self._error or 'it took too long'}.")
            shown = f"[{config.host}]" if ":" in config.host else config.host
            self._url = f"http://{shown}:{bound_port}"
            return self._url

    def _serve(self, server: Any, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])  # its own event loop, on this thread
        except BaseException as exc:  # reported by start() and status
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            sock.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: running answers are stopped, waiting requests dropped, the port freed."""
        with self._lock:
            server, thread, gateway = self._server, self._thread, self._gateway
            if server is None:
                return
            server.should_exit = True
            if gateway is not None:
                gateway.stop_all()
                gateway.close(timeout=0)
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
            if gateway is not None:
                gateway.close(timeout)
            self._server = self._thread = None
            self._url = ""


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so a taken port is reported to the caller at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise ServerError(f"Port {port} on {host} is in use (by another program, or another Parley); "
                              "pick another port.") from None
        raise ServerError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    sock.setblocking(False)
    return sock
