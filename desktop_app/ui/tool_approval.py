"""Asking the user whether a tool call may run.

The generation worker thread must wait for the answer, but the GUI thread must never block.
So the worker sends an :class:`ApprovalRequest` to the window and waits on it; the window
shows a :class:`ToolApprovalDialog` without a nested event loop and answers the request when
the user clicks. Stop answers it with a refusal.
"""

from __future__ import annotations

import html
import json
import threading
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout

__all__ = ["ApprovalRequest", "ToolApprovalDialog"]


class ApprovalRequest:
    """One pending question "may this call run?", answered once from any thread."""

    def __init__(self, conversation_id: int, call: Any, tool: Any):
        self.conversation_id = conversation_id
        self.call = call
        self.tool = tool
        self.answer: bool | str = False
        self._answered = threading.Event()

    def respond(self, answer: bool | str) -> None:
        """Answer: True/False for this call, "always"/"never" for the tool from now on."""
        if not self._answered.is_set():
            self.answer = answer
            self._answered.set()

    @property
    def answered(self) -> bool:
        """True once someone answered."""
        return self._answered.is_set()

    def wait(self, stop: threading.Event, poll: float = 0.1) -> bool | str:
        """Block until answered, or refuse when ``stop`` is set (the user pressed Stop)."""
        while not self._answered.wait(poll):
            if stop.is_set():
                self.respond(False)
        return self.answer


class ToolApprovalDialog(QDialog):
    """Shows a tool call (tool, where it comes from, its arguments) and asks to allow it.

    Signals:
        answered(object): True, False, "always" or "never".
    """

    answered = Signal(object)

    def __init__(self, request: ApprovalRequest, parent: Any = None):
        super().__init__(parent)
        self.request = request
        self.setWindowTitle("Allow this tool call?")
        self.setObjectName("toolApprovalDialog")
        layout = QVBoxLayout(self)
        tool = request.tool
        source = tool.source or "a plugin"
        intro = QLabel(
            f"The model wants to call <b>{html.escape(tool.name)}</b> "
            f"<span style='color:gray'>(from {html.escape(source)})</span>.<br>"
            f"{html.escape(tool.description)}"
        )
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.RichText)
        layout.addWidget(intro)
        layout.addWidget(QLabel("With these arguments:"))
        self.arguments = QPlainTextEdit(json.dumps(request.call.arguments, indent=2, ensure_ascii=False))
        self.arguments.setObjectName("toolApprovalArguments")
        self.arguments.setReadOnly(True)
        self.arguments.setMaximumHeight(160)
        layout.addWidget(self.arguments)
        buttons = QDialogButtonBox(self)
        self.allow_button = buttons.addButton("Allow", QDialogButtonBox.AcceptRole)
        self.always_button = buttons.addButton(f"Always allow {tool.name}", QDialogButtonBox.ActionRole)
        self.deny_button = buttons.addButton("Deny", QDialogButtonBox.RejectRole)
        # Enter typed for the message box must never approve a call: the safe choice is default.
        self.deny_button.setDefault(True)
        self.setAttribute(Qt.WA_ShowWithoutActivating)
        row = QHBoxLayout()
        row.addWidget(buttons)
        layout.addLayout(row)
        self.allow_button.clicked.connect(lambda: self._finish(True))
        self.always_button.clicked.connect(lambda: self._finish("always"))
        self.deny_button.clicked.connect(lambda: self._finish(False))
        self.rejected.connect(self._on_self_rejected)
        self.resize(460, self.sizeHint().height())

    def _finish(self, answer: bool | str) -> None:
        self.request.respond(answer)
        self.answered.emit(answer)
        self.done(QDialog.Accepted if answer in (True, "always") else QDialog.Rejected)

    @Slot()
    def _on_self_rejected(self) -> None:
        # Escape or closing the dialog means no.
        if not self.request.answered:
            self.request.respond(False)
            self.answered.emit(False)
