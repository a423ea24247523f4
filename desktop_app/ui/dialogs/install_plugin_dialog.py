"""The install dialog: pick a plugin, see what it is, say you trust it, install it.

The slow parts (pip, the inspection process) run on the thread pool through
:func:`desktop_app.ui.workers.run_task`; the logic is :mod:`desktop_app.plugin_install`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.plugin_install import TRUST_WARNING, Candidate, PluginInstaller, mark_enabled
from desktop_app.ui.workers import run_task

__all__ = ["InstallPluginDialog"]

RESTART_NOTE = "A new plugin takes effect the next time Parley starts."


class InstallPluginDialog(QDialog):
    """Looks at a plugin, then installs it once the user ticks “I trust this code”.

    Signals:
        progress_reported(str, str): a step and its latest line of output (from the worker thread).
        candidate_ready(object): a plugin was looked at; the Candidate.
        plugin_installed(list): the names of the plugins just installed.
        work_failed(str): a readable reason; nothing was installed.
    """

    progress_reported = Signal(str, str)
    candidate_ready = Signal(object)
    plugin_installed = Signal(list)
    work_failed = Signal(str)

    def __init__(self, host: Any, settings: Any, parent: QWidget | None = None, *,
                 installer: PluginInstaller | None = None):
        super().__init__(parent)
        self.setWindowTitle("Install a plugin")
        self.setObjectName("installPluginDialog")
        self.resize(680, 560)
        self.host = host
        self.settings = settings
        if installer is None:
            plugins_dir = getattr(host, "plugins_dir", None)
            if plugins_dir is None:
                from desktop_app.core.paths import AppPaths

                plugins_dir = AppPaths.default().plugins_dir
            installer = PluginInstaller(plugins_dir)
        self.installer = installer
        self.candidate: Candidate | None = None
        self.cancel_event: threading.Event | None = None
        self.busy = False
        self.closed = False

        layout = QVBoxLayout(self)
        intro = QLabel("Install a plugin from a <b>.py file</b>, a <b>package or project folder</b>, a <b>wheel</b>, "
                       "or a <b>pip requirement</b> such as <code>parley-hello==0.2</code>. Parley shows what "
                       "it is before anything is installed.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        row = QHBoxLayout()
        self.target_edit = QLineEdit()
        self.target_edit.setPlaceholderText("File, folder or pip requirement")
        self.target_edit.setAccessibleName("Plugin to install")
        row.addWidget(self.target_edit, 1)
        self.file_button = QPushButton("File…")
        self.folder_button = QPushButton("Folder…")
        self.check_button = QPushButton("Look at it")
        self.check_button.setDefault(True)
        for button in (self.file_button, self.folder_button, self.check_button):
            row.addWidget(button)
        layout.addLayout(row)

        status_row = QHBoxLayout()
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        status_row.addWidget(self.status_label, 1)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        status_row.addWidget(self.cancel_button)
        layout.addLayout(status_row)

        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.summary.setAccessibleName("What the plugin is")
        self.summary.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.summary.setPlaceholderText("Choose a plugin and press “Look at it”: its name, version, source, "
                                        "hooks, tools and panels appear here.")
        layout.addWidget(self.summary, 1)

        warning = QLabel(f"<b>{TRUST_WARNING}</b>")
        warning.setWordWrap(True)
        layout.addWidget(warning)
        self.trust_box = QCheckBox("I trust this code")
        self.trust_box.setEnabled(False)
        layout.addWidget(self.trust_box)
        layout.addWidget(QLabel(RESTART_NOTE))

        self.buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.install_button = self.buttons.addButton("Install and enable", QDialogButtonBox.ActionRole)
        self.install_button.setEnabled(False)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        self.file_button.clicked.connect(self._on_file_button_clicked)
        self.folder_button.clicked.connect(self._on_folder_button_clicked)
        self.check_button.clicked.connect(self.inspect)
        self.target_edit.returnPressed.connect(self.inspect)
        self.target_edit.textEdited.connect(self._on_target_edit_text_edited)
        self.trust_box.toggled.connect(self._update_buttons)
        self.install_button.clicked.connect(self.install)
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        self.progress_reported.connect(self._on_self_progress_reported)

    # -- choosing --------------------------------------------------------------------------
    @Slot()
    def _on_file_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Plugin file", str(Path.home()),
                                              "Plugins (*.py *.whl *.tar.gz *.zip);;All files (*)")
        if path:
            self.set_target(path)

    @Slot()
    def _on_folder_button_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Plugin folder", str(Path.home()))
        if path:
            self.set_target(path)

    def set_target(self, text: str) -> None:
        """Put ``text`` in the box and look at it."""
        self.target_edit.setText(text)
        self._forget_candidate()
        self.inspect()

    @Slot(str)
    def _on_target_edit_text_edited(self, _text: str) -> None:
        self._forget_candidate()

    def _forget_candidate(self) -> None:
        if self.candidate is not None:
            self.candidate.close()
            self.candidate = None
        self.summary.clear()
        self.trust_box.setChecked(False)
        self._update_buttons()

    # -- the slow parts, off the GUI thread ------------------------------------------------
    @Slot()
    def inspect(self) -> None:
        """Stage and look at the plugin in the box (on the thread pool)."""
        target = self.target_edit.text().strip()
        if self.busy or not target:
            return
        self._forget_candidate()
        self._run(f"Looking at {target}…",
                  lambda progress, cancel: self.installer.prepare(target, progress=progress, cancel=cancel),
                  self._on_prepared)

    @Slot()
    def install(self) -> None:
        """Install the plugin shown; only possible once “I trust this code” is ticked."""
        candidate = self.candidate
        if self.busy or candidate is None or not self.trust_box.isChecked():
            return
        self._run("Installing…",
                  lambda progress, cancel: self.installer.install(candidate, trusted=True, progress=progress,
                                                                  cancel=cancel),
                  self._on_installed)

    def _run(self, status: str, work: Callable[[Callable[[str, str | None], None], threading.Event], Any],
             on_done: Callable[[Any], None]) -> None:
        self.busy = True
        cancel = self.cancel_event = threading.Event()
        self.status_label.setText(status)
        self.cancel_button.setVisible(True)
        self._update_buttons()

        def progress(step: str, line: str | None) -> None:  # on the worker thread
            self.progress_reported.emit(step, line or "")

        run_task(lambda: work(progress, cancel), on_done, self._on_work_failed)

    @Slot(str, str)
    def _on_self_progress_reported(self, step: str, line: str) -> None:
        if self.busy:
            self.status_label.setText(step + (f"\n{line[:160]}" if line else ""))

    def _finish(self) -> bool:
        """The work ended; False when the dialog was closed meanwhile."""
        self.busy = False
        self.cancel_event = None
        if self.closed:
            if self.candidate is not None:
                self.candidate.close()
                self.candidate = None
            return False
        self.cancel_button.setVisible(False)
        self._update_buttons()
        return True

    def _on_prepared(self, candidate: Candidate) -> None:
        if not self._finish():
            candidate.close()
            return
        self.candidate = candidate
        self.summary.setPlainText(candidate.summary_text(trust_warning=False))
        self.status_label.setText("Read what it is below; tick “I trust this code” to install it.")
        self.trust_box.setChecked(False)
        self._update_buttons()
        self.candidate_ready.emit(candidate)

    def _on_installed(self, names: list) -> None:
        mark_enabled(self.settings, names, self.host)
        if not self._finish():
            return
        self._forget_candidate()
        self.status_label.setText(f"Installed and enabled {', '.join(names)}. {RESTART_NOTE}")
        self.plugin_installed.emit(list(names))

    def _on_work_failed(self, message: str) -> None:
        if not self._finish():
            return
        self.status_label.setText(f"<span style='color:#c00'>{_html(message)}</span>".replace("\n", "<br>"))
        self.work_failed.emit(message)

    @Slot()
    def _on_cancel_button_clicked(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
            self.status_label.setText("Cancelling…")

    @Slot()
    def _update_buttons(self) -> None:
        has = self.candidate is not None
        self.trust_box.setEnabled(has and not self.busy)
        self.install_button.setEnabled(has and not self.busy and self.trust_box.isChecked())
        for widget in (self.check_button, self.file_button, self.folder_button, self.target_edit):
            widget.setEnabled(not self.busy)

    def showEvent(self, event: Any) -> None:  # noqa: D102, N802 - Qt override
        self.closed = False
        super().showEvent(event)

    def done(self, result: int) -> None:  # noqa: D102 - Qt override
        self.closed = True
        if self.busy and self.cancel_event is not None:
            # Work still runs on the pool: stop it (an install already under way finishes), and
            # leave the staged files to the work's own end.
            self.cancel_event.set()
        elif self.candidate is not None:
            self.candidate.close()
            self.candidate = None
        super().done(result)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

