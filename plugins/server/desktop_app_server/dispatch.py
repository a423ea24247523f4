"""One FIFO worker for the server's model calls, with a bound on how many may wait.

Requests are served in arrival order, one at a time; each job calls ``context.complete``,
which in the window queues once more on the engine worker behind the user's own chats. Past
the limit a new request is refused (the server answers ``429`` with ``Retry-After``) instead
of piling up behind the model.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

__all__ = ["QueueFull", "RequestQueue"]

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds as many waiting requests as it may; try again after ``retry_after`` s."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"{waiting} requests are already waiting for the model.")
        self.waiting = waiting
        self.retry_after = retry_after


class RequestQueue:
    """Runs submitted jobs one at a time, in order, on its own thread.

    ``limit()`` is read at each submission (a setting may change): that many jobs may wait
    while one runs. A job submitted while nothing runs or waits is always taken.
    """

    def __init__(self, limit: Callable[[], int], name: str = "parley-api-queue"):
        self._limit = limit
        self._jobs: collections.deque[tuple[Future, Callable[[], Any]]] = collections.deque()
        self._cond = threading.Condition()
        self._running = False
        self._closed = False
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Jobs accepted that have not started."""
        with self._cond:
            return sum(1 for future, _ in self._jobs if not future.cancelled())

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        with self._cond:
            return self._running

    def submit(self, job: Callable[[], Any]) -> Future:
        """Queue ``job``; its Future gets what it returns or raises. Cancel the Future to drop
        a job that has not started. Raises :class:`QueueFull` past the limit."""
        with self._cond:
            if self._closed:
                raise RuntimeError("The server is stopping.")
            waiting = sum(1 for future, _ in self._jobs if not future.cancelled())
            idle = not self._running and waiting == 0
            if not idle and waiting >= max(0, int(self._limit())):
                raise QueueFull(waiting, self._retry_after(waiting))
            future: Future = Future()
            self._jobs.append((future, job))
            self._cond.notify()
            return future

    def _retry_after(self, waiting: int) -> int:
        """Seconds until a place is likely free: the recent average request, times the queue."""
        average = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return max(1, math.ceil(average * (waiting + 1)))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return  # closed and drained
                future, job = self._jobs.popleft()
                if not future.set_running_or_notify_cancel():
                    continue  # its client left while it waited
                self._running = True
            started = time.monotonic()
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the request that asked for it
                future.set_exception(exc)
            finally:
                with self._cond:
                    self._running = False
                    self._durations.append(time.monotonic() - started)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs, drop the waiting ones and wait for the running one to end."""
        with self._cond:
            self._closed = True
            for future, _ in self._jobs:
                future.cancel()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
