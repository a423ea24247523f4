"""Carrying a model call from the queue's thread to the event loop, and a stream that notices
when its client leaves.

A :class:`Bridge` is handed to the job: its ``on_token`` posts pieces to the event loop, its
``stop`` event ends the answer at the next token. :class:`EventStream` sends Server-Sent Events
and listens for ``http.disconnect`` meanwhile: a client that closes the stream sets ``stop``
at once, so the model stops within one token, and a request still waiting is dropped.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, AsyncIterator, Callable

import anyio
from starlette.responses import Response

__all__ = ["Bridge", "EventStream", "wait_or_disconnect"]


class Bridge:
    """A job's way back to the request: items for the event loop, and the stop switch."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.items: asyncio.Queue = asyncio.Queue()
        self.stop = threading.Event()
        self.future: Future | None = None
        #: Pieces of text sent so far, and how many there were when the client left.
        self.pieces = 0
        self.pieces_at_cancel: int | None = None

    def post(self, *item: Any) -> None:
        """Hand an item to the event loop (from any thread)."""
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server stopped, nobody is listening
            pass

    def token(self, index: int) -> Callable[[str], None]:
        """``on_token`` for choice ``index``."""

        def on_token(text: str) -> None:
            self.pieces += 1
            self.post("token", index, text)

        return on_token

    def progress(self, index: int) -> Callable[[str], None]:
        """``on_progress`` for choice ``index``: a strategy's work, streamed apart from the answer."""

        def on_progress(text: str) -> None:
            self.pieces += 1
            self.post("progress", index, text)

        return on_progress

    def attach(self, future: Future) -> None:
        """Follow the job: its end posts ``("end", future)``."""
        self.future = future
        future.add_done_callback(lambda f: self.post("end", f))

    def cancel(self) -> None:
        """The client left: stop the answer, drop the job if it has not started."""
        if not self.stop.is_set():
            self.pieces_at_cancel = self.pieces
        self.stop.set()
        if self.future is not None:
            self.future.cancel()


class EventStream(Response):
    """An ASGI response streaming Server-Sent Events from ``events``; ``on_disconnect`` runs
    as soon as the client goes away (``http.disconnect`` or a failed send)."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_disconnect: Callable[[], None],
                 headers: dict[str, str] | None = None):
        self.events = events
        self.on_disconnect = on_disconnect
        self.extra_headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})}
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.extra_headers.items()]
        gone = False

        async def watch(scope_to_cancel: anyio.CancelScope) -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    self.on_disconnect()
                    scope_to_cancel.cancel()
                    return

        async with anyio.create_task_group() as group:
            group.start_soon(watch, group.cancel_scope)
            try:
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                async for chunk in self.events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the connection broke under a send
                gone = True
                self.on_disconnect()
            finally:
                if not gone:
                    group.cancel_scope.cancel()
        aclose = getattr(self.events, "aclose", None)
        if aclose is not None:
            await aclose()


async def wait_or_disconnect(receive: Callable, bridge: Bridge) -> Any:
    """The job's result, unless the client leaves first (then the job is stopped and this
    raises :class:`asyncio.CancelledError`)."""
    assert bridge.future is not None
    result = asyncio.wrap_future(bridge.future)

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if result not in done:
        bridge.cancel()
        raise asyncio.CancelledError("the client went away")
    return result.result()
