"""HTTP to a model server: JSON requests, Server-Sent Event streams, and errors a person can act on.

Every failure becomes a :class:`RemoteError` whose message says which engine, what went
wrong and what to try: the server is down, it refused the key, it took too long, or it
answered something that is not an OpenAI-compatible reply.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

from desktop_app.api import ParleyError

__all__ = ["Client", "DONE", "RemoteError", "StreamBroken"]

#: Seconds to open a connection; a server that is up answers at once.
CONNECT_TIMEOUT = 5.0
#: Seconds a short request (models, props, tokenize) may wait for its answer.
PROBE_TIMEOUT = 10.0


#: What :meth:`Client.stream` yields for ``data: [DONE]``: the server said the answer is complete.
DONE: dict[str, Any] = {"[DONE]": True}


class RemoteError(ParleyError):
    """A remote engine failed; the message is for the user."""


class StreamBroken(RemoteError):
    """The connection dropped in the middle of an answer."""


class Client:
    """One engine's HTTP client (thread-safe).

    Short requests (what the engine serves, counting tokens) share kept-alive connections and
    wait at most ``PROBE_TIMEOUT`` for an answer, so a hung server is found out in seconds.
    Each streamed answer gets a connection of its own, known from the moment it opens, so
    :meth:`abort` can shut it from another thread even while the server has sent nothing yet;
    ``read_timeout`` bounds the wait for each piece of it (a long prompt takes a while first).
    """

    def __init__(self, name: str, url: str, api_key: str | None = None, read_timeout: float = 300.0):
        import httpx

        self.name = name
        self.url = url.rstrip("/")
        self.read_timeout = read_timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # trust_env off: a proxy from the environment must not see (or break) a loopback engine.
        self._http = httpx.Client(base_url=self.url, headers=headers, trust_env=False,
                                  timeout=httpx.Timeout(PROBE_TIMEOUT, connect=CONNECT_TIMEOUT))
        self._streams = httpx.Client(base_url=self.url, headers=headers, trust_env=False,
                                     timeout=httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT),
                                     limits=httpx.Limits(max_keepalive_connections=0))
        #: The sockets of the answers being read now.
        self._sockets: set[Any] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every connection (an answer being read ends with StreamBroken)."""
        self.abort()
        self._http.close()
        self._streams.close()

    # -- requests -----------------------------------------------------------------------------
    def get_json(self, path: str, *, missing_ok: bool = False) -> Any:
        """GET ``path`` and decode its JSON. With ``missing_ok`` (an endpoint only some servers
        have), None when the server has no such endpoint or answers it with something else."""
        reply = self._send("GET", path)
        if missing_ok and (reply.status_code in (404, 405, 501) or
                           (reply.status_code < 400 and _json_or_none(reply) is None)):
            return None
        self._check(reply)
        return self._decode(reply, path)

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` to ``path`` and decode the JSON answer."""
        reply = self._send("POST", path, json=body)
        self._check(reply)
        return self._decode(reply, path)

    def stream(self, path: str, body: dict[str, Any], *,
               cancelled: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield each Server-Sent Event's JSON ``data``, then :data:`DONE` if the
        server sends ``[DONE]`` (a stream that just ends has no such last event).

        Closing the generator, or :meth:`abort` from another thread, closes the connection,
        which makes llama-server and the other engines stop generating. A ``cancelled`` event
        set before the connection is open shuts it as soon as it is.
        """
        import httpx

        opened: list[Any] = []

        def trace(event: str, info: dict[str, Any]) -> None:
            # httpcore tells when the connection is open: from then on abort() can shut it.
            if event == "connection.connect_tcp.complete":
                sock = info["return_value"].get_extra_info("socket")
                if sock is not None:
                    with self._lock:
                        self._sockets.add(sock)
                    opened.append(sock)
                    if cancelled is not None and cancelled.is_set():
                        _shut(sock)

        reply = None
        try:
            request = self._streams.build_request("POST", path, json=body, extensions={"trace": trace})
            try:
                reply = self._streams.send(request, stream=True)
            except httpx.HTTPError as exc:
                if cancelled is not None and cancelled.is_set():
                    raise StreamBroken(f"The answer from {self.name} was stopped.") from None
                raise self._failure(exc) from None
            if reply.status_code >= 400:
                reply.read()
                self._check(reply)
            kind = reply.headers.get("content-type", "")
            if "text/event-stream" not in kind:
                reply.read()
                raise RemoteError(f"{self.name} did not stream its answer (it sent {kind or 'no content type'}, "
                                  f"not Server-Sent Events): {_snippet(reply.text)}. Is {self.url} an "
                                  "OpenAI-compatible server?")
            for line in reply.iter_lines():
                if not line.startswith("data:"):
                    continue  # comments, event names and blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    yield DONE
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise RemoteError(f"{self.name} sent a piece of its answer that is not JSON: {_snippet(data)}") \
                        from None
                if not isinstance(event, dict):
                    raise RemoteError(f"{self.name} sent a piece of its answer that is not a JSON object: "
                                      f"{_snippet(data)}")
                if "error" in event and not event.get("choices"):
                    raise RemoteError(f"{self.name} stopped with an error: {_error_text(event)}")
                yield event
        except (httpx.TimeoutException, httpx.TransportError, httpx.StreamError) as exc:
            if isinstance(exc, httpx.TimeoutException):
                raise RemoteError(f"{self.name} stopped sending its answer for longer than "
                                  f"{self.read_timeout:.0f} s; the answer so far is kept.") from None
            raise StreamBroken(f"The connection to {self.name} ({self.url}) broke in the middle of the answer "
                               f"({type(exc).__name__}: {exc or 'closed'}); the answer so far is kept.") from None
        finally:
            with self._lock:
                self._sockets.difference_update(opened)
            if reply is not None:
                reply.close()

    def abort(self) -> None:
        """Shut the connections of the answers being read now (from any thread): a read blocked
        on them ends at once, and the server stops generating."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    # -- helpers ------------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        for attempt in range(2):
            try:
                return self._http.request(method, path, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if attempt:  # a stale kept-alive connection gets one more try (see stream)
                    raise self._failure(exc) from None
            except httpx.HTTPError as exc:
                raise self._failure(exc) from None

    def _failure(self, exc: Exception) -> RemoteError:
        import httpx

        if isinstance(exc, httpx.ConnectTimeout):
            return RemoteError(f"{self.name} did not accept a connection within {CONNECT_TIMEOUT:.0f} s at "
                               f"{self.url}. Is the address right, and the machine on?")
        if isinstance(exc, httpx.ConnectError):
            return RemoteError(f"Cannot reach {self.name} at {self.url}: {_reason(exc)}. Is the server running, "
                               "and is the address right?")
        if isinstance(exc, httpx.TimeoutException):
            return RemoteError(f"{self.name} accepted the connection but did not answer within "
                               f"{self._http.timeout.read:.0f} s. Is the server busy or stuck?")
        if isinstance(exc, httpx.UnsupportedProtocol):
            return RemoteError(f"{self.url} is not an http:// or https:// address.")
        return RemoteError(f"Talking to {self.name} at {self.url} failed: {type(exc).__name__}: {exc}")

    def _check(self, reply: Any) -> None:
        if reply.status_code < 400:
            return
        detail = _error_text(_json_or_none(reply)) or _snippet(reply.text)
        if reply.status_code in (401, 403):
            raise RemoteError(f"{self.name} refused the API key (HTTP {reply.status_code}: {detail}). Set the "
                              "right key in Settings → Engines, or with `parley engines add NAME URL "
                              "--api-key-env VAR --replace`.")
        raise RemoteError(f"{self.name} answered HTTP {reply.status_code}: {detail}")

    def _decode(self, reply: Any, path: str) -> Any:
        value = _json_or_none(reply)
        if value is None:
            raise RemoteError(f"{self.name} answered {path} with something that is not JSON "
                              f"({_snippet(reply.text)}). Is {self.url} an OpenAI-compatible server?")
        return value


def _shut(sock: Any) -> None:
    """Shut a socket both ways: unlike close(), this wakes a thread blocked reading it."""
    import socket

    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed or shut
        pass


def _json_or_none(reply: Any) -> Any:
    try:
        return reply.json()
    except ValueError:
        return None


def _error_text(body: Any) -> str:
    """The message of an OpenAI-style (or llama-server) error body, or ""."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error)
        if isinstance(error, str):
            return error
        if "message" in body:
            return str(body["message"])
    return ""


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "111" in text:
        return "the connection was refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "the host name is unknown"
    return text or type(exc).__name__


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return repr(text[:limit] + ("…" if len(text) > limit else "")) if text else "nothing"
