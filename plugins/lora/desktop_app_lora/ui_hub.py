"""“Find adapters on the hub…”: search the model hub for LoRA adapters for the loaded model, see
whether each fits (and why) before downloading, and download one into the library.

The search and the download run on plain threads and report through Qt signals, which arrive
on the GUI thread; Cancel sets an event both check between requests and files. Nothing here
waits on the network.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.api import ParleyError
from desktop_app_lora import state
from desktop_app_lora.hub_adapters import COMPATIBLE, INCOMPATIBLE, PROBABLY

log = logging.getLogger(__name__)

__all__ = ["HubAdapterDialog", "HubJob", "ResultRow"]

_COLOURS = {COMPATIBLE: "#1e8449", PROBABLY: "#b9770e", INCOMPATIBLE: "#c0392b"}
_MARKS = {COMPATIBLE: "✓", PROBABLY: "≈", INCOMPATIBLE: "✕"}


class HubJob(QObject):
    """One search or download at a time, on a plain thread.

    Signals:
        progressed(object): a line of text (search) or a DownloadProgress (download).
        searched(object): the list of AdapterCandidates found.
        downloaded(object): the library entry of the adapter added.
        failed(str): why the search or download failed, or that it was cancelled (``cancelled`` is True then).
    """

    progressed = Signal(object)
    searched = Signal(object)
    downloaded = Signal(object)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = False
        self.cancelled = False
        self.kind = ""

    @property
    def running(self) -> bool:
        """Whether a search or download is going on."""
        return self._busy

    def search(self, hub: Any, model_path: Path, query: str | None) -> None:
        """Search in the background; ``searched`` or ``failed`` reports the outcome."""
        from desktop_app_lora.hub_search import find_adapters

        self._start("search", lambda: find_adapters(hub, model_path, query, progress=self._progress,
                                                    cancel=self._cancel), self.searched)

    def download(self, context: Any, candidate: Any, model_path: Path) -> None:
        """Download (and convert) in the background, through the app's download manager;
        ``downloaded`` or ``failed`` reports the outcome."""
        from desktop_app_lora.hub_download import download_adapter

        library = state.library
        # context.downloads is made on first use, reading the keyring: on the job's thread too.
        self._start("download", lambda: download_adapter(context.downloads, candidate, library, model_path,
                                                         progress=self._progress, cancel=self._cancel),
                    self.downloaded)

    def cancel(self) -> None:
        """Stop at the next request or file; a download adds nothing."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the job to end (tests, closing); True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _start(self, kind: str, work: Callable[[], Any], done: Any) -> None:
        from desktop_app_lora.hub_download import DownloadCancelled
        from desktop_app_lora.hub_search import SearchCancelled

        if self.running:
            raise RuntimeError("a hub search or download is already going on")
        self._cancel.clear()
        self._busy = True
        self.cancelled = False
        self.kind = kind

        def run() -> None:
            outcome: tuple[Any, ...]
            try:
                outcome = (done, work())
            except (SearchCancelled, DownloadCancelled) as exc:
                self.cancelled = True
                outcome = (self.failed, str(exc))
            except ParleyError as exc:
                outcome = (self.failed, str(exc))
            except Exception as exc:  # shown in the window; the app goes on
                log.exception("hub %s failed", kind)
                outcome = (self.failed, f"The {kind} failed: {type(exc).__name__}: {exc}")
            # Free for the next search before anyone hears the news (they may start one at once).
            self._busy = False
            self._emit(*outcome)

        self._thread = threading.Thread(target=run, name=f"parley-lora-hub-{kind}", daemon=True)
        self._thread.start()

    def _progress(self, what: Any) -> None:
        self._emit(self.progressed, what)

    @staticmethod
    def _emit(signal: Any, *args: Any) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # the dialog closed meanwhile: nobody is listening
            pass


class ResultRow(QWidget):
    """One adapter found: its name and verdict, its kind, size and licence, and the reason in words."""

    def __init__(self, candidate: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.candidate = candidate
        verdict = candidate.compatibility
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(2)
        top = QHBoxLayout()
        title = QLabel(f"<b>{candidate.repo_id}</b>" + (f" · {candidate.selector}" if candidate.selector else ""))
        title.setTextFormat(Qt.RichText)
        title.setWordWrap(True)
        self.verdict = QLabel(f"{_MARKS.get(verdict.verdict, '?')} {verdict.label}")
        self.verdict.setStyleSheet(f"color: {_COLOURS.get(verdict.verdict, 'palette(mid)')}; font-weight: bold;")
        self.verdict.setAlignment(Qt.AlignRight | Qt.AlignTop)
        top.addWidget(title, 1)
        top.addWidget(self.verdict, 0, Qt.AlignTop)
        layout.addLayout(top)
        kind = "GGUF adapter" if candidate.kind == "gguf" else "PEFT adapter, converted on arrival"
        facts = [kind, f"{candidate.size / 1e6:.1f} MB", f"{candidate.downloads:,} downloads"]
        if candidate.license:
            facts.append(f"licence {candidate.license}")
        if candidate.gated:
            facts.append("gated: accept its licence on the hub first")
        self.facts = QLabel(" · ".join(facts))
        self.facts.setWordWrap(True)
        self.facts.setStyleSheet("color: palette(mid); font-size: 90%;")
        layout.addWidget(self.facts)
        self.reason = QLabel(verdict.reason)
        self.reason.setWordWrap(True)
        layout.addWidget(self.reason)
        self.setAccessibleName(f"{candidate.label}: {verdict.label}")


class _ResultList(QListWidget):
    """A list of ResultRows that follow its width (their text wraps; no sideways scrolling)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollMode(QListWidget.ScrollPerPixel)
        self.setSelectionMode(QListWidget.SingleSelection)
        # The chosen row is framed rather than filled, so its coloured verdict stays readable.
        self.setStyleSheet("QListWidget::item { border-bottom: 1px solid palette(midlight); }"
                           "QListWidget::item:selected { background: transparent; border: 2px solid "
                           "palette(highlight); border-radius: 4px; }")

    def add_row(self, row: ResultRow) -> QListWidgetItem:
        """Append a row."""
        item = QListWidgetItem(self)
        item.setData(Qt.UserRole, row.candidate)
        self.setItemWidget(item, row)
        self._fit(item)
        return item

    def _fit(self, item: QListWidgetItem) -> None:
        row = self.itemWidget(item)
        width = self.viewport().width()
        item.setSizeHint(QSize(width, row.heightForWidth(width) if row.hasHeightForWidth() else row.sizeHint().height()))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        """Re-wrap every row to the new width."""
        super().resizeEvent(event)
        for i in range(self.count()):
            self._fit(self.item(i))


class HubAdapterDialog(QDialog):
    """Search the hub for adapters for the loaded model, and download one into the library.

    Signals:
        adapter_added(object): the library entry of a downloaded adapter.
    """

    adapter_added = Signal(object)

    def __init__(self, context: Any, model_path: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.context = context
        self.model_path = model_path
        self.hub: Any = None
        self.setWindowTitle("Find LoRA adapters on the hub")
        self.resize(760, 520)
        layout = QVBoxLayout(self)
        self.intro = QLabel()
        self.intro.setWordWrap(True)
        layout.addWidget(self.intro)
        row = QHBoxLayout()
        self.query = QLineEdit()
        self.query.setAccessibleName("Search for adapters")
        self.query.setClearButtonEnabled(True)
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        row.addWidget(self.query, 1)
        row.addWidget(self.search_button)
        layout.addLayout(row)
        self.results = _ResultList()
        self.results.setAccessibleName("Adapters found")
        layout.addWidget(self.results, 1)
        self.progress = QProgressBar()
        self.progress.setAccessibleName("Download progress")
        self.progress.hide()
        layout.addWidget(self.progress)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status)
        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.setEnabled(False)
        self.download_button.setToolTip("Download the adapter chosen above into the library "
                                        "(a PEFT adapter is converted for the loaded model).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.close_button = QPushButton("Close")
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.close_button)
        layout.addLayout(buttons)

        self.job = HubJob(self)
        self.job.progressed.connect(self._on_job_progressed)
        self.job.searched.connect(self._on_job_searched)
        self.job.downloaded.connect(self._on_job_downloaded)
        self.job.failed.connect(self._on_job_failed)
        self.search_button.clicked.connect(self.search)
        self.query.returnPressed.connect(self.search)
        self.download_button.clicked.connect(self.download)
        self.cancel_button.clicked.connect(self.job.cancel)
        self.close_button.clicked.connect(self.close)
        self.results.currentRowChanged.connect(self._on_results_current_row_changed)
        self._describe_model()

    def _describe_model(self) -> None:
        from desktop_app.api import check_gguf_file
        from desktop_app_lora.hub_adapters import model_label

        try:
            header = check_gguf_file(self.model_path)  # a header walk: milliseconds, cached
            label, family = model_label(header, self.model_path.name), header.scalars.get("general.basename")
        except ParleyError:
            label, family = self.model_path.name, None
        try:
            self.hub = self.context.hub()
            where = self.hub.endpoint
        except ParleyError as exc:
            where = f"no hub ({exc})"
        self.intro.setText(f"Adapters for <b>{label}</b> ({self.model_path.name}), on {where}. Each one is checked "
                           "against the model from its metadata before anything is downloaded.")
        self.query.setPlaceholderText(f"Words in the adapter's name, or a base model's owner/name "
                                      f"(empty: {family or 'the model’s name'})")

    # -- searching --------------------------------------------------------------------------
    def search(self) -> None:
        """Search in the background for the words typed (none: the model's own name)."""
        if self.job.running:
            return
        if self.hub is None:
            self._describe_model()
            if self.hub is None:
                self.status.setText("Set the hub's address first (the hub.endpoint setting).")
                return
        self.results.clear()
        self._busy("Searching…")
        self.job.search(self.hub, self.model_path, self.query.text().strip() or None)

    def _on_job_searched(self, found: list) -> None:
        self._idle()
        for candidate in found:
            self.results.add_row(ResultRow(candidate))
        usable = sum(c.compatibility.usable for c in found)
        if not found:
            self.status.setText("No LoRA adapters found. Try other words, or a base model's owner/name.")
        else:
            self.status.setText(f"{len(found)} adapters found, {usable} of them fit the loaded model. "
                                "Pick one to download.")
            first = next((i for i, c in enumerate(found) if c.compatibility.usable), None)
            if first is not None:
                self.results.setCurrentRow(first)

    def selected(self) -> Any:
        """The adapter picked in the list, or None."""
        item = self.results.currentItem()
        return item.data(Qt.UserRole) if item is not None else None

    def _on_results_current_row_changed(self, _row: int) -> None:
        candidate = self.selected()
        self.download_button.setEnabled(candidate is not None and candidate.compatibility.usable
                                        and not self.job.running)
        if candidate is not None and not candidate.compatibility.usable and not self.job.running:
            self.status.setText(f"{candidate.label} cannot be used with the loaded model: "
                                f"{candidate.compatibility.reason}")

    # -- downloading ------------------------------------------------------------------------
    def download(self) -> None:
        """Download the picked adapter in the background (refused at once when it does not fit)."""
        candidate = self.selected()
        if candidate is None or self.job.running:
            return
        if not candidate.compatibility.usable:
            self.status.setText(f"{candidate.label} does not fit the loaded model: {candidate.compatibility.reason}")
            return
        self._busy(f"Downloading {candidate.label}…")
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.show()
        self.job.download(self.context, candidate, self.model_path)

    def _on_job_progressed(self, what: Any) -> None:
        if isinstance(what, str):
            self.status.setText(what)
            return
        self.status.setText(f"{what.message} ({what.done / 1e6:.1f} of {what.total / 1e6:.1f} MB)")
        if what.total:
            self.progress.setValue(int(1000 * what.done / what.total))

    def _on_job_downloaded(self, entry: Any) -> None:
        self._idle()
        self.status.setText(f"Added {entry.name} to the library: tick it in the LoRA panel to use it.")
        self.adapter_added.emit(entry)

    def _on_job_failed(self, message: str) -> None:
        self._idle()
        self.status.setText(message)

    # -- state ------------------------------------------------------------------------------
    def _busy(self, text: str) -> None:
        self.status.setText(text)
        self.search_button.setEnabled(False)
        self.download_button.setEnabled(False)
        self.cancel_button.show()

    def _idle(self) -> None:
        self.progress.hide()
        self.cancel_button.hide()
        self.search_button.setEnabled(True)
        self._on_results_current_row_changed(self.results.currentRow())

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        """Closing cancels what is going on (a download adds nothing)."""
        self.job.cancel()
        super().closeEvent(event)
