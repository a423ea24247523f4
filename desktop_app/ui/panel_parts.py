"""Pieces side panels share: a row of compact buttons, and the progress, status and cancel
controls of a long job (indexing documents, training an adapter)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QBoxLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton

__all__ = ["add_button_row", "add_job_controls"]


def add_button_row(layout: QBoxLayout, *buttons: QPushButton) -> QHBoxLayout:
    """Put ``buttons`` side by side under what ``layout`` holds, compact enough for a narrow panel."""
    row = QHBoxLayout()
    for button in buttons:
        button.setStyleSheet("padding: 3px 6px;")
        row.addWidget(button)
    layout.addLayout(row)
    return row


def add_job_controls(layout: QBoxLayout, progress_name: str,
                     cancel_text: str) -> tuple[QProgressBar, QLabel, QPushButton]:
    """Add a job's progress bar (hidden until it runs), a status line the user can select and
    copy, and its cancel button (hidden); returns the three."""
    progress = QProgressBar()
    progress.setAccessibleName(progress_name)
    progress.hide()
    layout.addWidget(progress)
    status = QLabel()
    status.setWordWrap(True)
    status.setTextInteractionFlags(Qt.TextSelectableByMouse)
    layout.addWidget(status)
    cancel = QPushButton(cancel_text)
    cancel.hide()
    layout.addWidget(cancel)
    return progress, status, cancel
