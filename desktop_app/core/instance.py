"""One Parley per data folder: an exclusive lock that a second process is refused by.

Two processes writing the same data folder would race on the settings file, the model and
adapter libraries and the embedded document store, which does not support several writers.
So every ``parley`` process that opens the data folder holds ``parley.lock`` in it for its
lifetime. The operating system releases the lock when the process ends, however it ends, so
a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from pathlib import Path

from desktop_app.core.errors import ParleyError

__all__ = ["AlreadyRunning", "InstanceLock", "LOCK_NAME"]

LOCK_NAME = "parley.lock"

log = logging.getLogger(__name__)


class AlreadyRunning(ParleyError):
    """Another process holds the data folder. ``holder`` describes it (pid and command)."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


class InstanceLock:
    """The data folder's lock, held from :meth:`acquire` until :meth:`release` or exit."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, command: str = "") -> "InstanceLock":
        """Take the lock or raise :class:`AlreadyRunning` naming the process that has it.

        ``command`` says what this process is (e.g. "the window", "parley chat"); a refused
        process shows it to the user.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
                # A file system without locks (some network or FUSE mounts): go on unguarded
                # rather than claim that another Parley is running.
                log.warning("the data folder cannot be locked (%s); not guarding against a second Parley", exc)
                os.close(fd)
                return self
            holder = _read_holder(fd)
            os.close(fd)
            what = holder.get("command") or "another Parley"
            pid = holder.get("pid")
            raise AlreadyRunning(
                f"Parley is already running on this data folder ({what}"
                f"{f', process {pid}' if pid else ''}). Only one Parley may use "
                f"{self.path.parent} at a time, so that nothing is written twice: switch to it, "
                "or close it and try again. To run a second, separate Parley, give it its own "
                "folder with PARLEY_HOME=/path/to/folder.", holder) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": command}).encode())
        self._fd = fd
        return self

    def holder(self) -> dict:
        """What the lock file says about the process holding it ({} when it says nothing)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return {}
        try:
            return _read_holder(fd)
        finally:
            os.close(fd)

    def release(self) -> None:
        """Let go of the lock (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "InstanceLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    #: Windows locks are mandatory: the byte locked lies far past the holder's details, so a
    #: refused process can still read who holds the folder.
    _LOCKED_BYTE = 1 << 20

    def _lock(fd: int) -> None:
        os.lseek(fd, _LOCKED_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
else:
    import fcntl

    def _lock(fd: int) -> None:
        # flock, not fcntl's record locks: those belong to the process, so a second open of
        # the file in the same process would silently share the lock instead of being refused.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
