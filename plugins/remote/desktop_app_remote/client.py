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

__all__ = ["Client", "RemoteError", "StreamBroken"]

#: Seconds to open a connection; a server that is up answers at once.
CONNECT_TIMEOUT = 5.0


class RemoteError(ParleyError):
    """A remote engine failed; the message is for the user."""


class StreamBroken(RemoteError):
    """The connection dropped in the middle of an answer."""


class Client:
    """One engine's HTTP client (kept-alive connections, thread-safe).

    ``read_timeout`` bounds the wait for each piece of an answer, the first included (a big
    prompt on a slow server can take a while before it).
    """

    def __init__(self, name: str, url: str, api_key: str | None = None, read_timeout: float = 300.0):
        import httpx

        self.name = name
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # trust_env off: a proxy from the environment must not see (or break) a loopback engine.
        self._http = httpx.Client(base_url=self.url, headers=headers, trust_env=False,
                                  timeout=httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT))
        self._open: set[Any] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every connection (an answer being read ends with StreamBroken)."""
        self.abort()
        self._http.close()

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

    def stream(self, path: str, body: dict[str, Any], *, close: bool = False) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield each Server-Sent Event's JSON ``data`` until ``[DONE]`` or the end.

        Closing the generator (or :meth:`abort` from another thread) closes the connection,
        which makes llama-server and the other engines stop generating. ``close`` asks for a
        connection of its own, closed after the answer (for servers that close it anyway).
        """
        import httpx

        reply = None
        for attempt in range(2):
            request = self._http.build_request("POST", path, json=body,
                                               headers={"Connection": "close"} if close else None)
            try:
                reply = self._http.send(request, stream=True)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                # A kept-alive connection to a server that restarted since: once more, on a new one.
                if attempt:
                    raise self._failure(exc) from None
            except httpx.HTTPError as exc:
                raise self._failure(exc) from None
        assert reply is not None
        with self._lock:
            self._open.add(reply)
        try:
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
                                  f"{self._http.timeout.read:.0f} s; the answer so far is kept.") from None
            raise StreamBroken(f"The connection to {self.name} ({self.url}) broke in the middle of the answer "
                               f"({type(exc).__name__}: {exc or 'closed'}); the answer so far is kept.") from None
        finally:
            with self._lock:
                self._open.discard(reply)
            reply.close()

    def abort(self) -> None:
        """Close the answers being read now (from any thread): the server stops generating."""
        with self._lock:
            open_now = list(self._open)
        for reply in open_now:
            try:
                reply.close()
            except Exception:  # closing a half-read response may raise in the reading thread's stead
                pass

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
            return RemoteError(f"{self.name} did not answer within {self._http.timeout.read:.0f} s.")
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
