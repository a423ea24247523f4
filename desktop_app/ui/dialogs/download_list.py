"""The Models window's downloads: a row per download with its progress, speed and time left,
and Pause / Resume / Cancel, and Use once the model is in the library.

The download manager reports from its own threads; :class:`DownloadBridge` turns each report
into a queued signal, so the rows are only ever touched on the GUI thread.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.core.hub_fit import format_bytes

__all__ = ["DownloadBridge", "DownloadList", "DownloadRow", "describe_progress", "human_duration"]


def human_duration(seconds: float | None) -> str:
    """``2 h 5 min``, ``3 min``, ``40 s``; empty when unknown."""
    if seconds is None or seconds < 0:
        return ""
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def describe_progress(download: Any) -> str:
    """One line for a download: ``412 MB of 1.1 GB · 8.3 MB/s · 1 min left``, or its state."""
    state = download.state.value
    done, total = download.done_bytes, download.total_bytes
    amount = f"{format_bytes(done)} of {format_bytes(total)}" if total else format_bytes(done)
    if state == "downloading":
        if download.message:  # e.g. a retry after a dropped connection, or re-reading a partial file
            return f"{amount} · {download.message}"
        parts = [amount]
        if download.speed:
            parts.append(f"{format_bytes(download.speed)}/s")
        left = human_duration(download.eta)
        if left:
            parts.append(f"{left} left")
        return " · ".join(parts)
    if state == "failed":
        return download.error or "Failed."
    if state == "done" and download.model.kind != "model":  # a plugin's kind (e.g. a LoRA adapter)
        return f"Downloaded and verified; added as {download.entry_name}." if download.entry_name else \
            "Downloaded and verified."
    return {
        "queued": f"Waiting for another download to finish · {amount}",
        "paused": (f"Paused when Parley closed · {amount}" if download.interrupted else f"Paused · {amount}"),
        "verifying": "Checking the SHA-256 checksum…",
        "done": "Downloaded and verified; in your library.",
        "cancelled": "Cancelled; the partial file was deleted.",
    }.get(state, state)


class DownloadBridge(QObject):
    """Carries the download manager's reports (any thread) to the GUI thread.

    Signals:
        download_changed(object): a download's state or progress changed (its status).
    """

    download_changed = Signal(object)

    def report(self, download: Any) -> None:
        """The manager's ``on_change`` callback: safe to call from any thread."""
        self.download_changed.emit(download)


class DownloadRow(QFrame):
    """One download: its name, a progress bar, a status line, and its buttons."""

    def __init__(self, download: Any, manager: Any, on_use: Callable[[Any], None]):
        super().__init__()
        self.setObjectName("downloadRow")
        self.setFrameShape(QFrame.StyledPanel)
        self.download_id = download.id
        self.manager = manager
        self.on_use = on_use
        self.download = download
        self.title = QLabel()
        self.title.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.bar = QProgressBar()
        self.bar.setAccessibleName("Download progress")
        self.bar.setTextVisible(True)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self._on_pause_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(lambda: self.manager.cancel(self.download_id))
        self.use_button = QPushButton("Use this model")
        self.use_button.clicked.connect(lambda: self.on_use(self.download))
        buttons = QHBoxLayout()
        buttons.addWidget(self.status, 1)
        for button in (self.pause_button, self.cancel_button, self.use_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.addWidget(self.title)
        layout.addWidget(self.bar)
        layout.addLayout(buttons)
        self.show_status(download)

    def show_status(self, download: Any) -> None:
        """Show ``download``'s latest status."""
        self.download = download
        self.title.setText(f"<b>{download.label}</b> — {download.model.repo_id}")
        total = max(download.total_bytes, 1)
        self.bar.setRange(0, 1000)
        self.bar.setValue(int(1000 * min(download.done_bytes, total) / total))
        self.bar.setFormat(f"{100 * download.done_bytes / total:.0f}%")
        self.status.setText(describe_progress(download))
        state = download.state.value
        active = state in ("queued", "downloading", "paused", "failed")
        self.pause_button.setVisible(active)
        self.pause_button.setText("Pause" if state in ("queued", "downloading") else
                                  "Retry" if state == "failed" else "Resume")
        self.cancel_button.setVisible(active)
        self.use_button.setVisible(state == "done" and download.model.kind == "model")
        self.bar.setVisible(state not in ("done", "cancelled"))

    @Slot()
    def _on_pause_clicked(self) -> None:
        state = self.download.state.value
        if state in ("queued", "downloading"):
            self.manager.pause(self.download_id)
        elif state == "failed":
            self.manager.retry(self.download_id)
        else:
            self.manager.resume(self.download_id)


class DownloadList(QWidget):
    """Every download the manager knows, newest last; empty shows a hint."""

    def __init__(self, manager: Any, bridge: DownloadBridge, on_use: Callable[[Any], None]):
        super().__init__()
        self.setObjectName("downloadList")
        self.manager = manager
        self.on_use = on_use
        self.rows: dict[str, DownloadRow] = {}
        self.hint = QLabel("Downloads appear here. They go on while this window is closed, and a "
                           "paused one continues after Parley restarts.")
        self.hint.setWordWrap(True)
        self.hint.setObjectName("hint")
        self.box = QVBoxLayout(self)
        self.box.setContentsMargins(0, 0, 0, 0)
        self.box.addWidget(self.hint)
        self.box.addStretch(1)  # rows stay at the top
        for download in manager.downloads():
            self._on_download_changed(download)
        bridge.download_changed.connect(self._on_download_changed)

    @Slot(object)
    def _on_download_changed(self, download: Any) -> None:
        row = self.rows.get(download.id)
        if row is None:
            row = DownloadRow(download, self.manager, self.on_use)
            self.rows[download.id] = row
            self.box.insertWidget(self.box.count() - 1, row)
        row.show_status(download)
        self.hint.setVisible(not self.rows)
