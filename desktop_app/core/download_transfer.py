"""One file of a download: its bytes fetched from the hub into a partial file, resumed, hashed as they arrive.

:class:`PartTransfer` does one file; :func:`fetch_part` drives it through a flaky connection
(retries with back-off, each continuing from the bytes already on disk). The queue, the
threads and the library are :mod:`desktop_app.core.downloads`' business.

Why not ``huggingface_hub.hf_hub_download``: it cannot be paused (only killed), reports
progress only to a tqdm bar, and after resuming a file it does not check the finished
file's SHA-256 against the hub's LFS checksum, so bytes corrupted by a bad resume would go
unnoticed. huggingface_hub is used for what it does well: the file's address
(``hf_hub_url``), its metadata by a HEAD request (``get_hf_file_metadata``: size, LFS SHA-256,
commit), its HTTP client (``get_session``, with the user's proxy and TLS settings) and its
error classes; the transfer itself is a streamed GET with a ``Range`` header, here.

The rules a resume follows, because a wrong one silently corrupts a model:

- the partial file is continued with ``Range: bytes=N-`` (and ``If-Range`` with the ETag of
  the reply that started it, so a file that changed on the hub comes back whole);
- only a ``206`` whose ``Content-Range`` starts at N is appended; a ``200`` (the server
  ignored the range, or the file changed) starts the file again from byte 0;
- any other ``Content-Range`` is an error, and nothing is written;
- the SHA-256 covers every byte of the partial file: the bytes already there are read and
  hashed again before new ones are appended.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import logging
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from desktop_app.core.errors import ParleyError
from desktop_app.core.hub_files import HubFile

__all__ = [
    "DownloadError",
    "DownloadStopped",
    "PartTransfer",
    "RemoteFile",
    "fetch_part",
    "write_chunk",
]

log = logging.getLogger(__name__)

#: Statuses worth asking again: the server is busy or broken for now, not refusing.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Bytes read at a time when the partial file is hashed again on resume.
_HASH_BLOCK = 4 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_LOGIN = "add your token with `parley models login`"


class DownloadError(ParleyError):
    """A download failed; the message says why and what to do.

    ``kind`` sorts the causes for a window that offers the next step: "network" (the
    connection kept failing), "server" (the hub answered wrongly), "not_found", "gated",
    "token", "checksum" (the bytes did not match the hub's SHA-256), "disk" (space or a
    write failed), "file" (the finished file is not a model Parley can use), "unexpected".
    """

    def __init__(self, message: str, kind: str = "server"):
        super().__init__(message)
        self.kind = kind


class DownloadStopped(Exception):
    """The download was asked to stop (paused, cancelled, or the app is closing)."""


class _Retryable(Exception):
    """A failure worth another attempt (the connection, a busy server); ``retry_after`` in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RemoteFile:
    """What the hub's HEAD reply says of a file: its size, LFS SHA-256 (None when not LFS), commit."""

    size: int | None
    sha256: str | None
    commit: str | None


def write_chunk(handle: Any, data: bytes) -> int:
    """Write all of ``data`` to an unbuffered file; returns the bytes written.

    A module function so that a test can make the disk "full" here: a real full disk cannot
    be made on demand without root rights.
    """
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += handle.write(view[written:])
    return written


class PartTransfer:
    """Fetch one hub file into ``partial``, continuing from the bytes already there.

    ``file`` is what is expected (size, SHA-256, revision); :meth:`head` asks the hub and
    :meth:`reconcile` takes its answer. ``etag`` is the validator of the reply that started
    the partial file (sent as ``If-Range``); ``stop`` is checked between chunks, and
    :meth:`interrupt` (after setting it) wakes a read waiting on a silent connection;
    ``on_progress(bytes_on_disk)`` is called after each chunk and after a restart.
    """

    def __init__(self, file: HubFile, partial: Path, *, endpoint: str, token: str | None = None,
                 etag: str | None = None, stop: threading.Event | None = None,
                 on_progress: Callable[[int], None] | None = None, timeout: float = 30.0):
        self.file = file
        self.partial = partial
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.etag = etag
        self.commit: str | None = None
        self.stop = stop or threading.Event()
        self.on_progress = on_progress or (lambda done: None)
        self.timeout = timeout
        self._hasher = hashlib.sha256()
        self._hashed = 0  # bytes of the partial file the hasher has seen
        self._live: Any = None  # the response being read, for interrupt() on another thread
        self._live_lock = threading.Lock()

    # -- what the hub says -----------------------------------------------------------------
    @property
    def url(self) -> str:
        """The file's address at its revision."""
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.file.repo_id, self.file.path, revision=self.file.revision, endpoint=self.endpoint)

    def head(self) -> RemoteFile:
        """Ask the hub for the file's size, SHA-256 and commit (a HEAD request, no bytes)."""
        from huggingface_hub import get_hf_file_metadata

        from desktop_app import __version__

        try:
            meta = get_hf_file_metadata(self.url, token=self.token or False, timeout=self.timeout,
                                        library_name="parley", library_version=__version__, endpoint=self.endpoint)
        except Exception as exc:
            raise self._translate(exc) from exc
        etag = (meta.etag or "").lower()
        return RemoteFile(size=meta.size, sha256=etag if _SHA256.match(etag) else None, commit=meta.commit_hash)

    def reconcile(self, remote: RemoteFile) -> bool:
        """Take the hub's word for the file's size and checksum; True when the file changed.

        A file that changed on the hub since its partial bytes were fetched starts again
        from byte 0: appending the new file's bytes to the old one's would make neither.
        """
        size = remote.size if remote.size is not None else self.file.size
        sha256 = remote.sha256 or self.file.sha256
        self.commit = remote.commit or self.commit
        changed = size != self.file.size or bool(
            sha256 and self.file.sha256 and sha256.lower() != self.file.sha256.lower())
        if changed or sha256 != self.file.sha256:
            from dataclasses import replace

            self.file = replace(self.file, size=size, sha256=sha256)
        if changed and self.bytes_on_disk():
            log.info("%s in %s changed on the hub (%s bytes, sha256 %s); starting it again",
                     self.file.path, self.file.repo_id, size, sha256)
            self._restart()
        return changed

    # -- the partial file ------------------------------------------------------------------
    def bytes_on_disk(self) -> int:
        """How many bytes of the file the partial file holds."""
        try:
            return self.partial.stat().st_size
        except FileNotFoundError:
            return 0

    def digest(self) -> str:
        """The SHA-256 of the partial file's bytes (hashing again what this object has not seen)."""
        self._catch_up()
        return self._hasher.hexdigest()

    def complete(self) -> bool:
        """Whether the partial file holds as many bytes as the file has."""
        return self.bytes_on_disk() == self.file.size

    def _restart(self) -> None:
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        with open(self.partial, "wb"):
            pass
        self._hasher, self._hashed, self.etag = hashlib.sha256(), 0, None
        self.on_progress(0)

    def _catch_up(self) -> int:
        """Make the hasher cover the whole partial file; returns its size.

        After a restart of the app, or a write that failed half-way, the hasher has seen
        fewer bytes than the file holds (or other ones): the file is read again from its
        start, since its bytes are what the checksum must be of.
        """
        on_disk = self.bytes_on_disk()
        if on_disk > self.file.size:
            log.info("%s holds more bytes than the file has; starting it again", self.partial)
            self._restart()
            return 0
        if self._hashed == on_disk:
            return on_disk
        self._hasher, self._hashed = hashlib.sha256(), 0
        with open(self.partial, "rb") as handle:
            while self._hashed < on_disk:
                if self.stop.is_set():
                    raise DownloadStopped
                block = handle.read(min(_HASH_BLOCK, on_disk - self._hashed))
                if not block:
                    break
                self._hasher.update(block)
                self._hashed += len(block)
        return self._hashed

    # -- the transfer ----------------------------------------------------------------------
    def interrupt(self) -> None:
        """Wake the thread reading this file's bytes, from another thread, once ``stop`` is set.

        ``stop`` alone is seen only between chunks: a connection that went silent would keep
        the reader waiting for the whole timeout (and a closing app alive). The socket is shut
        down rather than closed: on Linux closing a socket does not wake a ``recv`` blocked on
        it in another thread, a shutdown does. The reader then fails, and takes that failure
        as :class:`DownloadStopped` since ``stop`` is set.
        """
        with self._live_lock:
            response = self._live
        if response is None:
            return  # not reading: fetch() checks ``stop`` once its response is known
        stream = getattr(response, "extensions", {}).get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        try:
            if isinstance(sock, socket.socket):
                sock.shutdown(socket.SHUT_RDWR)
            else:
                response.close()
        except Exception as exc:  # already closed by its reader: nothing left to wake
            log.debug("interrupting the download of %s: %s", self.file.path, exc)

    def fetch(self) -> None:
        """One attempt: GET the bytes from the end of the partial file to the end of the file.

        Raises :class:`DownloadStopped` when ``stop`` is set, ``_Retryable`` for a failure
        worth another attempt, :class:`DownloadError` for one that is not.
        """
        from huggingface_hub.utils import get_session

        try:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self.partial.touch(exist_ok=True)
        except OSError as exc:
            raise self._disk_error(exc, self.bytes_on_disk()) from exc
        offset = self._catch_up()
        if offset == self.file.size:
            return
        try:
            with get_session().stream("GET", self.url, headers=self._headers(offset),
                                      timeout=self._timeouts()) as response:
                with self._live_lock:
                    self._live = response
                try:
                    if self.stop.is_set():  # set before the response was known: interrupt() could not wake us
                        raise DownloadStopped
                    offset = self._check_reply(response, offset)
                    self._receive(response, offset)
                finally:
                    with self._live_lock:
                        self._live = None
        except (DownloadError, DownloadStopped):
            raise
        except Exception as exc:
            if self.stop.is_set():  # the connection was cut by interrupt(): stopped, not failed
                raise DownloadStopped from None
            if isinstance(exc, _Retryable):
                raise
            if isinstance(exc, _network_errors()):
                raise _Retryable(f"the connection failed ({_reason(exc)})") from exc
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    def _headers(self, offset: int) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        from desktop_app import __version__

        # token=False, not None: huggingface_hub would otherwise send a token it finds on the
        # machine to whatever endpoint this is.
        headers = build_hf_headers(token=self.token or False, library_name="parley", library_version=__version__)
        headers["Accept-Encoding"] = "identity"  # the bytes counted must be the file's bytes
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self.etag and not self.etag.startswith("W/"):  # a weak validator cannot guard a range
                headers["If-Range"] = self.etag
        return headers

    def _timeouts(self) -> Any:
        from huggingface_hub.utils import get_session

        client = importlib.import_module(type(get_session()).__module__.split(".")[0])
        # No overall limit: a large model takes as long as it takes; a silent connection does not.
        return client.Timeout(self.timeout, connect=min(self.timeout, 15.0))

    def _check_reply(self, response: Any, offset: int) -> int:
        """Check the reply's status and range; returns the offset its body starts at."""
        status = response.status_code
        if status >= 400:
            response.read()
            if status in RETRY_STATUSES or status >= 500:
                raise _Retryable(f"the hub answered {status}", _retry_after(response))
            from huggingface_hub.utils import hf_raise_for_status

            hf_raise_for_status(response)
            raise DownloadError(f"The hub answered {status} to the download of {self.file.path}.")
        if status == 200:
            if offset:
                # The server sent the whole file: it ignored the range, or the file changed
                # (If-Range). Appending it would double the start of the model.
                log.info("the server answered 200 to a range request for %s; starting it again", self.file.path)
                self._restart()
            offset = 0
        elif status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("content-range", "").strip())
            if match is None or int(match[1]) != offset or (match[3] != "*" and int(match[3]) != self.file.size):
                raise DownloadError(
                    f"The server answered the resume of {self.file.path} from byte {offset:,} with another part "
                    f"of the file ({response.headers.get('content-range') or 'no Content-Range'}); nothing of it "
                    "was kept. Try again; if it happens again, the mirror is broken: use another.")
        else:
            raise DownloadError(f"The hub answered {status} to the download of {self.file.path}, which is not "
                                "a file's bytes. Try again later; if it keeps happening, use another mirror.")
        etag = response.headers.get("etag")
        if etag:
            self.etag = etag
        return offset

    def _receive(self, response: Any, offset: int) -> None:
        size = self.file.size
        try:
            handle = open(self.partial, "r+b", buffering=0)
        except OSError as exc:
            raise self._disk_error(exc, offset) from exc
        with handle:
            handle.seek(offset)
            handle.truncate()
            for chunk in response.iter_bytes():
                if self.stop.is_set():
                    raise DownloadStopped
                if offset + len(chunk) > size:
                    raise DownloadError(f"The hub sent more bytes of {self.file.path} than its {size:,}; the "
                                        "extra bytes were not kept. Try again; if it happens again, the file may "
                                        "have changed on the hub: look at the repository's files again.")
                try:
                    write_chunk(handle, chunk)
                except OSError as exc:
                    raise self._disk_error(exc, offset) from exc
                self._hasher.update(chunk)
                offset += len(chunk)
                self._hashed = offset
                self.on_progress(offset)
        if offset < size:
            raise _Retryable(f"the connection ended after {offset:,} of {size:,} bytes")

    def _disk_error(self, exc: OSError, offset: int) -> DownloadError:
        self._hashed = -1  # the bytes on disk are no longer known: hash them again on resume
        left = self.file.size - offset
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return DownloadError(
                f"The disk is full: the download of {self.file.path} stopped after {offset:,} of "
                f"{self.file.size:,} bytes. What was downloaded is kept; free at least {_size(left)} on "
                "that disk, then resume it.", kind="disk")
        return DownloadError(f"Parley could not write {self.partial} ({exc.strerror or exc}); the bytes downloaded "
                             "so far are kept. Check the disk and the folder's permissions, then resume it.",
                             kind="disk")

    def _translate(self, exc: BaseException) -> BaseException:
        """The failure a person should see for what huggingface_hub or its client raised."""
        from desktop_app.core.hub import hub_error
        from desktop_app.core.hub_errors import (
            HubGatedError,
            HubRepoNotFoundError,
            HubTokenError,
            HubUnreachableError,
        )

        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status is not None and (status in RETRY_STATUSES or status >= 500):
            return _Retryable(f"the hub answered {status}", _retry_after(response))
        if isinstance(exc, _network_errors()):
            return _Retryable(f"the connection failed ({_reason(exc)})")
        hub = hub_error(exc, self.endpoint, repo_id=self.file.repo_id, path=self.file.path,
                        token_sent=bool(self.token))
        if hub is None:
            return exc
        if isinstance(hub, HubUnreachableError) and "HF_HUB_OFFLINE" not in str(hub):
            return _Retryable(str(hub))
        kind = ("gated" if isinstance(hub, HubGatedError) else "token" if isinstance(hub, HubTokenError)
                else "not_found" if isinstance(hub, HubRepoNotFoundError)
                else "network" if isinstance(hub, HubUnreachableError) else "server")
        return DownloadError(str(hub), kind=kind)


def fetch_part(transfer: PartTransfer, *, retries: int = 5, backoff: float = 1.0, max_backoff: float = 60.0,
               before_transfer: Callable[[], None] | None = None,
               on_retry: Callable[[str], None] | None = None) -> None:
    """Fetch ``transfer``'s file to its end, through failures worth retrying.

    Each attempt asks the hub for the file's metadata (a HEAD request), calls
    ``before_transfer`` (the disk-space check) and continues from the bytes on disk. A
    failure is retried after ``backoff`` seconds, doubling up to ``max_backoff`` (or what
    a ``Retry-After`` header asks); ``retries`` failures in a row without a byte of progress
    end it with a :class:`DownloadError`. ``on_retry(message)`` says what is about to happen.
    The wait ends at once when ``transfer.stop`` is set.
    """
    failures = 0
    while True:
        if transfer.stop.is_set():
            raise DownloadStopped
        before = transfer.bytes_on_disk()
        try:
            transfer.reconcile(transfer.head())
            if before_transfer is not None:
                before_transfer()
            transfer.fetch()
            return
        except _Retryable as exc:
            if transfer.stop.is_set():
                raise DownloadStopped from None
            if transfer.bytes_on_disk() > before:
                failures = 0  # a connection that drops after progress is not the same failure again
            failures += 1
            if failures > retries:
                done = transfer.bytes_on_disk()
                raise DownloadError(
                    f"The download of {transfer.file.path} failed {failures} times in a row ({exc}). "
                    f"{_size(done)} downloaded so far are kept: resume it when the connection is back. If it keeps "
                    "failing, the hub or the mirror may be down.", kind="network") from None
            delay = min(max_backoff, backoff * 2 ** (failures - 1))
            if exc.retry_after is not None:
                delay = min(max_backoff, max(delay, exc.retry_after))
            reason = str(exc)
            message = (f"{reason[:1].upper()}{reason[1:]}; trying again in {_seconds(delay)} "
                       f"(attempt {failures + 1} of {retries + 1})")
            log.info("%s: %s", transfer.file.path, message)
            if on_retry is not None:
                on_retry(message)
            if transfer.stop.wait(delay):
                raise DownloadStopped from None


def _network_errors() -> tuple[type[BaseException], ...]:
    """The network errors of huggingface_hub's HTTP client (it has used requests, httpx, httpx2)."""
    from huggingface_hub.utils import get_session

    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    module = importlib.import_module(type(get_session()).__module__.split(".")[0])
    for name in ("TransportError", "ConnectionError", "Timeout"):
        error = getattr(module, name, None)
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return tuple(found)


def _retry_after(response: Any) -> float | None:
    try:
        value = float(response.headers.get("retry-after", ""))
    except (TypeError, ValueError, AttributeError):
        return None
    return value if value >= 0 else None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _seconds(delay: float) -> str:
    return f"{delay:.0f} s" if delay >= 1 else f"{delay:.1f} s"


def _size(size: int) -> str:
    from desktop_app.core.hub_fit import format_bytes

    return format_bytes(size)
