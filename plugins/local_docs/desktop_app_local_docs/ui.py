"""The Documents panel: collections, which ones the open conversation uses, indexing progress
(cancellable), the skip report, and a background check that keeps the index up to date while
the app runs."""

from __future__ import annotations

import threading
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QInputDialog,
    QLineEdit,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.ui.api import add_button_row, add_job_controls, run_task
from desktop_app_local_docs import state

__all__ = ["AddCollectionDialog", "DocumentsPanel", "WATCH_INTERVAL_MS"]

#: How often the folders are checked for changes while the app runs (a quick stat of each file).
WATCH_INTERVAL_MS = 30_000


class _Bridge(QObject):
    """Reports from background work, delivered on the GUI thread.

    Signals: ``progressed(Progress)``, ``finished(name, IndexReport)`` and ``failed(name,
    message, kind)`` of indexing runs (``kind`` stays the same for the same trouble, e.g. a
    server away, while the message's details may change); ``collection_added(name)`` and
    ``add_failed(name, message)`` of adding a collection on a server.
    """

    progressed = Signal(object)
    finished = Signal(str, object)
    failed = Signal(str, str, str)
    collection_added = Signal(str)
    add_failed = Signal(str, str)


class AddCollectionDialog(QDialog):
    """Name the collection a folder goes to, and choose where it is kept: this computer (the
    default) or a Chroma server shared with other Parleys."""

    def __init__(self, folder: str, parent: QWidget | None = None):
        super().__init__(parent)
        from pathlib import Path

        self.setWindowTitle("Add a folder")
        form = QFormLayout(self)
        form.addRow(QLabel(folder))
        self.name = QLineEdit(Path(folder).name)
        self.name.setAccessibleName("Collection name")
        form.addRow("Collection name:", self.name)
        self.shared = QCheckBox("Keep it on a Chroma server, shared with other Parleys")
        form.addRow(self.shared)
        self.server = QLineEdit()
        self.server.setAccessibleName("Chroma server address")
        self.server.setPlaceholderText("http://127.0.0.1:8000")
        self.server.setEnabled(False)
        self.server.setToolTip("A server started with: chroma run --path FOLDER --port 8000. Everyone who adds "
                               "the same collection name there shares it.")
        form.addRow("Server:", self.server)
        self.shared.toggled.connect(self.server.setEnabled)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def choice(self) -> tuple[str, str | None]:
        """(collection name, server URL or None for this computer)."""
        server = self.server.text().strip() if self.shared.isChecked() else ""
        return self.name.text().strip(), server or None


class DocumentsPanel(QWidget):
    """Manage collections and index them without ever blocking the window."""

    def __init__(self, context: Any, window: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.context = context
        self.window = window
        self.setObjectName("documentsPanel")
        layout = QVBoxLayout(self)
        hint = QLabel("Tick the collections this conversation answers from.")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        self.list = QListWidget()
        self.list.setAccessibleName("Document collections")
        self.list.setWordWrap(True)
        layout.addWidget(self.list, 1)
        self.add_button = QPushButton("Add folder…")
        self.index_button = QPushButton("Update")
        self.remove_button = QPushButton("Remove")
        add_button_row(layout, self.add_button, self.index_button, self.remove_button)
        self.progress, self.status, self.cancel_button = add_job_controls(
            layout, "Indexing progress", "Stop indexing")
        self.report_button = QPushButton("Skipped files…")
        self.report_button.hide()
        layout.addWidget(self.report_button)

        self.bridge = _Bridge()
        self.bridge.progressed.connect(self._on_progress)
        self.bridge.finished.connect(self._on_finished)
        self.bridge.failed.connect(self._on_failed)
        self.bridge.collection_added.connect(self._on_collection_added)
        self.bridge.add_failed.connect(self._on_add_failed)
        self.add_button.clicked.connect(self.add_folder_dialog)
        self.index_button.clicked.connect(lambda: self.start_index(self.current_name()))
        self.remove_button.clicked.connect(self.remove_current)
        self.cancel_button.clicked.connect(self.cancel)
        self.report_button.clicked.connect(self.show_report)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.itemDoubleClicked.connect(lambda item: self.rename(item.data(Qt.UserRole)))
        self.list.setToolTip("Double-click a collection to rename it.")
        window.conversation_shown.connect(self.show_selection)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: list[str] = []
        #: The last failure shown per collection, until it indexes again.
        self._failures: dict[str, str] = {}
        self.last_report: Any = None
        #: Set by Stop: the periodic check does not restart indexing until the user does.
        self.paused = False
        self.watch = QTimer(self, interval=WATCH_INTERVAL_MS)
        self.watch.timeout.connect(self.check_for_changes)
        self.watch.start()
        self.refresh()
        if self.list.count():
            # Finish any run an earlier session left half-done, and pick up changes made meanwhile.
            QTimer.singleShot(5_000, self.check_for_changes)
            # Load the embedding model now, off the GUI thread, so the first question is not slow.
            threading.Thread(target=lambda: state.index.embedder.model, name="parley-embedder-warmup",
                             daemon=True).start()

    # -- collections ----------------------------------------------------------------------
    def refresh(self) -> None:
        """List the collections (ticked when the open conversation uses them)."""
        chosen, _ = state.collections_for(self.window.current_conversation)
        self.list.blockSignals(True)
        self.list.clear()
        for name, info in state.index.collections().items():
            item = QListWidgetItem(f"{name}\n{info['files']} files, {info['chunks']} chunks"
                                   + (f", {info['skipped']} skipped" if info["skipped"] else "")
                                   + (f"\nshared on {info['server']}" if info["server"] else ""))
            item.setData(Qt.UserRole, name)
            item.setToolTip("\n".join(info["paths"] + ([f"On the Chroma server {info['server']}"]
                                                        if info["server"] else [])))
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if name in chosen else Qt.Unchecked)
            self.list.addItem(item)
        self.list.blockSignals(False)

    def show_selection(self, conversation_id: Any) -> None:
        """Show which collections a conversation answers from."""
        self.refresh()

    def checked(self) -> list[str]:
        """The ticked collections."""
        return [self.list.item(i).data(Qt.UserRole) for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.Checked]

    def current_name(self) -> str | None:
        """The selected collection."""
        item = self.list.currentItem()
        return item.data(Qt.UserRole) if item else None

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        chosen = self.checked()
        state.selection = chosen
        state.remember(self.window.current_conversation, chosen)

    def add_folder_dialog(self) -> None:
        """Pick a folder, then the collection's name and where it is kept; then index it."""
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of documents")
        if not folder:
            return
        dialog = AddCollectionDialog(folder, self)
        if dialog.exec() == QDialog.Accepted:
            name, server = dialog.choice()
            if name:
                self.add_folder(name, folder, server)

    def add_folder(self, name: str, folder: str, server: str | None = None) -> None:
        """Add a folder to a collection (created if needed, on ``server`` if given), tick it, and index it.

        A server is reached off the GUI thread (it may be slow or away); ``collection_added`` or
        ``add_failed`` says how it went.
        """
        from desktop_app_local_docs.index import DocsError

        if server is None:
            try:
                state.index.add_collection(name, [folder])
            except DocsError as exc:
                self.window.show_error(str(exc))
                return
            self._on_collection_added(name)
            return
        index, bridge = state.index, self.bridge
        self.status.setText(f"Connecting to {server}…")

        def add() -> str | None:
            try:
                index.add_collection(name, [folder], server=server)
            except DocsError as exc:
                return str(exc)
            return None

        def done(problem: str | None) -> None:
            if problem is None:
                bridge.collection_added.emit(name)
            else:
                bridge.add_failed.emit(name, problem)

        run_task(add, done, lambda message: bridge.add_failed.emit(name, message))

    def _on_collection_added(self, name: str) -> None:
        self.refresh()
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.UserRole) == name:
                self.list.item(i).setCheckState(Qt.Checked)
        self.start_index(name)

    def rename(self, name: str | None) -> None:
        """Ask for a new name for a collection."""
        from desktop_app_local_docs.index import DocsError

        if not name or self.indexing:
            return
        new, ok = QInputDialog.getText(self, "Rename collection", "New name:", text=name)
        if self.indexing:  # the periodic check may have started while the dialog was open
            self.window.show_error("Indexing is running; rename the collection when it has finished.")
            return
        if ok and new.strip() and new.strip() != name:
            try:
                state.index.rename_collection(name, new.strip())
            except DocsError as exc:
                self.window.show_error(str(exc))
                return
            state.selection = [new.strip() if n == name else n for n in state.selection]
            self.refresh()

    def remove_current(self) -> None:
        """Forget the selected collection (the files are not touched)."""
        name = self.current_name()
        if not name or self.indexing:
            return
        if QMessageBox.question(self, "Remove collection",
                                f"Forget “{name}”? Your files are not touched.") == QMessageBox.Yes:
            if self.indexing:  # started while the question was open
                self.window.show_error("Indexing is running; remove the collection when it has finished.")
                return
            state.index.remove_collection(name)
            state.selection = [n for n in state.selection if n != name]
            self.refresh()

    # -- indexing -------------------------------------------------------------------------
    @property
    def indexing(self) -> bool:
        """Whether an indexing run is going on."""
        return self._thread is not None and self._thread.is_alive()

    def start_index(self, name: str | None) -> None:
        """Index a collection in the background (queued if another run is going on)."""
        if not name:
            return
        self.paused = False
        if self.indexing:
            if name not in self._queue:
                self._queue.append(name)
            return
        self._cancel.clear()
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.status.setText(f"Indexing {name}…")
        bridge, cancel, index = self.bridge, self._cancel, state.index

        from desktop_app_local_docs.index import DocsError, ServerUnavailable

        def run() -> None:
            try:
                report = index.index(name, progress=bridge.progressed.emit, cancel=cancel)
            except ServerUnavailable as exc:
                bridge.failed.emit(name, str(exc), f"server unavailable {exc.server}")
            except DocsError as exc:  # its message is for the user as it is
                bridge.failed.emit(name, str(exc), str(exc))
            except Exception as exc:  # reported in the panel; the app goes on
                message = f"{type(exc).__name__}: {exc}"
                bridge.failed.emit(name, message, message)
            else:
                bridge.finished.emit(name, report)

        self._thread = threading.Thread(target=run, name="parley-indexer", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop indexing after the current file; Update continues where it stopped.

        The periodic check stays paused until the user asks for indexing again, so a Stop
        is not undone half a minute later.
        """
        self._cancel.set()
        self._queue.clear()
        self.paused = True

    def _on_progress(self, p: Any) -> None:
        self.progress.setRange(0, max(1, p.files_total))
        self.progress.setValue(p.files_done)
        eta = f", about {p.eta:.0f} s left" if p.eta else ""
        self.status.setText(f"{p.files_done}/{p.files_total} files, {p.chunks} chunks, {p.rate:.0f} chunks/s{eta}")

    def _on_finished(self, name: str, report: Any) -> None:
        self.last_report = report
        self.progress.hide()
        self.cancel_button.hide()
        state_text = "stopped — Update continues where it stopped" if report.cancelled else "up to date"
        self.status.setText(f"{name}: {state_text}. {report.indexed} indexed, {report.unchanged} unchanged, "
                            f"{len(report.skipped)} skipped, {report.removed} removed ({report.seconds:.1f} s).")
        self.report_button.setVisible(bool(state.index.skipped(name)))
        self._report_name = name
        self._failures.pop(name, None)
        self.refresh()
        self._next_in_queue()

    def _next_in_queue(self) -> None:
        if self._thread is not None:
            # The run sent its last signal and is returning; until it has, ``indexing`` is
            # still true and the next name would only be queued again, never started.
            self._thread.join(timeout=5)
        if self._queue:
            self.start_index(self._queue.pop(0))

    def _on_add_failed(self, name: str, message: str) -> None:
        self.status.setText(f"{name} was not added.")
        self.window.show_error(message)

    def _on_failed(self, name: str, message: str, kind: str) -> None:
        self.progress.hide()
        self.cancel_button.hide()
        self.status.setText(f"{name}: indexing failed. {message}")
        self.status.setToolTip(message)
        # A server that stays down fails the periodic check every half minute: say it once.
        if self._failures.get(name) != kind:
            self._failures[name] = kind
            self.window.show_error(f"Indexing {name} failed: {message}")
        # The other collections are still brought up to date.
        self._next_in_queue()

    def show_report(self) -> None:
        """List the files the last indexed collection skipped, and why."""
        name = getattr(self, "_report_name", None) or self.current_name()
        if not name:
            return
        skipped = state.index.skipped(name)
        text = "\n".join(f"{path}: {reason}" for path, reason in skipped.items()) or "Nothing was skipped."
        box = QMessageBox(QMessageBox.Information, f"Skipped in {name}", f"{len(skipped)} files were not indexed.",
                          QMessageBox.Close, self)
        box.setDetailedText(text)
        box.open()

    def check_for_changes(self) -> None:
        """Bring every collection up to date (unchanged files cost one stat each)."""
        if self.indexing or self.paused:
            return
        names = list(state.index.collections())
        if names:
            self._queue = names[1:]
            self.start_index(names[0])
