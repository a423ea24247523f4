"""The server's model calls: run in arrival order, several at once when the model batches, with
a bound on how many may wait.

Requests start in arrival order. As many run at once as ``workers()`` says: the loaded model's
parallel answers, which the engine decodes together in one batch, so a second client does not
wait for the first one's whole answer. A job marked ``exclusive`` (one that loads a model) runs
alone. Past the limit a new request is refused (the server answers ``429`` with
``Retry-After``) instead of piling up behind the model.
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
    """Runs submitted jobs in order on threads of its own, up to ``workers()`` at a time.

    ``limit()`` is read at each submission (a setting may change): that many jobs may wait
    while others run. A job submitted while nothing runs or waits is always taken.
    """

    def __init__(self, limit: Callable[[], int], name: str = "parley-api-queue",
                 workers: Callable[[], int] = lambda: 1):
        self._limit = limit
        self._workers = workers
        self._name = name
        self._jobs: collections.deque[tuple[Future, Callable[[], Any], bool]] = collections.deque()
        self._cond = threading.Condition()
        self._running = 0
        self._exclusive = False
        self._closed = False
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._threads: list[threading.Thread] = []

    @property
    def waiting(self) -> int:
        """Jobs accepted that have not started."""
        with self._cond:
            return sum(1 for future, _, _ in self._jobs if not future.cancelled())

    @property
    def running(self) -> int:
        """How many jobs are running."""
        with self._cond:
            return self._running

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        with self._cond:
            return self._running > 0

    def submit(self, job: Callable[[], Any], exclusive: bool = False) -> Future:
        """Queue ``job``; its Future gets what it returns or raises. Cancel the Future to drop
        a job that has not started. An ``exclusive`` job runs when nothing else does, and
        nothing starts beside it. Raises :class:`QueueFull` past the limit."""
        with self._cond:
            if self._closed:
                raise RuntimeError("The server is stopping.")
            waiting = sum(1 for future, _, _ in self._jobs if not future.cancelled())
            idle = not self._running and waiting == 0
            if not idle and waiting >= max(0, int(self._limit())):
                raise QueueFull(waiting, self._retry_after(waiting))
            future: Future = Future()
            self._jobs.append((future, job, exclusive))
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) < max(1, self._workers()):
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads) + 1}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cond.notify_all()
            return future

    def _retry_after(self, waiting: int) -> int:
        """Seconds until a place is likely free: the recent average request, times the queue."""
        average = sum(self._durations) / len(self._durations) if self._durations else 1.0
        per_place = average / max(1, self._workers())
        return max(1, math.ceil(per_place * (waiting + 1)))

    def _next(self) -> tuple[Future, Callable[[], Any], bool] | None:
        """The next job this thread may start (waiting for one), or None once closed and drained."""
        with self._cond:
            while True:
                while self._jobs and self._jobs[0][0].cancelled():
                    self._jobs.popleft()  # its client left while it waited
                if self._jobs:
                    _, _, exclusive = self._jobs[0]
                    room = self._running < max(1, self._workers()) and not self._exclusive
                    if room and (not exclusive or self._running == 0):
                        future, job, exclusive = self._jobs.popleft()
                        if not future.set_running_or_notify_cancel():
                            continue
                        self._running += 1
                        self._exclusive = exclusive
                        return future, job, exclusive
                elif self._closed:
                    return None
                self._cond.wait()

    def _work(self) -> None:
        while True:
            taken = self._next()
            if taken is None:
                return
            future, job, _ = taken
            started = time.monotonic()
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the request that asked for it
                future.set_exception(exc)
            finally:
                with self._cond:
                    self._running -= 1
                    self._exclusive = False
                    self._durations.append(time.monotonic() - started)
                    self._cond.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new jobs, drop the waiting ones and wait for the running ones to end."""
        with self._cond:
            self._closed = True
            for future, _, _ in self._jobs:
                future.cancel()
            self._cond.notify_all()
            threads = list(self._threads)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
