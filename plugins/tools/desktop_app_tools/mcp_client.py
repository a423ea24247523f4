"""Model Context Protocol (MCP) servers as tools: read ``mcp.json``, keep the servers connected.

:class:`McpManager` owns one background thread running one asyncio event loop. Every server
listed in ``mcp.json`` gets a connection task on that loop; a tool call from any thread is
handed to the loop and its answer waited for. A server that cannot start, exits, hangs or
crashes only changes its :class:`ServerStatus` (with a message a person can act on): nothing
from the SDK escapes the loop, and the next call to one of its tools starts it again.

The config file has the format other desktop apps use::

    {"mcpServers": {
        "time":   {"command": "uvx", "args": ["mcp-server-time"], "env": {"K": "V"}, "cwd": "..."},
        "remote": {"url": "http://127.0.0.1:8000/mcp", "headers": {"Authorization": "Bearer ..."}}
    }}

``"type"`` (``stdio``, ``http``, ``streamable-http``, ``streamableHttp``),
``"disabled": true`` and ``"startup_timeout": SECONDS`` (for a server that is slow to start,
e.g. one that downloads itself first) are accepted too. The ``mcp`` SDK is imported only when
a server starts, so importing this module costs nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import copy
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop_app.api import ParleyError, Tool, public_schema

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "McpError",
    "McpManager",
    "STATES",
    "ServerStatus",
    "sanitize_name",
]

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 60.0
"""Seconds a server has to start and list its tools before it is reported as failed (a cold
``uvx``/``npx`` start on a slow machine takes tens of seconds; ``startup_timeout`` per server
changes it)."""

DEFAULT_CALL_TIMEOUT = 30.0
"""Seconds one tool call may take once its server is ready ((re)starting it has the server's
startup timeout on top)."""

STATES = ("stopped", "starting", "ready", "failed", "crashed", "disabled")

_HTTP_TYPES = {"http", "streamable-http", "streamablehttp", "streamable_http"}
_MAX_LOG_BYTES = 2_000_000  # a log is cut to its last quarter when a server starts past this size
_MAX_TOOL_PAGES = 100  # a server whose tools/list never stops paginating cannot hang a start
_CONNECTION_CLOSED = -32000  # the JSON-RPC code the SDK gives calls cut off by a closed connection
_EVENT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[parley\] ")


class McpError(ParleyError):
    """An MCP server or tool call failed; the message says which and what to do about it."""


@dataclass
class ServerStatus:
    """What the settings page shows for one configured server.

    ``state`` is one of ``stopped``, ``starting``, ``ready``, ``failed`` (never got ready),
    ``crashed`` (was ready, then went away), ``disabled``. ``message`` is a short explanation:
    ``"3 tools"`` when ready, why it failed otherwise. ``tools`` counts the tools known from the
    last successful listing; ``pid`` is the server process while one runs (stdio only).
    """

    name: str
    transport: str
    state: str
    message: str
    tools: int
    log_path: Path | None
    pid: int | None = None


def sanitize_name(name: str) -> str:
    """``name`` reduced to letters, digits, ``_`` and ``-`` (it becomes a tool-name prefix)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", name.strip()).strip("_")
    return cleaned[:64] or "server"


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class _ServerConfig:
    """One entry of ``mcp.json``, validated. Frozen so that "changed" is plain equality."""

    name: str
    transport: str  # "stdio" or "http"
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    disabled: bool = False
    startup_timeout: float | None = None  # seconds to start; None: the manager's connect timeout
    error: str = ""  # why this entry cannot be used; shown as a failed server

    def describe(self) -> str:
        """The command line or URL, for the log."""
        if self.transport == "http":
            return self.url
        return " ".join([self.command, *self.args])


def _string_map(value: Any, what: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """A JSON object of scalars as sorted (key, text) pairs; anything else is a problem."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        problems.append(f'"{what}" must be an object of names to text')
        return ()
    pairs = []
    for key, item in value.items():
        if isinstance(item, bool):
            item = "true" if item else "false"  # what a shell script testing the variable expects
        elif isinstance(item, (int, float)):
            item = str(item)
        elif not isinstance(item, str):
            problems.append(f'"{what}.{key}" must be text')
            continue
        pairs.append((str(key), item))
    return tuple(sorted(pairs))


def _parse_entry(name: str, raw: Any, base: Path) -> _ServerConfig:
    """One server entry; problems end up in ``error`` rather than raising."""
    if not isinstance(raw, dict):
        return _ServerConfig(name, "stdio", error="its entry must be a JSON object")
    problems: list[str] = []
    kind = str(raw.get("type") or "").strip().lower()
    has_command, has_url = bool(raw.get("command")), bool(raw.get("url"))
    if kind == "sse":
        problems.append('the "sse" transport is not supported; use the server\'s streamable HTTP URL')
    elif kind and kind != "stdio" and kind not in _HTTP_TYPES:
        problems.append(f'unknown "type" {kind!r} (use "stdio" or "http")')
    if not kind:
        if has_command and has_url:
            problems.append('it has both "command" and "url"; add "type": "stdio" or "http"')
        kind = "http" if has_url and not has_command else "stdio"
    transport = "http" if kind in _HTTP_TYPES or kind == "sse" else "stdio"

    command, args, cwd, url = "", (), None, ""
    if transport == "stdio":
        command = raw.get("command")
        if not isinstance(command, str) or not command.strip():
            problems.append('"command" is missing (the program that runs the server)')
            command = ""
        command = os.path.expanduser(command.strip())
        raw_args = raw.get("args", [])
        if not isinstance(raw_args, list) or not all(isinstance(a, (str, int, float)) for a in raw_args):
            problems.append('"args" must be a list of text')
            raw_args = []
        args = tuple(str(a) for a in raw_args)
        if raw.get("cwd") not in (None, ""):
            if isinstance(raw["cwd"], str):
                # Relative folders are taken from where mcp.json is, not from wherever Parley runs.
                cwd = str((base / os.path.expanduser(raw["cwd"])).resolve())
            else:
                problems.append('"cwd" must be a folder path')
    else:
        url = raw.get("url")
        if not isinstance(url, str) or not url.strip():
            problems.append('"url" is missing')
            url = ""
        elif not re.match(r"^https?://", url.strip(), re.I):
            problems.append(f'"url" must start with http:// or https:// (got {url!r})')
        url = url.strip()
    env = _string_map(raw.get("env"), "env", problems)
    headers = _string_map(raw.get("headers"), "headers", problems)
    disabled = raw.get("disabled") is True or raw.get("enabled") is False
    startup_timeout = raw.get("startup_timeout")
    if startup_timeout is not None and (isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float))
                                        or not 0 < startup_timeout <= 3600):
        problems.append('"startup_timeout" must be a number of seconds between 0 and 3600')
        startup_timeout = None
    return _ServerConfig(
        name, transport, command=command, args=args, env=env, cwd=cwd, url=url,
        headers=headers, disabled=disabled,
        startup_timeout=float(startup_timeout) if startup_timeout is not None else None,
        error="; ".join(problems),
    )


def _read_config(path: Path) -> tuple[list[_ServerConfig] | None, list[str]]:
    """The servers in ``path`` and the problems found. ``None`` servers: the file is unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []  # no file simply means no servers
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{path} cannot be read: {exc}"]
    if not text.strip():
        return [], []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]
    if not isinstance(data, dict):
        return None, [f'{path} must contain a JSON object with "mcpServers"']
    # "servers" is the spelling some other apps use for the same table.
    table = data.get("mcpServers", data.get("servers"))
    if table is None:
        return [], [f'{path} has no "mcpServers" object, so no server is configured']
    if not isinstance(table, dict):
        return None, [f'"mcpServers" in {path} must be an object of server names to entries']
    servers, errors, taken = [], [], set()
    for original, raw in table.items():
        name = sanitize_name(str(original))
        if name in taken:
            base_name, n = name, 2
            while f"{base_name}_{n}" in taken:
                n += 1
            name = f"{base_name}_{n}"
            errors.append(f"server {original!r}: another server has the same name once cleaned up; "
                          f"it is called {name!r}")
        elif name != original:
            errors.append(f"server {original!r} is called {name!r}: names may only use letters, "
                          "digits, _ and -")
        taken.add(name)
        entry = _parse_entry(name, raw, path.parent)
        if entry.error:
            errors.append(f"server {original!r}: {entry.error}")
        servers.append(entry)
    return servers, errors


# --------------------------------------------------------------------------------------------
# Per-server state


@dataclass
class _ToolInfo:
    """A tool as the server listed it, with the name Parley shows for it."""

    original: str
    public: str
    description: str
    schema: dict[str, Any]


@dataclass(eq=False)  # identity semantics: connections live in sets
class _Connection:
    """One attempt to run a server: from spawn/connect to teardown. Lives on the loop thread."""

    reason: str
    task: asyncio.Task[None] | None = None
    client: Any = None  # the mcp.Client while ready
    process: Any = None  # the anyio Process of a stdio server, when the SDK lets us see it
    scope: Any = None  # anyio CancelScope around the whole connection
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # ready, or given up
    ready: bool = False
    stopping: bool = False
    timed_out: bool = False
    lost: str = ""  # why the connection went away while ready (empty: it did not)
    log_offset: int = 0  # where this attempt's part of the log starts
    http_error: str = ""  # the last HTTP error status seen, for a better message


@dataclass(eq=False)
class _Server:
    """A configured server: its config, public status and last known tools."""

    config: _ServerConfig
    log_path: Path
    state: str = "stopped"
    message: str = ""
    pid: int | None = None
    tools: list[_ToolInfo] = field(default_factory=list)
    conn: _Connection | None = None
    restarting: bool = False  # the current connection ends only to be replaced at once

    def status(self) -> ServerStatus:
        return ServerStatus(self.config.name, self.config.transport, self.state, self.message,
                            len(self.tools), self.log_path, self.pid)


# Process groups of stdio servers still alive, across managers, so that an interpreter exit
# without stop() still takes them down.
_LIVE_GROUPS: dict[int, tuple[int, str]] = {}  # pid -> (id of its manager, server name)
_LIVE_LOCK = threading.Lock()


def _kill_group(pid: int) -> None:
    """SIGKILL a server's process group (each server is started in its own session)."""
    try:
        if sys.platform == "win32":
            os.kill(pid, signal.SIGTERM)  # TerminateProcess
        else:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


@atexit.register
def _kill_all_groups() -> None:
    with _LIVE_LOCK:
        pids = list(_LIVE_GROUPS)
        _LIVE_GROUPS.clear()
    for pid in pids:
        _kill_group(pid)


# --------------------------------------------------------------------------------------------
# Small helpers around the SDK


class _WatchedReadStream:
    """The transport's read stream, reporting when it ends.

    The end of the stream is how a dead stdio server shows itself (its stdout closes), even
    when no request is in flight; the SDK itself has no hook for it.
    """

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        # The dispatcher reads this duck-typed attribute after each message.
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        import anyio

        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


def _process_of(transport: Any) -> Any:
    """The process a suspended ``stdio_client`` generator spawned, or None.

    The SDK keeps the process in a local of its generator; reading it from the suspended
    frame is the only way to learn the pid (for the status, the crash's exit code, and a
    last-resort kill). Best effort: any SDK change just yields None.
    """
    try:
        frame = transport.gen.ag_frame
        process = frame.f_locals.get("process") if frame is not None else None
    except AttributeError:
        return None
    return process if hasattr(process, "pid") and hasattr(process, "returncode") else None


@asynccontextmanager
async def _watched(transport: Any, conn: _Connection, on_end: Callable[[], None],
                   on_spawn: Callable[[Any], None]):
    """Enter ``transport``; hand out its streams with the read side watched for its end."""
    async with transport as (read_stream, write_stream):
        conn.process = _process_of(transport)
        if conn.process is not None:
            on_spawn(conn.process)
        yield _WatchedReadStream(read_stream, on_end), write_stream


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    # Duck-typed: on Python 3.10 the groups come from the ``exceptiongroup`` backport.
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, (list, tuple)) and inner:
        for each in inner:
            yield from _leaves(each)
    else:
        yield exc


def _is_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection itself broke (not just one request)."""
    import anyio

    broken = (OSError, EOFError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)
    return isinstance(exc, broken) or type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore")


def _exit_text(returncode: int | None) -> str:
    if returncode is None:
        return ""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _result_text(result: Any) -> str:
    """The text of a tool result: text parts joined, else structured content as JSON."""
    texts, others = [], []
    for part in result.content or []:
        kind = getattr(part, "type", "")
        if kind == "text":
            texts.append(part.text)
        elif kind == "resource" and getattr(part.resource, "text", None) is not None:
            texts.append(part.resource.text)
        elif kind == "resource_link":
            others.append(f"[resource {part.uri}]")
        elif kind in ("image", "audio"):
            others.append(f"[{kind} {getattr(part, 'mime_type', '')}, not shown]")
    if texts:
        return "\n".join(texts)
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(others)


def _public_tool_name(server: str, tool: str, taken: set[str]) -> str:
    """``server.tool`` with the tool part limited to characters every chat template accepts."""
    base = f"{server}.{re.sub(r'[^A-Za-z0-9_.-]+', '_', tool) or 'tool'}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


# --------------------------------------------------------------------------------------------
# The manager


class McpManager:
    """Runs the MCP servers of one ``mcp.json`` and exposes their tools.

    Everything that talks to servers runs on one background thread with its own asyncio loop;
    the public methods may be called from any thread except that one. ``on_change`` is called
    on that thread whenever a status or the tool list changes (the last one, from :meth:`stop`,
    on the caller's thread): it may read :meth:`servers` and :meth:`tools`, but must hand
    anything else (a Qt update, :meth:`call`, :meth:`reload`) to another thread; those raise
    :class:`McpError` there instead of deadlocking. Exceptions it raises are logged.

    ``connect_timeout`` bounds a server's start (spawn, handshake, tool listing);
    ``call_timeout`` is the timeout of the functions of :meth:`tools`.
    """

    def __init__(self, config_path: Path, log_dir: Path, on_change: Callable[[], None] = lambda: None,
                 *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.config_path = Path(config_path)
        self.log_dir = Path(log_dir)
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self._on_change = on_change
        self._lock = threading.RLock()  # guards the status table; never held while waiting on the loop
        self._cond = threading.Condition(self._lock)
        self._lifecycle = threading.Lock()  # one start/reload/stop at a time
        self._servers: dict[str, _Server] = {}
        self._errors: list[str] = []
        self._retiring: set[_Connection] = set()  # connections of removed/changed servers, closing
        self._background: set[asyncio.Task[Any]] = set()  # keeps fire-and-forget tasks alive
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Read the config and connect every enabled server in the background; returns at once.

        Calling it again on a running manager is the same as :meth:`reload`.
        """
        self._not_on_loop_thread("started")
        with self._lifecycle:
            first = self._loop is None
            if first:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._run_loop, args=(loop,), name="mcp-servers",
                                          daemon=True)  # never keeps the app from exiting
                with self._lock:
                    self._loop, self._thread = loop, thread
                thread.start()
            self._apply_config(first=first)

    def reload(self) -> None:
        """Re-read ``mcp.json``: stop removed or changed servers, start new or changed ones.

        Returns at once. A file that cannot be parsed leaves the running servers as they are (a
        half-saved edit should not take every tool away) and is reported by :meth:`config_errors`.
        """
        self.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect every server, make sure their processes are gone, end the loop thread.

        Waits up to about ``timeout`` seconds for servers to exit on their own; whatever is left
        is then killed. The manager can be started again afterwards.
        """
        self._not_on_loop_thread("stopped")
        with self._lifecycle:
            self._stop(timeout)

    def _stop(self, timeout: float) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(timeout), loop).result(timeout + 5)
        except Exception:  # a stuck shutdown must not keep the app from quitting
            log.exception("MCP shutdown did not finish cleanly")
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        with self._lock:
            self._loop = self._thread = None
            for server in self._servers.values():
                server.conn = None
                server.pid = None
                # A failure keeps its explanation; everything that ran (or tried to) is stopped.
                if server.state in ("starting", "ready", "crashed"):
                    server.state, server.message = "stopped", "stopped"
            self._cond.notify_all()
        # Whatever survived the orderly shutdown (a stuck loop, an unkillable wait) goes now.
        self._kill_leftovers()
        self._changed()

    # -- queries -----------------------------------------------------------------------------

    def servers(self) -> list[ServerStatus]:
        """The status of every configured server, in config order."""
        with self._lock:
            return [server.status() for server in self._servers.values()]

    def status(self, name: str) -> ServerStatus:
        """The status of one server; :class:`McpError` if there is none of that name."""
        with self._lock:
            return self._get(name).status()

    def config_errors(self) -> list[str]:
        """Problems found in ``mcp.json`` the last time it was read (never raised)."""
        with self._lock:
            return list(self._errors)

    def wait_ready(self, name: str, timeout: float) -> ServerStatus:
        """Wait until the server is no longer starting (or ``timeout`` passes); its status.

        Never raises: a name not in ``mcp.json`` gives a ``stopped`` status saying so (a
        conversation may remember tools of a server that has since been removed).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                try:
                    server = self._get(name)
                except McpError as exc:
                    return ServerStatus(sanitize_name(name), "stdio", "stopped", str(exc), 0, None)
                remaining = deadline - time.monotonic()
                if server.state != "starting" or remaining <= 0:
                    return server.status()
                self._cond.wait(remaining)

    def tools(self) -> list[Tool]:
        """Tools of every usable server ever listed, named ``server.tool``.

        Tools stay while their server is down (so choices made in a conversation survive a
        crash); calling one restarts the server.
        """
        with self._lock:
            listed = [(s.config.name, list(s.tools)) for s in self._servers.values()
                      if not s.config.disabled and not s.config.error]
        return [self._make_tool(server, info) for server, tools in listed for info in tools]

    def log_tail(self, name: str, max_chars: int = 20000) -> str:
        """The end of the server's log: its stderr and Parley's own connection events.

        Works before :meth:`start` and for removed servers too: the log is found by name.
        """
        with self._lock:
            try:
                path = self._get(name).log_path
            except McpError:
                path = self.log_dir / f"mcp-{sanitize_name(name)}.log"
        try:
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - max_chars * 4))  # UTF-8 needs at most 4 bytes a char
                text = handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        except OSError as exc:
            return f"(the log {path} cannot be read: {exc})"
        return text[-max_chars:]

    # -- actions -----------------------------------------------------------------------------

    def call(self, server: str, tool: str, arguments: dict[str, Any],
             timeout: float = DEFAULT_CALL_TIMEOUT) -> str:
        """Call ``tool`` of ``server`` and return its text; safe from any thread but the MCP one.

        A server that is not running is started first ("restarted on demand"); the start has
        its own startup timeout, and ``timeout`` counts from when the server is ready. Raises
        :class:`McpError` when the tool reports an error, on timeout, or when the server cannot
        be started.
        """
        loop = self._require_loop()
        future = asyncio.run_coroutine_threadsafe(
            self._call(server, tool, dict(arguments or {}), timeout), loop)
        try:
            # The coroutine enforces the timeouts itself; the margin only covers a stuck loop.
            return future.result(self._startup_timeout_of(server) + timeout + 5)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise McpError(f"The MCP tool {server}.{tool} did not answer within {timeout:g} s.") from None
        except concurrent.futures.CancelledError:
            raise McpError(f"The call to {server}.{tool} was cancelled because MCP stopped.") from None

    def restart(self, name: str) -> None:
        """Stop the server (if it runs) and start it again, in the background."""
        loop = self._require_loop()
        with self._lock:
            server = self._get(name)
            if server.config.error:
                raise McpError(f"MCP server {name!r} cannot start: {server.config.error}")
            if server.config.disabled:
                raise McpError(f"MCP server {name!r} is disabled in {self.config_path.name}.")
            self._set(server, "starting", "restarting", notify=False)
        self._changed()
        self._submit(self._restart(server), loop)

    # -- internals: threads and status ---------------------------------------------------------

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self._loop_exception)
        try:
            loop.run_forever()
        finally:
            try:
                tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.wait(tasks, timeout=2))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:
                log.exception("closing the MCP event loop")
            finally:
                loop.close()

    @staticmethod
    def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # SDK background tasks that fail after their owner is gone end up here; they are
        # noise for the user, so they go to the log only.
        log.debug("MCP loop: %s", context.get("message"), exc_info=context.get("exception"))

    @staticmethod
    def _submit(coro: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Run ``coro`` on the loop without waiting; a failure is logged, never lost silently."""

        def report(future: concurrent.futures.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is not None:
                log.error("MCP background work failed", exc_info=future.exception())

        asyncio.run_coroutine_threadsafe(coro, loop).add_done_callback(report)

    def _not_on_loop_thread(self, what: str) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise McpError(f"MCP servers cannot be {what} from the MCP thread (for example from "
                           "on_change); hand the work to another thread.")

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None:
            raise McpError("MCP servers are not running (the MCP manager was not started or was stopped).")
        if threading.current_thread() is thread:
            raise McpError("MCP tools cannot be called from the MCP thread (for example from on_change).")
        return loop

    def _get(self, name: str) -> _Server:
        """The server called ``name`` (or whose cleaned-up name it is). Call with the lock held."""
        server = self._servers.get(name) or self._servers.get(sanitize_name(name))
        if server is None:
            known = ", ".join(self._servers) or "none"
            raise McpError(f"There is no MCP server called {name!r} (configured: {known}).")
        return server

    def _set(self, server: _Server, state: str, message: str, *, notify: bool = True, **fields: Any) -> None:
        """Change a server's public status (any thread) and tell whoever listens."""
        with self._cond:
            server.state, server.message = state, message
            for key, value in fields.items():
                setattr(server, key, value)
            self._cond.notify_all()
        if notify:
            self._changed()

    def _changed(self) -> None:
        """Tell the listener, on the MCP thread whenever it runs (so it sees one thread)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and threading.current_thread() is not thread:
            try:
                loop.call_soon_threadsafe(self._notify_listener)
                return
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._notify_listener()

    def _notify_listener(self) -> None:
        try:
            self._on_change()
        except Exception:  # a faulty listener must not break the servers
            log.exception("MCP on_change callback failed")

    def _log_event(self, server: _Server, text: str) -> None:
        """Append one of our own timestamped lines to the server's log."""
        try:
            server.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(server.log_path, "a", encoding="utf-8") as handle:
                handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [parley] {text}\n")
        except OSError:
            log.warning("cannot write the MCP log %s", server.log_path, exc_info=True)

    def _last_stderr_line(self, server: _Server, since: int) -> str:
        """The last line the server itself wrote to its log since ``since``."""
        try:
            with open(server.log_path, "rb") as handle:
                handle.seek(max(since, os.path.getsize(server.log_path) - 16384))
                lines = handle.read().decode("utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            line = line.strip().strip("│|").strip()
            if line and not _EVENT_LINE.match(line):
                return line[:300]
        return ""

    def _trim_log(self, path: Path) -> None:
        """Keep the last quarter of a log that grew past the limit (logs are append-only)."""
        try:
            if path.stat().st_size <= _MAX_LOG_BYTES:
                return
            with open(path, "rb") as handle:
                handle.seek(-_MAX_LOG_BYTES // 4, os.SEEK_END)
                tail = handle.read()
            path.write_bytes(tail[tail.find(b"\n") + 1:])
        except OSError:
            pass

    def _kill_leftovers(self) -> None:
        """SIGKILL every server process group of this manager that is still registered."""
        with _LIVE_LOCK:
            leftovers = {pid: owner for pid, owner in _LIVE_GROUPS.items() if owner[0] == id(self)}
            for pid in leftovers:
                del _LIVE_GROUPS[pid]
        for pid, owner in leftovers.items():
            log.warning("killing MCP server %r (process %d), still alive after stop", owner[1], pid)
            _kill_group(pid)

    def _make_tool(self, server: str, info: _ToolInfo) -> Tool:
        def function(**arguments: Any) -> str:
            return self.call(server, info.original, arguments, timeout=self.call_timeout)

        function.__name__ = info.public
        # The tool may have to start its server first: that time is allowed on top of the call's.
        return Tool(name=info.public, description=info.description,
                    parameters=copy.deepcopy(info.schema), function=function, requires_approval=True,
                    timeout=self._startup_timeout_of(server) + self.call_timeout, source=f"mcp:{server}")

    # -- internals: configuration --------------------------------------------------------------

    def _apply_config(self, first: bool) -> None:
        """Read ``mcp.json`` on the caller's thread, update the table, start/stop on the loop."""
        configs, errors = _read_config(self.config_path)
        to_stop: list[_Server] = []
        to_start: list[_Server] = []
        with self._cond:
            self._errors = errors
            if configs is None:
                if first:
                    self._servers = {}
                self._cond.notify_all()
            else:
                old = self._servers
                new: dict[str, _Server] = {}
                for config in configs:
                    previous = old.get(config.name)
                    # On a (re)start nothing runs yet, so every server is started afresh.
                    if previous is not None and previous.config == config and not first:
                        new[config.name] = previous
                        continue
                    server = _Server(config, self.log_dir / f"mcp-{config.name}.log")
                    if previous is not None:
                        server.tools = previous.tools  # keep the choices until it lists again
                    if config.error:
                        server.state, server.message = "failed", f"{self.config_path.name}: {config.error}"
                    elif config.disabled:
                        server.state, server.message = "disabled", f"disabled in {self.config_path.name}"
                    else:
                        server.state, server.message = "starting", "starting"
                        to_start.append(server)
                    new[config.name] = server
                to_stop = [s for name, s in old.items() if new.get(name) is not s]
                self._servers = new
                self._cond.notify_all()
        loop = self._loop
        if loop is not None and (to_stop or to_start):
            self._submit(self._reconcile(to_stop, to_start), loop)
        self._changed()

    async def _reconcile(self, to_stop: list[_Server], to_start: list[_Server]) -> None:
        """On the loop: retire replaced servers, then start the new ones (concurrently)."""
        retired = []
        for server in to_stop:
            conn = server.conn
            if conn is not None and conn.task is not None and not conn.task.done():
                self._retiring.add(conn)
                conn.task.add_done_callback(lambda _t, c=conn: self._retiring.discard(c))
                self._request_stop(conn)
                retired.append(conn.task)
        if retired:
            # A changed server reuses its log and maybe its port: let the old one go first.
            await asyncio.wait(retired, timeout=self.connect_timeout)
        for server in to_start:
            with self._lock:
                current = self._servers.get(server.config.name) is server
            if current:
                self._launch(server, "configured")

    # -- internals: connections (loop thread only) -----------------------------------------------

    def _launch(self, server: _Server, reason: str) -> _Connection:
        """Start a connection unless one is already under way; the connection."""
        conn = server.conn
        if conn is not None and conn.task is not None and not conn.task.done():
            return conn
        conn = _Connection(reason)
        server.conn = conn
        self._set(server, "starting", "starting" if reason == "configured" else reason)
        conn.task = asyncio.get_running_loop().create_task(self._run(server, conn), name=f"mcp:{server.config.name}")
        return conn

    def _request_stop(self, conn: _Connection) -> None:
        import anyio

        conn.stopping = True
        conn.wake.set()
        if conn.scope is not None:
            if conn.ready:
                # Orderly close; the deadline only bounds the parts the SDK does not shield.
                conn.scope.deadline = min(conn.scope.deadline, anyio.current_time() + 5)
            else:
                conn.scope.cancel()  # still starting: abandon the handshake

    async def _restart(self, server: _Server) -> None:
        conn = server.conn
        server.restarting = True  # so that the old connection's end does not show as "stopped"
        try:
            if conn is not None and conn.task is not None and not conn.task.done():
                self._request_stop(conn)
                await asyncio.wait([conn.task], timeout=self._startup_timeout(server.config))
        finally:
            server.restarting = False
        with self._lock:
            current = self._servers.get(server.config.name) is server
        if current:
            self._launch(server, "restarted")

    async def _shutdown(self, timeout: float) -> None:
        """Stop every connection; kill what does not stop within ``timeout``."""
        with self._lock:
            servers = list(self._servers.values())
        conns = [s.conn for s in servers if s.conn is not None] + list(self._retiring)
        tasks = [c.task for c in conns if c.task is not None and not c.task.done()]
        for conn in conns:
            self._request_stop(conn)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            for conn in conns:
                if conn.process is not None and conn.process.returncode is None:
                    _kill_group(conn.process.pid)  # unblocks the SDK's shielded shutdown
            _done, pending = await asyncio.wait(pending, timeout=2)
            for task in pending:
                task.cancel()

    async def _run(self, server: _Server, conn: _Connection) -> None:
        """One connection's whole life; turns every outcome into a status, never raises."""
        config = server.config
        self._trim_log(server.log_path)
        try:
            conn.log_offset = server.log_path.stat().st_size
        except OSError:
            conn.log_offset = 0
        self._log_event(server, f"starting ({conn.reason}): {config.describe()}")
        error: BaseException | None = None
        timed_out = False
        try:
            timed_out = await self._connect_and_serve(server, conn)
        except asyncio.CancelledError:
            conn.stopping = True  # only the shutdown cancels these tasks
        except Exception as exc:  # includes ExceptionGroup from the SDK's task groups
            error = exc
        finally:
            self._finish(server, conn, error, timed_out)

    def _finish(self, server: _Server, conn: _Connection, error: BaseException | None, timed_out: bool) -> None:
        """Work out the final status of a connection that ended, log it and tell listeners."""
        process = conn.process
        returncode = process.returncode if process is not None else None
        if process is not None:
            with _LIVE_LOCK:
                if returncode is not None:
                    _LIVE_GROUPS.pop(process.pid, None)
        conn.client = None
        if conn.stopping:
            state, message = "stopped", "stopped"
            event = f"stopped{' (' + _exit_text(returncode) + ')' if returncode not in (None, 0) else ''}"
        elif conn.ready:
            state = "crashed"
            message = self._crash_message(server, conn, error, returncode)
            event = f"crashed: {message}"
        else:
            state = "failed"
            message = self._failure_message(server, conn, error, returncode, timed_out)
            event = f"failed to start: {message}"
        self._log_event(server, event)
        if server.conn is conn and not server.restarting:
            self._set(server, state, message, pid=None)
        conn.settled.set()

    async def _connect_and_serve(self, server: _Server, conn: _Connection) -> bool:
        """Connect, list the tools, then wait until stopped or lost. True if the start timed out."""
        import anyio
        from mcp import Client
        from mcp.types import Implementation

        config = server.config
        # The scope's deadline abandons a start that takes too long; the timer reports it at
        # once, since tearing down a server that ignores being asked to stop takes seconds more.
        timeout = self._startup_timeout(config)
        timer = asyncio.get_running_loop().call_later(timeout, self._start_timed_out, server, conn)
        with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
            conn.scope = scope
            if conn.stopping:
                scope.cancel()
            async with AsyncExitStack() as stack:
                stack.callback(timer.cancel)
                transport = await self._transport(server, conn, stack)

                def on_end() -> None:
                    if conn.ready and not conn.stopping and not conn.lost:
                        conn.lost = "the connection closed"
                    conn.wake.set()

                def on_spawn(process: Any) -> None:
                    with _LIVE_LOCK:
                        _LIVE_GROUPS[process.pid] = (id(self), config.name)
                    with self._lock:
                        server.pid = process.pid
                    self._log_event(server, f"process {process.pid} started")

                client = Client(
                    _watched(transport, conn, on_end, on_spawn),
                    client_info=Implementation(name="parley", version="1"),
                    message_handler=self._message_handler(server, conn),
                    cache=None,  # tool lists must always come fresh from the server
                )
                await stack.enter_async_context(client)
                tools = await self._list_tools(client, config.name)
                timer.cancel()
                conn.client = client
                conn.ready = True
                scope.deadline = math.inf  # from here on, the connection lives until stopped
                self._log_event(server, f"ready with {len(tools)} tools ({client.protocol_version})")
                self._set(server, "ready", f"{len(tools)} tool{'s' if len(tools) != 1 else ''}",
                          tools=tools)
                conn.settled.set()
                await conn.wake.wait()
                conn.client = None
        timer.cancel()
        return conn.timed_out or (scope.cancelled_caught and not conn.ready and not conn.stopping)

    def _startup_timeout_of(self, name: str) -> float:
        """:meth:`_startup_timeout` of the server called ``name`` (the default when unknown)."""
        with self._lock:
            server = self._servers.get(name)
        return self._startup_timeout(server.config) if server is not None else self.connect_timeout

    def _startup_timeout(self, config: _ServerConfig) -> float:
        """How long ``config``'s server may take to start: its own setting, else the manager's."""
        return config.startup_timeout if config.startup_timeout is not None else self.connect_timeout

    def _start_timed_out(self, server: _Server, conn: _Connection) -> None:
        """The connect timeout passed: report the failure now, the teardown follows."""
        if conn.ready or conn.stopping or conn.settled.is_set():
            return
        conn.timed_out = True
        if server.conn is conn and not server.restarting:
            self._set(server, "failed", self._failure_message(server, conn, None, None, True))
        conn.settled.set()

    async def _transport(self, server: _Server, conn: _Connection, stack: AsyncExitStack) -> Any:
        """The SDK transport for ``server`` (not yet entered); its resources go on ``stack``."""
        config = server.config
        if config.transport == "http":
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            async def remember_errors(response: Any) -> None:
                if response.status_code >= 400:
                    conn.http_error = f"HTTP {response.status_code} {response.reason_phrase}".strip()

            # Same timeouts as the SDK's own client: a server may hold a response stream open.
            http = httpx2.AsyncClient(headers=dict(config.headers), timeout=httpx2.Timeout(30, read=300),
                                      event_hooks={"response": [remember_errors]})
            await stack.enter_async_context(http)
            return streamable_http_client(config.url, http_client=http)

        from mcp import StdioServerParameters
        from mcp.client.stdio import get_default_environment, stdio_client

        self._check_command(config, dict(get_default_environment()) | dict(config.env))
        server.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A real file: the child writes its stderr straight into it, even while we are busy.
        errlog = stack.enter_context(open(server.log_path, "a", encoding="utf-8", errors="replace"))
        params = StdioServerParameters(command=config.command, args=list(config.args),
                                       env=dict(config.env) or None, cwd=config.cwd)
        return stdio_client(params, errlog=errlog)

    @staticmethod
    def _check_command(config: _ServerConfig, env: dict[str, str]) -> None:
        """Fail early, with a clear message, on a missing program or folder."""
        if config.cwd and not Path(config.cwd).is_dir():
            raise McpError(f"the folder {config.cwd!r} given as \"cwd\" does not exist")
        command = config.command
        if os.path.dirname(command):
            if not Path(command).exists():
                raise McpError(f"command {command!r} not found")
        elif shutil.which(command, path=env.get("PATH", os.defpath)) is None:
            raise McpError(f"command {command!r} not found (install it, or give its full path in mcp.json)")

    async def _list_tools(self, client: Any, server_name: str) -> list[_ToolInfo]:
        tools: list[_ToolInfo] = []
        taken: set[str] = set()
        cursor = None
        for _ in range(_MAX_TOOL_PAGES):
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
                tools.append(_ToolInfo(
                    original=tool.name,
                    public=_public_tool_name(server_name, tool.name, taken),
                    description=tool.description or tool.title or "",
                    schema=public_schema(schema) or {"type": "object", "properties": {}},
                ))
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    def _message_handler(self, server: _Server, conn: _Connection) -> Callable[[Any], Any]:
        """Server notifications: log messages go to the log, a changed tool list is re-read."""

        async def handle(message: Any) -> None:
            if isinstance(message, Exception):
                self._log_event(server, f"unreadable message from the server: {message}")
                return
            method = getattr(message, "method", "")
            if method == "notifications/tools/list_changed" and conn.client is not None:
                task = asyncio.get_running_loop().create_task(self._relist(server, conn))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            elif method == "notifications/message":
                params = getattr(message, "params", None)
                self._log_event(server, f"server log ({getattr(params, 'level', '?')}): "
                                        f"{getattr(params, 'data', '')}")

        return handle

    async def _relist(self, server: _Server, conn: _Connection) -> None:
        try:
            tools = await self._list_tools(conn.client, server.config.name)
        except Exception as exc:
            self._log_event(server, f"re-reading the tool list failed: {exc!r}")
            return
        if conn.ready and not conn.wake.is_set() and server.conn is conn:
            self._log_event(server, f"tool list changed: {len(tools)} tools")
            self._set(server, "ready", f"{len(tools)} tool{'s' if len(tools) != 1 else ''}", tools=tools)

    # -- internals: messages -------------------------------------------------------------------

    def _failure_message(self, server: _Server, conn: _Connection, error: BaseException | None,
                         returncode: int | None, timed_out: bool) -> str:
        config = server.config
        stderr = self._last_stderr_line(server, conn.log_offset) if config.transport == "stdio" else ""
        if timed_out:
            text = (f"did not start within {self._startup_timeout(config):g} s "
                    "(it may be downloading, waiting for input, or not an MCP server)")
            return f"{text}; last output: {stderr}" if stderr else text
        leaves = list(_leaves(error)) if error is not None else []
        for exc in leaves:
            if isinstance(exc, McpError):
                return str(exc)
        for exc in leaves:
            if isinstance(exc, FileNotFoundError):
                return f"command {config.command!r} not found"
            if isinstance(exc, PermissionError):
                return f"command {config.command!r} cannot be run (permission denied)"
        if returncode is not None:  # the process ended before it was ready: that is the reason
            text = _exit_text(returncode)
            return f"{text}: {stderr}" if stderr else text
        if config.transport == "http":
            return self._http_message(config, conn, leaves)
        return self._generic_message(leaves) + (f"; last output: {stderr}" if stderr else "")

    def _crash_message(self, server: _Server, conn: _Connection, error: BaseException | None,
                       returncode: int | None) -> str:
        if server.config.transport == "http":
            reason = conn.lost or self._generic_message(list(_leaves(error)) if error else [])
            return f"connection lost ({reason}); it reconnects on the next call"
        text = _exit_text(returncode) or conn.lost or "the connection closed"
        stderr = self._last_stderr_line(server, conn.log_offset)
        if stderr and returncode is not None and returncode > 0:  # a signal leaves no last words
            text = f"{text}: {stderr}"
        return f"{text}; it restarts on the next call"

    @staticmethod
    def _http_message(config: _ServerConfig, conn: _Connection, leaves: list[BaseException]) -> str:
        if conn.http_error:
            hint = " (check the headers in mcp.json)" if conn.http_error.startswith(("HTTP 401", "HTTP 403")) else ""
            return f"{config.url} answered {conn.http_error}{hint}"
        for exc in leaves:
            if type(exc).__name__ in ("ConnectError", "ConnectTimeout") or isinstance(exc, ConnectionError):
                return f"cannot connect to {config.url}: is the server running?"
        return f"{config.url}: {McpManager._generic_message(leaves)}"

    @staticmethod
    def _generic_message(leaves: list[BaseException]) -> str:
        for exc in leaves:
            text = str(exc).strip()
            if text:
                return f"{type(exc).__name__}: {text}"[:300]
        return type(leaves[0]).__name__ if leaves else "unknown error"

    # -- internals: calls (loop thread) ---------------------------------------------------------

    async def _call(self, name: str, tool: str, arguments: dict[str, Any], timeout: float) -> str:
        import anyio

        # A (re)start is bounded by the server's startup timeout, inside _ready_client.
        client, conn, server = await self._ready_client(name)
        try:
            with anyio.fail_after(timeout):
                return await self._call_tool(server, conn, client, tool, arguments)
        except TimeoutError:
            raise McpError(f"The MCP tool {name}.{tool} did not answer within {timeout:g} s.") from None

    async def _ready_client(self, name: str) -> tuple[Any, _Connection, _Server]:
        """The server's client, starting the server first when it is not running."""
        with self._lock:
            server = self._get(name)
        config = server.config
        if config.error:
            raise McpError(f"MCP server {config.name!r} cannot start: {config.error}")
        if config.disabled:
            raise McpError(f"MCP server {config.name!r} is disabled in {self.config_path.name}.")
        conn = server.conn
        if conn is not None and conn.client is not None and conn.ready and not conn.wake.is_set():
            return conn.client, conn, server
        if conn is not None and conn.task is not None and not conn.task.done() and conn.wake.is_set():
            await asyncio.wait([conn.task])  # a dying connection: let it finish its teardown
        previous = server.state
        reason = "restarted on demand" if previous in ("crashed", "failed", "stopped") else "started on demand"
        conn = self._launch(server, reason)
        await conn.settled.wait()
        if conn.client is None or not conn.ready:
            raise McpError(f"MCP server {config.name!r} could not be started: {server.message}")
        return conn.client, conn, server

    async def _call_tool(self, server: _Server, conn: _Connection, client: Any, tool: str,
                         arguments: dict[str, Any]) -> str:
        from mcp.shared.exceptions import MCPError

        public = f"{server.config.name}.{tool}"
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as exc:
            if not (conn.wake.is_set() or exc.code == _CONNECTION_CLOSED):
                raise McpError(f"MCP server {server.config.name!r} rejected the call to {public}: "
                               f"{exc}") from None
            await self._end_lost(conn, "the connection closed during a call")
            if conn.stopping:
                raise McpError(f"MCP server {server.config.name!r} was stopped while running {public}.") from None
            raise McpError(f"MCP server {server.config.name!r} went away while running {public}: "
                           f"{server.message}") from None
        except Exception as exc:  # the SDK wraps failures in groups; sort out what they mean
            leaves = list(_leaves(exc))
            reason = self._generic_message(leaves)
            if not (conn.wake.is_set() or any(_is_transport_error(e) for e in leaves)):
                # E.g. an answer that does not validate: the server is fine, this call is not.
                raise McpError(f"{public} gave an answer Parley cannot read ({reason}).") from None
            await self._end_lost(conn, reason)
            raise McpError(f"The call to {public} failed ({reason}); the server is started again "
                           "on the next call.") from None
        text = _result_text(result)
        if result.is_error:
            raise McpError(f"{public} failed: {text or 'the server gave no details'}")
        return text

    async def _end_lost(self, conn: _Connection, reason: str) -> None:
        """A call found the connection broken: end it, so that the next call reconnects.

        Waiting (briefly) for the teardown means the caller sees the final status, and the
        error message can say why the server went away.
        """
        if conn.ready and not conn.stopping and not conn.lost:
            conn.lost = reason
        conn.wake.set()
        if conn.task is not None and not conn.task.done():
            await asyncio.wait([conn.task], timeout=5)
