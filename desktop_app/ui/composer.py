"""Where the user writes: Enter sends, Shift+Enter adds a line, Esc stops the answer."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

__all__ = ["Composer"]


class _Edit(QPlainTextEdit):
    submitted = Signal()
    escaped = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if event.key() in (Qt.Key_Return, Qt.Key_Enter) and not event.modifiers() & Qt.ShiftModifier:
            self.submitted.emit()
            return
        if event.key() == Qt.Key_Escape:
            self.escaped.emit()
            return
        super().keyPressEvent(event)


class Composer(QWidget):
    """The message box with Send/Stop and Regenerate.

    Signals:
        send_requested(str, object): text, and the message being edited (or None).
        stop_requested(): stop the answer being written.
        regenerate_requested(): answer the last question again.
    """

    send_requested = Signal(str, object)
    stop_requested = Signal()
    regenerate_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.editing = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 8)
        self.edit_banner = QLabel()
        self.edit_banner.setObjectName("editBanner")
        self.edit_banner.hide()
        layout.addWidget(self.edit_banner)
        #: Plugins' controls (e.g. the template picker) go in this row.
        self.extras = QHBoxLayout()
        self.extras.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.extras)
        row = QHBoxLayout()
        self.edit = _Edit(self)
        self.edit.setObjectName("composerEdit")
        self.edit.setAccessibleName("Message")
        self.edit.setPlaceholderText("Write a message — Enter sends, Shift+Enter adds a line")
        self.edit.setFixedHeight(72)
        self.edit.submitted.connect(self._submit)
        self.edit.escaped.connect(self._escape)
        row.addWidget(self.edit, 1)
        buttons = QVBoxLayout()
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("sendButton")
        self.send_button.setAccessibleName("Send message")
        self.send_button.clicked.connect(self._send_or_stop)
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setAccessibleName("Regenerate the last answer")
        self.regenerate_button.setToolTip("Answer the last question again (Ctrl+R)")
        self.regenerate_button.clicked.connect(self.regenerate_requested)
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.regenerate_button)
        row.addLayout(buttons)
        layout.addLayout(row)
        self.busy = False

    def add_extra(self, widget: QWidget) -> None:
        """Put a plugin's control above the message box."""
        self.extras.addWidget(widget)

    def set_busy(self, busy: bool) -> None:
        """Switch between Send (idle) and Stop (an answer is being written)."""
        self.busy = busy
        self.send_button.setText("Stop" if busy else "Send")
        self.send_button.setAccessibleName("Stop the answer" if busy else "Send message")
        self.regenerate_button.setEnabled(not busy)

    def start_editing(self, message) -> None:
        """Put an earlier message in the box; sending it starts a new branch from there."""
        self.editing = message
        self.edit.setPlainText(message.content)
        self.edit_banner.setText("Editing an earlier message — sending starts a new branch (Esc cancels).")
        self.edit_banner.show()
        self.edit.setFocus()

    def cancel_editing(self) -> None:
        """Leave edit mode and empty the box."""
        self.editing = None
        self.edit_banner.hide()
        self.edit.clear()

    def _send_or_stop(self) -> None:
        if self.busy:
            self.stop_requested.emit()
        else:
            self._submit()

    def _submit(self) -> None:
        if self.busy:
            return
        text = self.edit.toPlainText().strip()
        if not text:
            return
        editing = self.editing
        self.editing = None
        self.edit_banner.hide()
        self.edit.clear()
        self.send_requested.emit(text, editing)

    def _escape(self) -> None:
        if self.busy:
            self.stop_requested.emit()
        elif self.editing is not None:
            self.cancel_editing()
