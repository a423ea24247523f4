"""Settings → Engines…: add, check and remove remote engines. The only module of the plugin that uses Qt.

Checking an engine goes over the network, so it runs through ``run_task``: the window never
waits on a server. After a change the model picker is filled again, so an engine's models
appear (or go) at once.
"""

from __future__ import annotations

from typing import Any

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from desktop_app.api import ParleyError
from desktop_app.ui.api import WindowApi, run_task

__all__ = ["COLUMNS", "EnginesDialog", "open_engines_dialog"]

COLUMNS = ("Engine", "Address", "Key", "Kind", "Models", "Status")


def open_engines_dialog(window: WindowApi, state: Any) -> "EnginesDialog":
    """Show the engines dialog, the one already open if there is one."""
    dialog = window.widget.findChild(EnginesDialog, "enginesDialog")
    if dialog is None:
        dialog = EnginesDialog(window, state)
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog


class EnginesDialog(QDialog):
    """The remote engines: a table of them, a form to add one, and Check / Remove / Use."""

    def __init__(self, window: WindowApi, state: Any):
        super().__init__(window.widget)
        self.setObjectName("enginesDialog")
        self.setWindowTitle("Remote engines")
        self.resize(760, 420)
        self.window_api = window
        self.state = state
        self.checking: set[str] = set()

        intro = QLabel("Models on other machines' servers join the model picker as “MODEL · ENGINE”. Any "
                       "OpenAI-compatible server works (vLLM, Ollama, LM Studio, another Parley); with llama.cpp's "
                       "llama-server, templates, grammars and LoRA adapters work as on this computer.")
        intro.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.Stretch)

        self.name = QLineEdit(placeholderText="gpu-box")
        self.url = QLineEdit(placeholderText="http://gpu-box:8080")
        self.key = QLineEdit(placeholderText="optional; kept in the system keyring")
        self.key.setEchoMode(QLineEdit.Password)
        self.add_button = QPushButton("Add and check")
        self.add_button.clicked.connect(self.add_engine)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Address", self.url)
        form.addRow("API key", self.key)
        form.addRow("", self.add_button)

        self.check_button = QPushButton("Check")
        self.check_button.clicked.connect(lambda: self.check(self.selected()))
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove_engine)
        row = QHBoxLayout()
        row.addWidget(self.check_button)
        row.addWidget(self.remove_button)
        row.addStretch(1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.close)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.fill()

    # -- the table ----------------------------------------------------------------------------
    def fill(self) -> None:
        """Show the engines as the store has them."""
        selected = self.selected()
        engines = self.state.store.all()
        self.table.setRowCount(len(engines))
        for row, e in enumerate(engines):
            status = ("checking…" if e.name in self.checking else
                      e.problem or ("ready" if e.checked else "not checked yet"))
            values = (e.name, e.url, "yes" if e.has_key else "no", e.kind or "?",
                      ", ".join(m.id for m in e.models) or "-", status)
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(value)
                self.table.setItem(row, column, item)
            if e.name == selected:
                self.table.selectRow(row)
        has = bool(engines)
        self.check_button.setEnabled(has)
        self.remove_button.setEnabled(has)

    def selected(self) -> str | None:
        """The name of the selected engine (the first one when none is selected)."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        row = rows[0].row() if rows else (0 if self.table.rowCount() else -1)
        item = self.table.item(row, 0) if row >= 0 else None
        return item.text() if item is not None else None

    # -- actions ------------------------------------------------------------------------------
    def add_engine(self) -> None:
        """Add the engine in the form and keep its key, then check it; in the background, as a
        keyring may wait for the user to unlock it. The form's name and address are checked here."""
        from desktop_app_remote.engines import add_engine, check_name, check_url

        name, url, key = self.name.text().strip(), self.url.text().strip(), self.key.text().strip()
        try:
            check_name(name)
            check_url(url)
        except ParleyError as exc:
            self.show_status(str(exc), error=True)
            return
        replace = any(e.name == name for e in self.state.store.all())
        self.key.clear()
        self.show_status(f"Adding {name}…")

        def added(_config) -> None:
            if not shiboken6.isValid(self):  # closed with the window meanwhile
                return
            self.name.clear()
            self.url.clear()
            self.fill()
            self.check(name)

        run_task(lambda: add_engine(self.state.store, name, url, key or None, replace=replace), added,
                 self.show_error)

    def check(self, name: str | None) -> None:
        """Ask engine ``name`` what it serves, off the GUI thread."""
        if not name or name in self.checking:
            return
        self.checking.add(name)
        self.show_status(f"Checking {name}…")
        self.fill()
        backend = self.state.current_backend()

        def done(config) -> None:
            if not shiboken6.isValid(self):
                return
            self.checking.discard(name)
            models = ", ".join(m.id for m in config.models) or "no models"
            self.show_status(f"{name} is {config.kind} and serves {models}. Pick its models in the model picker.")
            self.fill()
            self.window_api.refresh_models()

        def failed(message: str) -> None:
            if not shiboken6.isValid(self):
                return
            self.checking.discard(name)
            self.show_status(message, error=True)
            self.fill()

        run_task(lambda: backend.check(name), done, failed)

    def remove_engine(self) -> None:
        """Forget the selected engine and its key (in the background: the keyring may wait)."""
        from desktop_app_remote.engines import remove_engine

        name = self.selected()
        if not name:
            return

        def removed(_config) -> None:
            if not shiboken6.isValid(self):
                return
            self.show_status(f"Removed {name}.")
            self.fill()
            self.window_api.refresh_models()

        run_task(lambda: remove_engine(self.state.store, name), removed, self.show_error)

    def show_error(self, message: str) -> None:
        """A background task's failure, shown in the dialog (if it is still open)."""
        if shiboken6.isValid(self):
            self.show_status(message, error=True)

    def show_status(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #b3261e;" if error else "")
