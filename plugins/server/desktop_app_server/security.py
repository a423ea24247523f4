"""What keeps the server for the user's own programs: the API key, Host/Origin checks, body size.

- The API key is made with :mod:`secrets`, shown once, and only its SHA-256 is kept (a random
  256-bit key needs no slow hash). Requests present it as ``Authorization: Bearer KEY``;
  the comparison takes the same time whatever the key.
- ``Host`` must name this machine (loopback names, the bound address, the allowed hosts
  setting): a web page that rebinds its own DNS name to 127.0.0.1 still sends its own name.
- ``Origin``, when a browser sends one, must be this server's or one of the CORS origins, so a
  page elsewhere cannot drive the server through the user's browser.
- Bodies larger than the limit are refused before they are read whole.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

from starlette.exceptions import HTTPException as StarletteHTTPException
from urllib.parse import urlsplit

from desktop_app.api import atomic_write_text

from desktop_app_server.wire import error_body

__all__ = ["HostGuard", "KeyGuard", "KeyStore", "host_name", "is_loopback", "LOOPBACK_NAMES"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name in a ``Host`` header or an origin's netloc, without port or brackets, lowercased."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8080
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


class KeyStore:
    """The server's API key, kept as its SHA-256 in ``api-key.json`` (readable by the user only)."""

    def __init__(self, folder: Path):
        self.path = folder / "api-key.json"

    @property
    def exists(self) -> bool:
        """Whether a key has been made."""
        return self._digest() is not None

    def _digest(self) -> str | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        digest = data.get("sha256") if isinstance(data, dict) else None
        return digest if isinstance(digest, str) and len(digest) == 64 else None

    def create(self) -> str:
        """Make a new key (the old one stops working) and return it: the only time it is seen."""
        key = "sk-parley-" + secrets.token_urlsafe(32)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"sha256": _sha256(key), "created": int(time.time())}))
        try:
            os.chmod(self.path, 0o600)
        except OSError:  # a file system without permissions: the digest is not the key anyway
            pass
        return key

    def remove(self) -> bool:
        """Forget the key; True when there was one."""
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False

    def check(self, presented: str) -> bool:
        """Whether ``presented`` is the key, in constant time."""
        digest = self._digest()
        return digest is not None and hmac.compare_digest(_sha256(presented), digest)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class HostGuard:
    """Pure ASGI middleware: the ``Host`` header must name this server, ``Origin`` (when a browser
    sends one) must be this server's or a CORS origin. It sits outside CORS, so a page elsewhere
    gets no preflight answer either."""

    def __init__(self, app: Callable, *, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]):
        self.app = app
        allowed_hosts = list(allowed_hosts)
        self.allowed_hosts = {host_name(h) for h in allowed_hosts if h}
        self.any_host = "*" in allowed_hosts
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins if o}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.allowed_hosts:
            await _refuse(send, 403, f"The Host header {host!r} is not allowed. Add the name to the server's "
                          "allowed hosts setting if you mean to reach the server by it.", "host_not_allowed")
            return
        origin = headers.get("origin")
        if origin is not None and not self._origin_ok(origin):
            await _refuse(send, 403, f"Requests from the origin {origin!r} are not allowed. Add it to the "
                          "server's CORS origins setting to let that page use the server.", "origin_not_allowed")
            return
        await self.app(scope, receive, send)

    def _origin_ok(self, origin: str) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.allowed_origins or "*" in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        # The server's own pages (/docs) and tools on this machine.
        return parts.scheme in ("http", "https") and host_name(parts.netloc) in self.allowed_hosts


#: Paths served without the key: nothing on them reaches the model or the user's data.
OPEN_PATHS = frozenset({"/health", "/docs", "/openapi.json"})


class KeyGuard:
    """Pure ASGI middleware inside CORS: the API key (when one is required) and the body size."""

    def __init__(self, app: Callable, *, key_required: bool, keys: KeyStore, max_body: int):
        self.app = app
        self.key_required = key_required
        self.keys = keys
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self.key_required and scope.get("path") not in OPEN_PATHS:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            # Anthropic's clients send the key as x-api-key.
            presented = token.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "").strip()
            if not presented or not self.keys.check(presented):
                await _refuse(send, 401, "Incorrect API key provided. Send the key `parley serve` showed, as "
                              "'Authorization: Bearer KEY' (`parley serve --rotate-key` makes a new one).",
                              "invalid_api_key", [(b"www-authenticate", b"Bearer")])
                return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await _refuse(send, 400, "The Content-Length header is not a number.", "invalid_request")
                return
            if int(length) > self.max_body:
                await _refuse(send, 413, self._too_large(), "request_too_large")
                return
        received = 0
        started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge(self._too_large())
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await _refuse(send, 413, self._too_large(), "request_too_large")

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_body} bytes (the server's max body setting)."


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class _BodyTooLarge(StarletteHTTPException):
    """Raised while the body is read (e.g. a chunked one): FastAPI passes HTTP exceptions on, so
    the client gets a 413, not "error parsing the body"."""

    def __init__(self, message: str):
        super().__init__(413, message)


async def _refuse(send: Send, status: int, message: str, code: str,
                  extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error_body(message, "invalid_request_error", None, code)).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra_headers]})
    await send({"type": "http.response.body", "body": body})
