"""Settings → Server…: the API server in the window. The only module of the plugin that uses Qt.

:class:`ServerDialog` starts and stops the same :class:`~desktop_app_server.controller.ServerController`
``parley serve`` uses, shows where it listens and what it has answered, and makes its API key.
It is not modal, so the chat goes on while it is open, and closing it leaves the server running
(the plugin's ``app_closing`` stops it with Parley). The GUI thread never waits on the server:
starting (the first one imports FastAPI and uvicorn) and stopping (it waits for open
connections) run through ``run_task``; the status and the request log are read from the
controller, which only copies a list under a lock, on a timer while the dialog is shown.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_app.api import ParleyError, PluginContext
from desktop_app.ui.api import WindowApi, run_task
from desktop_app_server.controller import ServerController, config_from_settings
from desktop_app_server.gateway import LogEntry
from desktop_app_server.security import KeyStore, is_loopback

__all__ = ["COLUMNS", "NewKeyDialog", "ServerDialog", "log_row", "open_server_dialog"]

#: The request log's columns.
COLUMNS = ("Time", "Method", "Path", "Model", "Status", "Tokens", "Duration", "Error")
#: How often the open dialog reads the status and the request log.
REFRESH_MS = 500


def open_server_dialog(window: WindowApi, context: PluginContext, controller: ServerController) -> ServerDialog:
    """Show the server dialog, the one already open if there is one."""
    dialog = window.widget.findChild(ServerDialog, "serverDialog")
    if dialog is None:
        dialog = ServerDialog(context, controller, window.widget)
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog


def log_row(entry: LogEntry) -> tuple[str, ...]:
    """One request as the log table shows it (an answer still being written has no status yet)."""
    done = entry.status != 0
    tokens = f"{entry.prompt_tokens} → {entry.completion_tokens}" if done else ""
    return (time.strftime("%H:%M:%S", time.localtime(entry.started)), entry.method, entry.path, entry.model,
            str(entry.status) if done else "…", tokens, f"{entry.duration:.2f} s" if done else "", entry.error)


class ServerDialog(QDialog):
    """The API server: on/off, address, status, API key and the recent requests.

    Signals:
        server_started(str): the server serves, at this URL.
        server_stopped(): the server stopped.
        start_failed(str): the server could not start; the message says why and what to do.
    """

    server_started = Signal(str)
    server_stopped = Signal()
    start_failed = Signal(str)

    def __init__(self, context: PluginContext, controller: ServerController, parent: QWidget | None = None):
        super().__init__(parent)
        self._context = context
        self._controller = controller
        #: "Starting…" or "Stopping…" while a call runs in the background.
        self._busy = ""
        self._error = ""
        self._shown_log: list[tuple[Any, ...]] = []
        self.setObjectName("serverDialog")
        self.setWindowTitle("API server")
        self.setModal(False)
        self.resize(820, 540)
        layout = QVBoxLayout(self)

        intro = QLabel("Other programs on this computer (an editor, a script, a notebook) can use your models "
                       "through an OpenAI-compatible API. The server keeps running when this dialog closes, "
                       "and stops when Parley does.")
        intro.setWordWrap(True)
        layout.addWidget(intro)

        form = QFormLayout()
        top = QHBoxLayout()
        self.toggle = QPushButton("Start server")
        self.toggle.setObjectName("serverToggle")
        self.toggle.setCheckable(True)
        self.toggle.setAccessibleName("Server on or off")
        self.toggle.clicked.connect(self._on_toggle_clicked)
        self.state_label = QLabel()
        self.state_label.setObjectName("serverState")
        top.addWidget(self.toggle)
        top.addWidget(self.state_label, 1)
        form.addRow("Server:", top)
        address = QHBoxLayout()
        self.host_edit = QLineEdit(str(context.settings.get("host")))
        self.host_edit.setAccessibleName("Host")
        self.host_edit.setToolTip("127.0.0.1 keeps the server to this computer; any other address (e.g. 0.0.0.0) "
                                  "lets other computers reach it and requires the API key.")
        self.host_edit.textChanged.connect(self.refresh)
        self.port_spin = QSpinBox()
        self.port_spin.setAccessibleName("Port")
        self.port_spin.setRange(0, 65535)
        self.port_spin.setSpecialValueText("any free port")
        self.port_spin.setValue(int(context.settings.get("port")))
        address.addWidget(self.host_edit, 1)
        address.addWidget(QLabel("Port:"))
        address.addWidget(self.port_spin)
        form.addRow("Address:", address)
        url_row = QHBoxLayout()
        self.url_label = QLabel()
        self.url_label.setObjectName("serverUrl")
        self.url_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.copy_url_button = QPushButton("Copy")
        self.copy_url_button.setToolTip("Copy the base URL to give an OpenAI client")
        self.copy_url_button.clicked.connect(self._on_copy_url_clicked)
        url_row.addWidget(self.url_label, 1)
        url_row.addWidget(self.copy_url_button)
        form.addRow("Base URL:", url_row)
        self.status_label = QLabel()
        self.status_label.setObjectName("serverStatus")
        form.addRow("Status:", self.status_label)
        layout.addLayout(form)

        keys = QGroupBox("API key")
        key_layout = QVBoxLayout(keys)
        self.key_label = QLabel()
        self.key_label.setObjectName("keyStatus")
        self.key_label.setWordWrap(True)
        key_layout.addWidget(self.key_label)
        key_row = QHBoxLayout()
        self.key_required_check = QCheckBox("Ask for the key on this computer too")
        self.key_required_check.setChecked(bool(context.settings.get("api_key_required")))
        self.key_required_check.toggled.connect(self._on_key_required_toggled)
        self.new_key_button = QPushButton("New key…")
        self.new_key_button.clicked.connect(self.open_new_key_dialog)
        key_row.addWidget(self.key_required_check, 1)
        key_row.addWidget(self.new_key_button)
        key_layout.addLayout(key_row)
        layout.addWidget(keys)

        self.error_label = QLabel()
        self.error_label.setObjectName("serverError")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.error_label.setStyleSheet("color: #b3261e;")
        self.error_label.hide()
        layout.addWidget(self.error_label)

        layout.addWidget(QLabel("Recent requests:"))
        self.log_table = QTableWidget(0, len(COLUMNS))
        self.log_table.setObjectName("requestLog")
        self.log_table.setAccessibleName("Recent requests")
        self.log_table.setHorizontalHeaderLabels(COLUMNS)
        self.log_table.verticalHeader().hide()
        self.log_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.log_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.log_table.setWordWrap(False)
        self.log_table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        header = self.log_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        # An error can be long: it takes what is left (elided, the whole text in its tooltip).
        header.setSectionResizeMode(COLUMNS.index("Error"), QHeaderView.Stretch)
        layout.addWidget(self.log_table, 1)

        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.close)
        layout.addWidget(buttons)

        self._tips = {w: w.toolTip() for w in (self.host_edit, self.port_spin, self.key_required_check)}
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self.refresh()

    # -- the server ---------------------------------------------------------------------------
    @property
    def keys(self) -> KeyStore:
        """The server's API key store."""
        return self._controller.keys

    def start(self) -> None:
        """Start the server on the address in the fields, in the background."""
        if self._busy or self._controller.is_running:
            return
        host, port = self.host_edit.text().strip(), self.port_spin.value()
        problem = self._address_problem(host, port)
        if problem is None:
            try:
                self._context.settings.set("host", host)
                self._context.settings.set("port", port)
                self._context.settings.save()
            except (ParleyError, ValueError, OSError) as exc:
                problem = f"The address could not be saved: {exc}"
        if problem is not None:
            self._fail(problem)
            return
        self._busy, self._error = "Starting…", ""
        self.refresh()
        run_task(lambda: self._controller.start(host, port), self._on_started, self._on_start_failed)

    def stop(self) -> None:
        """Stop the server in the background (the answer being written stops, waiting requests are dropped)."""
        if self._busy or not self._controller.is_running:
            return
        self._busy, self._error = "Stopping…", ""
        self.refresh()
        run_task(self._controller.stop, self._on_stopped, self._on_stop_failed)

    def _address_problem(self, host: str, port: int) -> str | None:
        """Why the server cannot start on ``host``, said so the user can fix it; None if it can."""
        if not host:
            return "Enter the address to listen on: 127.0.0.1 keeps the server to this computer."
        if not self.keys.exists:
            if not is_loopback(host):
                return (f"Listening on {host} lets other computers reach the server, so it needs an API key. "
                        "Make one with “New key…”, then start the server again.")
            if config_from_settings(self._context, host, port).key_required:
                return ("The API key is asked for on this computer too, and none has been made yet. Make one "
                        "with “New key…”, or untick “Ask for the key on this computer too”.")
        return None

    def _fail(self, message: str) -> None:
        self._busy, self._error = "", message
        self.refresh()
        self.start_failed.emit(message)

    @Slot(bool)
    def _on_toggle_clicked(self, checked: bool) -> None:
        if checked:
            self.start()
        else:
            self.stop()
        self.refresh()  # a refused click leaves the toggle as the server is

    def _on_started(self, url: str) -> None:
        self._busy = ""
        self.refresh()
        self.server_started.emit(url)

    def _on_start_failed(self, message: str) -> None:
        self._fail(message)

    def _on_stopped(self, _result: Any) -> None:
        self._busy = ""
        self.refresh()
        self.server_stopped.emit()

    def _on_stop_failed(self, message: str) -> None:
        self._busy, self._error = "", f"Stopping the server failed: {message}"
        self.refresh()

    @Slot()
    def _on_copy_url_clicked(self) -> None:
        url = self._controller.url
        if url:
            QGuiApplication.clipboard().setText(url + "/v1")

    # -- the key ------------------------------------------------------------------------------
    def open_new_key_dialog(self) -> NewKeyDialog:
        """Ask, then make a new API key and show it once."""
        dialog = NewKeyDialog(self.keys, self)
        dialog.key_created.connect(self.refresh)
        dialog.open()
        return dialog

    @Slot(bool)
    def _on_key_required_toggled(self, checked: bool) -> None:
        try:
            self._context.settings.set("api_key_required", checked)
            self._context.settings.save()
        except (ParleyError, ValueError, OSError) as exc:
            self._error = f"The setting could not be saved: {exc}"
        self.refresh()

    def _key_text(self, running: bool, status: dict[str, Any]) -> str:
        host = self.host_edit.text().strip()
        if running:
            required = status["key_required"]
            why = "The running server asks for it." if required else "The running server does not ask for it."
        elif host and not is_loopback(host):
            required, why = True, f"Required: listening on {host} lets other computers reach the server."
        elif self.key_required_check.isChecked():
            required, why = True, "Required on this computer too (the box below)."
        else:
            required, why = False, "Not required: only programs on this computer can reach the server."
        if self.keys.exists:
            have = "A key has been made; clients send it as “Authorization: Bearer KEY”."
        elif required:
            have = "No key has been made yet: make one with “New key…”."
        else:
            have = "No key has been made."
        return f"{why} {have}"

    # -- what is shown ------------------------------------------------------------------------
    @Slot()
    def refresh(self) -> None:
        """Show the server's state and its recent requests."""
        status = self._controller.status
        running = bool(status["running"])
        busy = bool(self._busy)
        self.toggle.setChecked(running if not busy else self._busy == "Starting…")
        self.toggle.setText("Stop server" if running or self._busy == "Starting…" else "Start server")
        self.toggle.setEnabled(not busy)
        editable = not running and not busy
        for widget, tip in self._tips.items():
            widget.setEnabled(editable)
            widget.setToolTip(tip if editable else "Stop the server to change this.")
        error = self._error or ("" if running or busy else status["error"])
        if busy:
            state = self._busy
        elif running:
            state = "● Running"
        elif error:
            state = "Error"
        else:
            state = "Stopped"
        self.state_label.setText(state)
        url = status["url"]
        self.url_label.setText(f"{url}/v1" if url else "—")
        self.copy_url_button.setEnabled(bool(url))
        if running:
            what = "answering a request" if status["busy"] else "idle"
            self.status_label.setText(f"Running, {what}; {status['waiting']} waiting; "
                                      f"{status['served']} requests since it started.")
        else:
            self.status_label.setText(self._busy or ("Not running." if not error else "Not running (see below)."))
        self.error_label.setText(error)
        self.error_label.setVisible(bool(error))
        self.key_label.setText(self._key_text(running, status))
        self._show_log(self._controller.request_log)

    def _show_log(self, entries: list[LogEntry]) -> None:
        rows = [log_row(entry) for entry in reversed(entries)]  # newest first
        if rows == self._shown_log:
            return  # rebuilt only when something changed, so a selection survives the timer
        self._shown_log = rows
        table = self.log_table
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                if COLUMNS[c] in ("Status", "Tokens", "Duration"):
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                if COLUMNS[c] == "Error" and text:
                    item.setToolTip(text)
                table.setItem(r, c, item)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Read the server's state while the dialog is shown."""
        self.refresh()
        self._timer.start()
        super().showEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Stop reading it when the dialog closes (the server goes on)."""
        self._timer.stop()
        super().hideEvent(event)


class NewKeyDialog(QDialog):
    """Make a new API key: first say what happens to the old one, then show the new key once.

    Signals:
        key_created(): the new key is stored (its SHA-256) and shown.
    """

    key_created = Signal()

    def __init__(self, keys: KeyStore, parent: QWidget | None = None):
        super().__init__(parent)
        self._keys = keys
        self.setWindowTitle("New API key")
        layout = QVBoxLayout(self)
        self.message = QLabel()
        self.message.setWordWrap(True)
        if keys.exists:
            self.message.setText("A new key replaces the current one: programs that use the current key stop "
                                 "working at once, until you give them the new one.")
        else:
            self.message.setText("Make the API key clients send as “Authorization: Bearer KEY” (the openai "
                                 "client's api_key).")
        layout.addWidget(self.message)
        row = QHBoxLayout()
        self.key_edit = QLineEdit()
        self.key_edit.setObjectName("newKey")
        self.key_edit.setAccessibleName("New API key")
        self.key_edit.setReadOnly(True)
        self.key_edit.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.key_edit.setMinimumWidth(420)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.key_edit.text()))
        row.addWidget(self.key_edit, 1)
        row.addWidget(self.copy_button)
        self.key_row = QWidget()
        self.key_row.setLayout(row)
        self.key_row.hide()
        layout.addWidget(self.key_row)
        self.buttons = QDialogButtonBox()
        self.make_button = self.buttons.addButton("Make a new key" if keys.exists else "Make a key",
                                                  QDialogButtonBox.AcceptRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.Cancel)
        self.make_button.clicked.connect(self.make_key)
        self.close_button.clicked.connect(self.reject)
        layout.addWidget(self.buttons)

    @Slot()
    def make_key(self) -> str:
        """Make the key (a small file write) and show it; it is never shown again."""
        try:
            key = self._keys.create()
        except OSError as exc:
            self.message.setText(f"The key could not be stored: {exc.strerror or exc}. The old key still works.")
            return ""
        self.key_edit.setText(key)
        self.key_row.show()
        self.message.setText("Your new API key. It is shown only now: copy it somewhere safe (Parley keeps only "
                             "a fingerprint of it, and cannot show it again). The old key no longer works.")
        self.make_button.hide()
        self.close_button.setText("Close")
        self.key_created.emit()
        return key
