"""A heartbeat on the GUI thread that measures how long the event loop was kept from running.

Used by the responsiveness test and benchmark; a timer that should fire every 10 ms records
each gap; a stall is the time beyond the interval.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt, QTimer

__all__ = ["StallMonitor"]


class StallMonitor(QObject):
    """Records how late a 10 ms GUI-thread timer fires while it runs."""

    def __init__(self, interval_ms: int = 10, parent: QObject | None = None):
        super().__init__(parent)
        self.interval = interval_ms / 1000
        self.stalls: list[float] = []
        self._last = 0.0
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._beat)

    def start(self) -> None:
        """Start measuring (clears earlier measurements)."""
        self.stalls = []
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        """Stop measuring."""
        self._timer.stop()

    def _beat(self) -> None:
        now = time.perf_counter()
        self.stalls.append(max(0.0, now - self._last - self.interval))
        self._last = now

    @property
    def worst_ms(self) -> float:
        """The longest stall in milliseconds."""
        return max(self.stalls, default=0.0) * 1000

    def percentile_ms(self, p: float) -> float:
        """The ``p``-th percentile stall in milliseconds."""
        if not self.stalls:
            return 0.0
        ordered = sorted(self.stalls)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000
