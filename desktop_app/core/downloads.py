"""Downloads of hub models into the library, which can be paused, resumed (also after a restart) and cancelled.

    manager = DownloadManager(paths, library, endpoint=hub.endpoint, token=read_token,  # or a str, or None
                              on_change=lambda status: ...)
    status = manager.add(details.models[0])     # queued; runs in the background
    manager.pause(status.id); manager.resume(status.id); manager.cancel(status.id)
    manager.wait(status.id)                     # blocks until done, failed, paused or cancelled
    manager.close()                             # when the app quits

A download's files go to a partial folder, ``models_dir/.downloads/<id>/files/``, next to
a ``download.json`` that remembers it. Only when every part is complete and matches the hub's
SHA-256 (its size, for a file the hub keeps no checksum of) are the files moved to
``models_dir/<owner>__<repo>/`` and added to the :class:`~desktop_app.core.models.ModelLibrary`:
the library never lists a model that is incomplete or unverified. How one file is fetched
(Range, resume, the checksum, retries) is :mod:`desktop_app.core.download_transfer`.

Threads: each running download has its own worker thread (at most ``max_parallel``; the
others wait, queued). ``on_change(status)`` is called from those threads, and from the
thread calling a method when the change happens at once (pausing a queued download, say);
never with a lock of the manager held, so it may call the manager back. It must return
quickly (a window emits a Qt signal from it); calls are made one at a time, in order.

After a restart, downloads that were running or queued come back paused, with
``interrupted`` set: a window can offer to continue them, and nothing uses the network
before the user says so. One manager per library folder.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from desktop_app.core.download_transfer import DownloadError, DownloadStopped, PartTransfer, fetch_part
from desktop_app.core.errors import ParleyError
from desktop_app.core.hub_files import HubFile, HubModelFile, split_part
from desktop_app.core.paths import AppPaths, atomic_write_text

__all__ = [
    "DISK_MARGIN",
    "DownloadError",
    "DownloadManager",
    "DownloadState",
    "DownloadStatus",
    "Installer",
    "TokenSource",
    "download_id_for",
]

log = logging.getLogger(__name__)

#: Space left free on the disk after a download (other programs need some too).
DISK_MARGIN = 256 * 1024 * 1024
#: How often ``on_change`` hears of progress at most (state changes are always reported).
PROGRESS_INTERVAL = 0.1
_STATE_FILE = "download.json"
_FORMAT = 1


class DownloadState(str, enum.Enum):
    """Where a download is. DONE, FAILED and CANCELLED are final until the user acts
    (``retry``/``resume`` a failed one)."""

    QUEUED = "queued"  # waiting for a free slot (max_parallel)
    DOWNLOADING = "downloading"
    PAUSED = "paused"  # by the user, or by an app restart (then ``interrupted``)
    VERIFYING = "verifying"  # every byte is here: checking the file, moving it into the library
    DONE = "done"  # in the library (``entry_name``, ``path``)
    FAILED = "failed"  # ``error`` says why; the bytes are kept unless they were wrong
    CANCELLED = "cancelled"  # the partial files are deleted


_ACTIVE = (DownloadState.QUEUED, DownloadState.DOWNLOADING, DownloadState.VERIFYING)


@dataclass(frozen=True)
class DownloadStatus:
    """A snapshot of one download, as ``on_change`` and the methods return it."""

    id: str
    model: HubModelFile
    state: DownloadState
    done_bytes: int
    total_bytes: int
    #: bytes per second, smoothed over the last seconds; 0 when nothing is moving
    speed: float = 0.0
    #: seconds left at that speed; None when not known
    eta: float | None = None
    #: what is happening now, when it is worth saying ("Checking the bytes downloaded before…",
    #: "The connection failed (…); trying again in 4 s (attempt 2 of 6)")
    message: str | None = None
    #: why it failed (state FAILED), a sentence that says what to do
    error: str | None = None
    #: the cause, for the next step a window offers: see :class:`DownloadError`'s ``kind``
    error_kind: str | None = None
    #: paused because the app stopped while it ran (or waited)
    interrupted: bool = False
    #: the library entry and its file (the first part), once DONE
    entry_name: str | None = None
    path: str | None = None

    @property
    def fraction(self) -> float:
        """How much is done, 0.0 to 1.0."""
        return min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else 0.0

    @property
    def label(self) -> str:
        """What the download is, for people: its file name (and its number of parts)."""
        return _label(self.model)

    @property
    def finished(self) -> bool:
        """Done, failed or cancelled: nothing runs for it until the user acts."""
        return self.state in (DownloadState.DONE, DownloadState.FAILED, DownloadState.CANCELLED)


#: ``installer(model, files, origin) -> (entry name, path)``: puts a verified download where
#: it belongs. ``files`` are the parts in the partial folder (moved away or left, as it
#: likes: the folder is deleted after); ``origin`` is what the library records of it.
Installer = Callable[[HubModelFile, list[Path], dict[str, Any]], tuple[str, Path]]

#: The hub token: the token itself (None: none), or a function that returns it, called on a
#: download's worker thread each time it starts (so a token saved meanwhile is used, and a
#: slow keyring is never read on the caller's thread).
TokenSource = Union[str, None, Callable[[], Union[str, None]]]


@dataclass
class _Part:
    """What is known of one part beyond its HubFile: persisted."""

    etag: str | None = None
    commit: str | None = None
    verified: bool = False
    mtime_ns: int | None = None
    done: int = 0  # bytes on disk (not persisted: read from the file)


@dataclass
class _Run:
    """One stretch of a download on its worker thread."""

    stop: threading.Event
    thread: threading.Thread | None = None
    installing: bool = False
    transfer: PartTransfer | None = None  # the part being fetched, for interrupt()
    endpoint: str = ""  # where this run's requests go, and the token sent there (read when it starts)
    token: str | None = None

    def halt(self) -> None:
        """Ask the worker to stop, waking it at once if it waits on a silent connection."""
        self.stop.set()
        transfer = self.transfer
        if transfer is not None:
            transfer.interrupt()


class _Download:
    """The manager's record of one download (guarded by the manager's lock)."""

    def __init__(self, download_id: str, model: HubModelFile, folder: Path, endpoint: str,
                 created: float | None = None):
        self.id = download_id
        self.model = model
        self.folder = folder
        self.endpoint = endpoint  # the hub the model was found on: its requests go there
        self.created = created if created is not None else time.time()
        self.parts = [_Part() for _ in model.parts]
        self.state = DownloadState.QUEUED
        self.error: str | None = None
        self.error_kind: str | None = None
        self.message: str | None = None
        self.interrupted = False
        self.entry_name: str | None = None
        self.path: str | None = None
        self.run: _Run | None = None
        self.speed = _Speed()
        self.notified = 0.0
        self.persist_lock = threading.Lock()

    def partial(self, index: int) -> Path:
        return self.folder / "files" / Path(self.model.parts[index].path).name

    def read_sizes(self) -> None:
        for i, part in enumerate(self.parts):
            try:
                part.done = self.partial(i).stat().st_size
            except FileNotFoundError:
                part.done = 0

    @property
    def done(self) -> int:
        return sum(min(p.done, f.size) for p, f in zip(self.parts, self.model.parts))

    def remaining(self) -> int:
        return max(0, self.model.size - self.done)

    def status(self) -> DownloadStatus:
        transferring = self.state == DownloadState.DOWNLOADING
        speed = self.speed.rate if transferring else 0.0
        eta = self.remaining() / speed if transferring and speed > 0 else None
        return DownloadStatus(self.id, self.model, self.state, self.done, self.model.size, speed, eta, self.message,
                              self.error, self.error_kind, self.interrupted, self.entry_name, self.path)

    def to_json(self) -> dict[str, Any]:
        # "running": the user wants it to run (it comes back ``interrupted`` after a restart).
        running = self.state in _ACTIVE or (self.state == DownloadState.PAUSED and self.interrupted)
        state = "running" if running else self.state.value
        return {"format": _FORMAT, "id": self.id, "created": self.created, "endpoint": self.endpoint,
                "state": state, "error": self.error,
                "error_kind": self.error_kind, "model": _model_to_json(self.model),
                "parts": [{"etag": p.etag, "commit": p.commit, "verified": p.verified, "mtime_ns": p.mtime_ns}
                          for p in self.parts]}


class _Speed:
    """Bytes per second, an exponential moving average over half-second samples."""

    def __init__(self) -> None:
        self.rate = 0.0
        self._time: float | None = None
        self._bytes = 0

    def reset(self, done: int) -> None:
        self.rate, self._time, self._bytes = 0.0, time.monotonic(), done

    def sample(self, done: int) -> None:
        now = time.monotonic()
        if self._time is None:
            self._time, self._bytes = now, done
            return
        elapsed = now - self._time
        if elapsed < 0.5:
            return
        instant = max(0.0, (done - self._bytes) / elapsed)
        self.rate = instant if self.rate == 0 else 0.7 * self.rate + 0.3 * instant
        self._time, self._bytes = now, done


class DownloadManager:
    """The queue of hub downloads into one library (see the module's docstring for the threads).

    ``endpoint`` is the hub's address, ``token`` its access token (sent as ``Authorization``;
    None sends none), or a function that returns it (see :data:`TokenSource`); both can be
    changed later (:meth:`set_hub`). A download remembers the endpoint it was added on and
    keeps going there; the token is sent only to the manager's current endpoint, the one it
    belongs to. ``retries`` failures in a row without progress end a download; the
    waits between them start at ``backoff`` seconds and double up to ``max_backoff``.
    ``timeout`` is how long a silent connection is waited for. ``installers`` put finished
    downloads in place by their model's ``kind``: "model" (the default) adds it to ``library``.
    """

    def __init__(self, paths: AppPaths, library: Any, *, endpoint: str, token: TokenSource = None,
                 max_parallel: int = 2, on_change: Callable[[DownloadStatus], None] | None = None,
                 retries: int = 5, backoff: float = 1.0, max_backoff: float = 60.0, timeout: float = 30.0,
                 installers: Mapping[str, Installer] | None = None):
        self.paths = paths
        self.library = library
        self._endpoint = endpoint.rstrip("/")
        self._token = token
        self.retries, self.backoff, self.max_backoff, self.timeout = retries, backoff, max_backoff, timeout
        self.on_change = on_change
        self.installers: dict[str, Installer] = {"model": self._install_model, **(installers or {})}
        self._max_parallel = max(1, int(max_parallel))
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._notify_lock = threading.RLock()
        self._downloads: dict[str, _Download] = {}
        self._closed = False
        self.warnings: list[str] = []
        self._load()

    # -- the public methods ----------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The hub new downloads are fetched from (one already added keeps its own)."""
        with self._lock:
            return self._endpoint

    @endpoint.setter
    def endpoint(self, value: str) -> None:
        with self._lock:
            self._endpoint = value.rstrip("/")

    @property
    def token(self) -> TokenSource:
        """The token for :attr:`endpoint`, or the function that returns it."""
        with self._lock:
            return self._token

    @token.setter
    def token(self, value: TokenSource) -> None:
        with self._lock:
            self._token = value

    def set_hub(self, endpoint: str, token: TokenSource) -> None:
        """Change the endpoint and its token together (a run starting meanwhile sees both or neither)."""
        with self._lock:
            self._endpoint, self._token = endpoint.rstrip("/"), token

    @property
    def folder(self) -> Path:
        """Where partial downloads live: ``models_dir/.downloads``."""
        return self.paths.models_dir / ".downloads"

    @property
    def max_parallel(self) -> int:
        """How many downloads run at once; the others wait, queued."""
        return self._max_parallel

    @max_parallel.setter
    def max_parallel(self, value: int) -> None:
        with self._lock:
            self._max_parallel = max(1, int(value))
            self._schedule()

    def add(self, model: HubModelFile) -> DownloadStatus:
        """Queue ``model`` for download; returns its status at once (the work runs in the background).

        The same model again (same repository and first file) is the same download: a paused
        or failed one is resumed (from its bytes on disk), a running one is left alone. A
        model already in the library from this file, at this checksum, is DONE at once.
        """
        if not model.parts:
            raise ValueError("A model to download needs at least one file.")
        if model.kind not in self.installers:
            raise ValueError(f"Parley cannot install a download of kind {model.kind!r}.")
        download_id = download_id_for(model)
        present = self._in_library(model)
        with self._lock:
            self._check_open()
            record = self._downloads.get(download_id)
            # DONE with its thread still ending: ``present`` may have been read before the install
            # saved the entry, so it says nothing; queueing it again would install it twice.
            if record is not None and (record.state in _ACTIVE or record.run is not None and (
                    present is not None or record.state == DownloadState.DONE)):
                return record.status()
            if present is not None:
                # Already in the library at this checksum: nothing to fetch; a leftover partial is redundant.
                stale, record = record, _Download(download_id, model, self.folder / download_id, self._endpoint)
                self._mark_installed(record, present)
                self._downloads[download_id] = record
            else:
                stale = None
                # A cancelled one whose thread is still stopping is taken up again rather than replaced:
                # that thread would otherwise delete the new download's folder on its way out.
                if record is None or (record.state in (DownloadState.DONE, DownloadState.CANCELLED)
                                      and record.run is None):
                    record = _Download(download_id, model, self.folder / download_id, self._endpoint)
                    self._downloads[download_id] = record
                else:
                    self._take_model(record, model)
                    if record.run is None:  # found again, maybe on another hub: it is fetched from there now
                        record.endpoint = self._endpoint
                if record.run is None:
                    record.read_sizes()
                record.state, record.error, record.error_kind, record.message = DownloadState.QUEUED, None, None, None
                record.interrupted = False
        if present is not None:
            if stale is not None:
                self._delete_partial(stale)
        else:
            self._persist(record)
        self._notify(record, force=True)
        with self._lock:
            self._schedule()
            return record.status()

    def downloads(self) -> list[DownloadStatus]:
        """Every download this manager knows, oldest first (finished ones until :meth:`forget`)."""
        with self._lock:
            return [d.status() for d in sorted(self._downloads.values(), key=lambda d: d.created)]

    def status(self, download_id: str) -> DownloadStatus:
        """One download's status; KeyError for an id the manager does not know."""
        with self._lock:
            return self._get(download_id).status()

    def find(self, model: HubModelFile) -> DownloadStatus | None:
        """The download of ``model`` (by repository and first file), if there is one."""
        with self._lock:
            record = self._downloads.get(download_id_for(model))
            return record.status() if record is not None else None

    def pause(self, download_id: str) -> DownloadStatus:
        """Pause a queued or running download; its bytes stay on disk for :meth:`resume`.

        A running one stops at its next chunk (at once on a live connection); other states
        are left as they are (a download being verified finishes).
        """
        with self._lock:
            record = self._get(download_id)
            if record.state not in (DownloadState.QUEUED, DownloadState.DOWNLOADING):
                return record.status()
            record.state, record.message = DownloadState.PAUSED, None
            run = record.run
        if run is not None:
            run.halt()
        self._persist(record)
        self._notify(record, force=True)
        with self._lock:
            self._schedule()
            return record.status()

    def resume(self, download_id: str) -> DownloadStatus:
        """Queue a paused or failed download again; it continues from the bytes on disk.

        One whose model is in the library already, at this checksum, is DONE at once (and its
        partial folder deleted) instead.
        """
        with self._lock:
            model = self._get(download_id).model
        present = self._in_library(model)
        with self._lock:
            record = self._get(download_id)
            self._check_open()
            if record.state not in (DownloadState.PAUSED, DownloadState.FAILED):
                return record.status()
            finished = present is not None and record.run is None
            if finished:
                self._mark_installed(record, present)
            else:
                if record.run is None:
                    record.read_sizes()
                record.state, record.error, record.error_kind, record.message = DownloadState.QUEUED, None, None, None
                record.interrupted = False
        if finished:
            self._delete_partial(record)
        else:
            self._persist(record)
        self._notify(record, force=True)
        with self._lock:
            self._schedule()
            return record.status()

    def retry(self, download_id: str) -> DownloadStatus:
        """Try a failed download again (the same as :meth:`resume`)."""
        return self.resume(download_id)

    def cancel(self, download_id: str) -> DownloadStatus:
        """Stop a download and delete its partial files. One being moved into the library finishes."""
        with self._lock:
            record = self._get(download_id)
            if record.state in (DownloadState.DONE, DownloadState.CANCELLED):
                return record.status()
            if record.run is not None and record.run.installing:
                return record.status()
            record.state, record.message, record.interrupted = DownloadState.CANCELLED, None, False
            run = record.run
        if run is not None:
            run.halt()
        else:
            self._delete_partial(record)
        self._notify(record, force=True)
        with self._lock:
            self._schedule()
            return record.status()

    def forget(self, download_id: str) -> None:
        """Drop a done or cancelled download from :meth:`downloads` (nothing on disk changes)."""
        with self._lock:
            record = self._get(download_id)
            if record.state not in (DownloadState.DONE, DownloadState.CANCELLED):
                raise ValueError(f"The download of {_label(record.model)} is {record.state.value}; cancel it first.")
            del self._downloads[download_id]

    def wait(self, download_id: str, timeout: float | None = None) -> DownloadStatus:
        """Block until the download is done, failed, cancelled or paused and its thread has stopped.

        Returns its status then, or as it is when ``timeout`` seconds have passed. For the
        command line and tests; a window listens to ``on_change`` instead.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                record = self._get(download_id)
                if record.state not in _ACTIVE and record.run is None:
                    return record.status()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return record.status()
                self._changed.wait(0.5 if left is None else min(left, 0.5))

    def close(self, timeout: float = 3.0) -> None:
        """Stop every running download (its bytes are kept, and it is paused and ``interrupted``
        for the next manager); waits up to ``timeout`` seconds for the threads to end.

        A live connection is cut at once, even a silent one. The threads are daemons: one still
        in a request that has not answered yet (a HEAD, a connection being set up) does not keep
        the app alive after the wait; its bytes on disk are what the next manager resumes from.
        """
        with self._lock:
            self._closed = True
            runs = [r.run for r in self._downloads.values() if r.run is not None]
        for run in runs:
            run.halt()
        deadline = time.monotonic() + timeout
        for run in runs:
            if run.thread is not None:
                run.thread.join(max(0.0, deadline - time.monotonic()))
        stopped = []
        with self._lock:
            for record in self._downloads.values():
                if record.state in _ACTIVE:
                    record.state, record.interrupted, record.message = DownloadState.PAUSED, True, None
                    stopped.append(record)
        for record in stopped:
            self._notify(record, force=True)

    # -- the worker ------------------------------------------------------------------------
    def _schedule(self) -> None:
        """Start queued downloads while there are free slots (call with the lock held)."""
        if self._closed:
            return
        running = sum(1 for d in self._downloads.values() if d.run is not None)
        for record in sorted(self._downloads.values(), key=lambda d: d.created):
            if running >= self._max_parallel:
                break
            if record.state != DownloadState.QUEUED or record.run is not None:
                continue
            run = _Run(threading.Event())
            record.run, record.state, record.message = run, DownloadState.DOWNLOADING, None
            record.speed.reset(record.done)
            run.thread = threading.Thread(target=self._work, args=(record, run), name=f"download-{record.id[:24]}",
                                          daemon=True)
            running += 1
            run.thread.start()
            # Reported from the worker: the caller holds the lock, and on_change is never called with it.

    def _work(self, record: _Download, run: _Run) -> None:
        """A download's worker thread: fetch every part, verify, install."""
        self._notify(record, force=True)
        try:
            run.endpoint, run.token = self._credentials(record)
            for index in range(len(record.model.parts)):
                self._fetch(record, run, index)
            with self._lock:
                if run.stop.is_set() or record.state != DownloadState.DOWNLOADING:
                    raise DownloadStopped
                run.installing = True
                record.state, record.message = DownloadState.VERIFYING, None
            self._notify(record, force=True)
            name, path = self._install(record)
            with self._lock:
                record.state, record.entry_name, record.path = DownloadState.DONE, name, str(path)
            self._delete_partial(record)
            log.info("downloaded %s from %s into the library as %s", _label(record.model), record.model.repo_id, name)
        except DownloadStopped:
            pass
        except DownloadError as exc:
            self._fail(record, run, str(exc), exc.kind)
        except ParleyError as exc:  # the files are what the hub has, but not a model Parley can use
            self._fail(record, run, str(exc), "file")
        except Exception as exc:
            log.exception("the download of %s failed", _label(record.model))
            self._fail(record, run, f"The download of {_label(record.model)} failed unexpectedly ({type(exc).__name__}: "
                                    f"{exc}). The bytes downloaded so far are kept; try again.", "unexpected")
        finally:
            with self._lock:
                record.run = None
                cancelled = record.state == DownloadState.CANCELLED
                settled = record.state not in _ACTIVE
            if cancelled:
                self._delete_partial(record)
            elif record.state != DownloadState.DONE:
                self._persist(record)
            if settled:
                self._notify(record, force=True)
            with self._lock:
                self._schedule()
                self._changed.notify_all()

    def _credentials(self, record: _Download) -> tuple[str, str | None]:
        """The endpoint a run's requests go to and the token sent there; on the worker thread,
        since a token source may read the system keyring."""
        with self._lock:
            endpoint, current, source = record.endpoint, self._endpoint, self._token
        if endpoint != current:
            return endpoint, None  # the token is the current hub's: never sent to another one
        try:
            token = source() if callable(source) else source
        except Exception as exc:  # a locked or broken keyring: go on without; a gated repo says to log in
            log.warning("could not read the hub token for %s: %s", endpoint, exc)
            token = None
        return endpoint, token or None

    def _fetch(self, record: _Download, run: _Run, index: int) -> None:
        """Fetch one part to its end and check it against the hub's checksum."""
        file, part = record.model.parts[index], record.parts[index]
        partial = record.partial(index)
        if part.verified and _unchanged(partial, file.size, part.mtime_ns):
            part.done = file.size
            return
        part.verified = False

        def progress(done: int) -> None:
            part.done = done
            record.speed.sample(record.done)
            with self._lock:
                record.message = None if record.state == DownloadState.DOWNLOADING else record.message
            self._notify(record)

        def retrying(message: str) -> None:
            with self._lock:
                record.message = message
            self._notify(record, force=True)

        transfer = PartTransfer(file, partial, endpoint=run.endpoint, token=run.token, etag=part.etag, stop=run.stop,
                                on_progress=progress, timeout=self.timeout)
        run.transfer = transfer
        self._check_space(record)  # with the sizes known so far, before asking the hub anything
        if part.done and file.size:
            with self._lock:
                record.message = f"Checking the {_size(part.done)} downloaded before…"
            self._notify(record, force=True)
        try:
            fetch_part(transfer, retries=self.retries, backoff=self.backoff, max_backoff=self.max_backoff,
                       before_transfer=lambda: self._adopt(record, index, transfer), on_retry=retrying)
        finally:
            part.done = transfer.bytes_on_disk()
            if transfer.etag != part.etag or transfer.commit != part.commit:
                part.etag, part.commit = transfer.etag, transfer.commit or part.commit
                self._persist(record)
        if run.stop.is_set():
            raise DownloadStopped
        file = transfer.file
        expected = file.sha256
        if transfer.bytes_on_disk() != file.size or (expected and transfer.digest() != expected.lower()):
            partial.unlink(missing_ok=True)
            part.done, part.etag = 0, None
            raise DownloadError(
                f"The download of {_label(record.model)} did not match the hub's checksum; the file was deleted. "
                "Try again; if it happens again the mirror may be serving a different file.", kind="checksum")
        part.verified, part.mtime_ns = True, partial.stat().st_mtime_ns
        self._persist(record)

    def _adopt(self, record: _Download, index: int, transfer: PartTransfer) -> None:
        """Take the hub's size and checksum of a part (from its HEAD reply), then check the disk."""
        with self._lock:
            if transfer.file != record.model.parts[index]:
                parts = list(record.model.parts)
                parts[index] = transfer.file
                record.model = dataclasses.replace(record.model, parts=tuple(parts))
            record.parts[index].done = transfer.bytes_on_disk()
        self._persist(record)
        self._check_space(record)

    def _check_space(self, record: _Download) -> None:
        """Refuse to go on when the disk cannot hold what this download and the running ones still need."""
        with self._lock:
            need = record.remaining() + sum(d.remaining() for d in self._downloads.values()
                                            if d is not record and d.run is not None)
        self.folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.folder).free
        if free < need + DISK_MARGIN:
            raise DownloadError(
                f"There is not enough disk space to download {_label(record.model)}: it needs {_size(need)} more "
                f"and {self.paths.models_dir} has {_size(free)} free (Parley keeps {_size(DISK_MARGIN)} spare). "
                "Free some space, then try again.", kind="disk")

    def _fail(self, record: _Download, run: _Run, message: str, kind: str) -> None:
        with self._lock:
            if record.run is not run or record.state not in (DownloadState.DOWNLOADING, DownloadState.VERIFYING):
                return  # paused or cancelled meanwhile: the user's word stands
            record.state, record.error, record.error_kind, record.message = DownloadState.FAILED, message, kind, None
        log.info("download of %s failed: %s", _label(record.model), message)

    # -- into the library ------------------------------------------------------------------
    def _install(self, record: _Download) -> tuple[str, Path]:
        model = record.model
        files = [record.partial(i) for i in range(len(model.parts))]
        first = record.parts[0]
        origin = {
            "repo_id": model.repo_id,
            "revision": first.commit or model.first.revision,
            "endpoint": record.endpoint,
            "name": model.name,
            "quantization": model.quantization,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in model.parts],
            "downloaded": time.time(),
        }
        return self.installers[model.kind](model, files, origin)

    def _install_model(self, model: HubModelFile, files: list[Path], origin: dict[str, Any]) -> tuple[str, Path]:
        """The "model" installer: move the parts to ``models_dir/<owner>__<repo>/`` and add the model to the library."""
        from desktop_app.core.models import check_gguf_file

        check_gguf_file(files[0])  # a file llama.cpp cannot use is refused before it is moved anywhere
        folder = self._target_folder(model)
        folder.mkdir(parents=True, exist_ok=True)
        targets = [folder / Path(f.path).name for f in model.parts]
        moved: list[tuple[Path, Path]] = []
        try:
            for source, target in zip(files, targets):
                os.replace(source, target)
                moved.append((source, target))
            entry = self.library.add_downloaded(targets[0], origin=origin, name=_entry_name(model))
        except BaseException as exc:
            for source, target in moved:  # back where a retry finds them, verified
                os.replace(target, source)
            if isinstance(exc, OSError):  # a full disk, a read-only folder: the bytes are fine, keep them
                raise DownloadError(
                    f"Parley could not add {_label(model)} to the library ({exc.strerror or exc}). The downloaded "
                    f"files are kept: free some space on the disk of {self.paths.models_dir} (or check that "
                    "folder's permissions), then try again.", kind="disk") from exc
            raise
        return entry.name, Path(entry.path)

    def _target_folder(self, model: HubModelFile) -> Path:
        """``models_dir/<owner>__<repo>``, or ``…-2`` etc. when the library holds other files of that name there."""
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", model.repo_id.replace("/", "__"))
        names = [Path(f.path).name for f in model.parts]
        used = {str(Path(e.path).resolve()) for e in self.library.entries()}
        for n in range(1, 1000):
            folder = self.paths.models_dir / (base if n == 1 else f"{base}-{n}")
            # A file there the library does not list is an earlier download cut short by a crash.
            if not any(str((folder / name).resolve()) in used for name in names):
                return folder
        raise DownloadError(f"There are too many copies of {model.repo_id} in {self.paths.models_dir}.", kind="disk")

    @staticmethod
    def _mark_installed(record: _Download, entry: Any) -> None:
        """The model is in the library (``entry``) at this checksum: the download is DONE, nothing to fetch."""
        record.parts = [_Part(done=f.size) for f in record.model.parts]
        record.state, record.entry_name, record.path = DownloadState.DONE, entry.name, entry.path
        record.error = record.error_kind = record.message = None
        record.interrupted = False

    def _in_library(self, model: HubModelFile) -> Any:
        find = getattr(self.library, "find_downloaded", None)
        if find is None or model.kind != "model":
            return None
        return find(model.repo_id, model.first.path, model.first.sha256)

    # -- on disk ---------------------------------------------------------------------------
    def _persist(self, record: _Download) -> None:
        """Write the download's ``download.json`` (atomically), unless it is gone."""
        with record.persist_lock:
            with self._lock:
                if record.state in (DownloadState.DONE, DownloadState.CANCELLED):
                    return
                data = record.to_json()
            try:
                atomic_write_text(record.folder / _STATE_FILE, json.dumps(data, indent=2))
            except OSError as exc:
                log.warning("could not save the state of the download %s: %s", record.id, exc)

    def _delete_partial(self, record: _Download) -> None:
        with record.persist_lock:
            shutil.rmtree(record.folder, ignore_errors=True)
        with self._lock:
            if record.state == DownloadState.CANCELLED:
                for part in record.parts:
                    part.done = 0

    def _load(self) -> None:
        """Read the downloads a previous manager left: they come back paused (or failed)."""
        if not self.folder.is_dir():
            return
        for folder in sorted(self.folder.iterdir()):
            file = folder / _STATE_FILE
            if not file.is_file():
                continue
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
                model = _model_from_json(data["model"])
                # A download.json from before endpoints were kept: the manager's hub is the best guess.
                endpoint = str(data.get("endpoint") or self._endpoint).rstrip("/")
                record = _Download(str(data["id"]), model, folder, endpoint, float(data.get("created") or 0))
                saved = list(data.get("parts") or [])
                record.parts = [_Part(etag=p.get("etag"), commit=p.get("commit"), verified=bool(p.get("verified")),
                                      mtime_ns=p.get("mtime_ns")) for p in saved[:len(model.parts)]]
                record.parts += [_Part() for _ in range(len(model.parts) - len(record.parts))]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.warnings.append(f"The unfinished download in {folder} cannot be read ({exc}); it was left "
                                     "as it is. Delete that folder to free its space.")
                log.warning(self.warnings[-1])
                continue
            if record.id != folder.name:
                continue
            present = self._in_library(model)
            if present is not None:
                # Installed, then the app stopped before the partial folder went: nothing is left to do.
                self._mark_installed(record, present)
                self._delete_partial(record)
                self._downloads[record.id] = record
                continue
            record.read_sizes()
            if data.get("state") == DownloadState.FAILED.value:
                record.state, record.error = DownloadState.FAILED, data.get("error")
                record.error_kind = data.get("error_kind")
            else:
                record.state = DownloadState.PAUSED
                record.interrupted = data.get("state") == "running"
            self._downloads[record.id] = record

    # -- small things ----------------------------------------------------------------------
    def _get(self, download_id: str) -> _Download:
        try:
            return self._downloads[download_id]
        except KeyError:
            raise KeyError(f"There is no download {download_id!r}.") from None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("The download manager is closed.")

    def _take_model(self, record: _Download, model: HubModelFile) -> None:
        """A paused or failed download asked for again, maybe at another revision: parts that changed start over."""
        if model == record.model or record.run is not None:
            return
        old = {f.path: (f, p) for f, p in zip(record.model.parts, record.parts)}
        parts = []
        for file in model.parts:
            before = old.get(file.path)
            same = before is not None and before[0].size == file.size and (
                not file.sha256 or not before[0].sha256 or before[0].sha256 == file.sha256)
            if not same:
                (record.folder / "files" / Path(file.path).name).unlink(missing_ok=True)
            parts.append(before[1] if same else _Part())
        keep = {Path(f.path).name for f in model.parts}
        if (record.folder / "files").is_dir():
            for stale in (record.folder / "files").iterdir():
                if stale.name not in keep:
                    stale.unlink(missing_ok=True)
        record.model, record.parts = model, parts

    def _notify(self, record: _Download, force: bool = False) -> None:
        """Tell ``on_change``: always for a state change (``force``), at most every PROGRESS_INTERVAL for progress."""
        if self.on_change is None:
            if force:
                with self._lock:
                    self._changed.notify_all()
            return
        with self._notify_lock:
            with self._lock:
                if force:
                    self._changed.notify_all()
                now = time.monotonic()
                if not force and now - record.notified < PROGRESS_INTERVAL:
                    return
                record.notified = now
                status = record.status()
            try:
                self.on_change(status)
            except Exception:
                log.exception("on_change failed for the download %s", record.id)


def download_id_for(model: HubModelFile) -> str:
    """A download's id: readable (repository and file) and unique (a short hash of both)."""
    key = f"{model.repo_id}\0{model.first.path}"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model.repo_id.replace('/', '__')}__{Path(model.first.path).stem}")
    return f"{readable[:90]}-{digest}"


def _entry_name(model: HubModelFile) -> str:
    """The library name of a downloaded model: its file name without ``.gguf`` and the part number."""
    split = split_part(model.first.path)
    return split[0] if split else Path(model.first.path).stem


def _label(model: HubModelFile) -> str:
    name = Path(model.first.path).name
    if len(model.parts) > 1:
        return f"{_entry_name(model)} ({len(model.parts)} parts)"
    return name


def _unchanged(path: Path, size: int, mtime_ns: int | None) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    return st.st_size == size and mtime_ns is not None and st.st_mtime_ns == mtime_ns


def _size(size: int) -> str:
    from desktop_app.core.hub_fit import format_bytes

    return format_bytes(size)


def _model_to_json(model: HubModelFile) -> dict[str, Any]:
    return {"repo_id": model.repo_id, "name": model.name, "quantization": model.quantization, "kind": model.kind,
            "extra": json.loads(json.dumps(model.extra, default=str)),
            "parts": [dataclasses.asdict(f) for f in model.parts]}


def _model_from_json(data: dict[str, Any]) -> HubModelFile:
    parts = tuple(HubFile(repo_id=str(p["repo_id"]), path=str(p["path"]), size=int(p["size"]),
                          sha256=p.get("sha256"), revision=str(p.get("revision") or "main")) for p in data["parts"])
    if not parts:
        raise ValueError("no files")
    return HubModelFile(repo_id=str(data["repo_id"]), name=str(data["name"]), parts=parts,
                        quantization=data.get("quantization"), kind=str(data.get("kind") or "model"),
                        extra=dict(data.get("extra") or {}))
