"""File → Get models…: search the model hub for GGUF models, see each quantisation's size and
whether it fits this computer, read the model card's summary and licence, download, and use.

Every hub request runs through ``run_task``, so the window never waits on the network; the
downloads run in the app's download manager and go on when this window is closed.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_app.core.hub_fit import format_bytes
from desktop_app.ui.dialogs.download_list import DownloadList
from desktop_app.ui.workers import run_task

__all__ = ["QUANT_COLUMNS", "ModelsWindow", "open_models_window"]

QUANT_COLUMNS = ("Quantisation", "Size", "On this computer", "")
#: The context the verdicts assume while the context length is chosen at load ("auto").
FIT_CONTEXT = 4096
#: The verdicts' colours: readable on the light and the dark theme.
VERDICT_COLOURS = {"fits": "#2e8b57", "tight": "#c98a00", "too large": "#c0392b"}


def _short_verdict(verdict: Any) -> str:
    """``fits · 394 MB of 24.0 GB free``: the table's cell (the whole sentence is its tooltip)."""
    return f"{verdict.level} · {format_bytes(verdict.needed)} of {format_bytes(verdict.available)} free"


def open_models_window(window: Any) -> "ModelsWindow":
    """Show the Models window of ``window`` (the main window), the one already open if any."""
    dialog = window.findChild(ModelsWindow, "modelsWindow")
    if dialog is None:
        dialog = ModelsWindow(window)
    else:
        dialog.refresh_hub()
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    dialog.query.setFocus()
    return dialog


class ModelsWindow(QDialog):
    """Search, details with the fit verdicts, and the downloads."""

    def __init__(self, window: Any):
        super().__init__(window)
        self.setObjectName("modelsWindow")
        self.setWindowTitle("Get models")
        self.resize(980, 700)
        self.main_window = window
        self.context = window.context
        self.hub: Any = None  # set by refresh_hub(), each time the window is opened
        self.details: Any = None
        self._search_serial = 0
        self._details_serial = 0

        self.query = QLineEdit(placeholderText="Search GGUF models, e.g. Qwen2.5 Instruct, SmolLM2, Llama 3.2")
        self.query.setClearButtonEnabled(True)
        self.query.returnPressed.connect(self.search)
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(False)
        self.search_button.setAutoDefault(False)
        self.search_button.clicked.connect(self.search)
        self.source = QLabel()
        self.source.setObjectName("hint")
        self.source.setWordWrap(True)
        self.token_button = QPushButton("Access token…")
        self.token_button.setAutoDefault(False)
        self.token_button.setToolTip("Gated models (e.g. Llama) need the token of an account that accepted "
                                     "their licence. It is kept in the system keyring, never in a file.")
        self.token_button.clicked.connect(self.ask_token)
        top = QHBoxLayout()
        top.addWidget(self.query, 1)
        top.addWidget(self.search_button)
        source_row = QHBoxLayout()
        source_row.addWidget(self.source, 1)
        source_row.addWidget(self.token_button)

        self.results = QListWidget()
        self.results.setObjectName("hubResults")
        self.results.setAccessibleName("Search results")
        self.results.currentItemChanged.connect(self._on_results_current_item_changed)

        self.title = QLabel()
        self.title.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.title.setWordWrap(True)
        self.licence = QLabel()
        self.licence.setWordWrap(True)
        self.licence.setOpenExternalLinks(False)
        self.licence.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.summary.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.quants = QTableWidget(0, len(QUANT_COLUMNS))
        self.quants.setObjectName("hubQuantisations")
        self.quants.setHorizontalHeaderLabels(QUANT_COLUMNS)
        self.quants.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.quants.setSelectionMode(QAbstractItemView.SingleSelection)
        self.quants.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.quants.verticalHeader().hide()
        header = self.quants.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeToContents)
        detail = QWidget()
        detail_box = QVBoxLayout(detail)
        detail_box.setContentsMargins(8, 0, 0, 0)
        detail_box.addWidget(self.title)
        detail_box.addWidget(self.licence)
        summary_scroll = QScrollArea()
        summary_scroll.setWidgetResizable(True)
        summary_scroll.setFrameShape(QScrollArea.NoFrame)
        summary_scroll.setWidget(self.summary)
        summary_scroll.setMaximumHeight(150)
        detail_box.addWidget(summary_scroll)
        detail_box.addWidget(self.quants, 1)

        splitter = QSplitter()
        splitter.addWidget(self.results)
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([360, 620])

        self.downloads = DownloadList(self.context.downloads, window.download_bridge, self._use)
        window.download_bridge.download_changed.connect(self._on_download_changed)
        downloads_box = QGroupBox("Downloads")
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(self.downloads)
        inner = QVBoxLayout(downloads_box)
        inner.addWidget(scroll)
        downloads_box.setMinimumHeight(150)

        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(source_row)
        layout.addWidget(splitter, 3)
        layout.addWidget(downloads_box, 1)
        layout.addWidget(self.status)
        self._show_details(None)
        self.refresh_hub()

    # -- search -------------------------------------------------------------------------------
    def refresh_hub(self) -> None:
        """Follow the hub settings as they are now (they may have changed since the window was
        last open); whether a token is saved is asked in the background, as a keyring may wait
        for the user to unlock it."""
        from desktop_app.core.errors import ParleyError

        try:
            self.hub = self.context.hub()
        except ParleyError as exc:  # e.g. a hub.endpoint that is not an http(s) address
            self.hub = None
            self.source.setText(f"{exc} Fix it in Settings → Preferences → Model hub.")
            self.search_button.setEnabled(False)
            self.token_button.setEnabled(False)
            return
        self.search_button.setEnabled(True)
        self.token_button.setEnabled(True)
        hub = self.hub
        where = f"Searching {hub.endpoint}"
        mirror = "A mirror can be set in Settings → Preferences → Model hub."
        self.source.setText(f"{where}. {mirror}")

        def done(has_token: bool) -> None:
            if hub is self.hub:
                token = "with your access token" if has_token else "without an access token"
                self.source.setText(f"{where} ({token}). {mirror}")

        run_task(lambda: bool(hub.token), done, lambda message: None, owner=self)
        if not self.results.count() and not self.query.text().strip():
            self.search()  # an empty window lists the most downloaded GGUF models to start from

    @Slot()
    def ask_token(self) -> None:
        """Ask for a hub access token and keep it in the keyring (in the background: a keyring may
        wait for the user to unlock it); an empty answer forgets the saved one."""
        if self.hub is None:
            return
        endpoint = self.hub.endpoint
        token, ok = QInputDialog.getText(self, "Hub access token",
                                         f"Access token for {endpoint} (empty: forget the saved one):",
                                         QLineEdit.Password)
        if not ok:
            return

        def keep() -> str:
            from desktop_app.core.hub import Hub, forget_hub_token, save_hub_token

            if not token.strip():
                forget_hub_token(endpoint)
                return "The saved access token was forgotten."
            account = Hub(endpoint, token.strip()).whoami()  # a refused token stops here, unsaved
            save_hub_token(endpoint, token.strip())
            return f"Token saved for {account}." if account else "Token saved."

        def done(message: str) -> None:
            self.refresh_hub()
            self.status.setText(message)

        run_task(keep, done, self.status.setText, owner=self)

    @Slot()
    def search(self) -> None:
        """Search the hub for the query, in the background."""
        query = self.query.text().strip()
        if self.hub is None:
            return
        hub = self.hub
        self._search_serial += 1
        serial = self._search_serial
        self.status.setText(f"Searching for “{query}”…" if query else "Listing the most downloaded GGUF models…")
        self.search_button.setEnabled(False)

        def done(found: list) -> None:
            if serial != self._search_serial:
                return  # a newer search is on its way
            self.search_button.setEnabled(True)
            self.results.clear()
            for repo in found:
                self.results.addItem(self._result_item(repo))
            self.status.setText((f"{len(found)} repositories." if query else
                                 f"The {len(found)} most downloaded GGUF repositories; search for others above.")
                                if found else
                                f"No GGUF repositories match “{query}”. Try fewer or other words.")
            if found:
                self.results.setCurrentRow(0)

        def failed(message: str) -> None:
            if serial == self._search_serial:
                self.search_button.setEnabled(True)
                self.status.setText(message)

        run_task(lambda: hub.search(query) if query else hub.find_repos(None, ("gguf",)), done, failed,
                 owner=self)

    @staticmethod
    def _result_item(repo: Any) -> QListWidgetItem:
        extra = [f"↓ {repo.downloads:,}"]
        if repo.license:
            extra.append(repo.license)
        if repo.gated:
            extra.append("licence to accept first")
        item = QListWidgetItem(f"{repo.repo_id}\n{' · '.join(extra)}")
        item.setData(Qt.UserRole, repo.repo_id)
        item.setToolTip(repo.repo_id)
        return item

    # -- details ------------------------------------------------------------------------------
    @Slot(QListWidgetItem, QListWidgetItem)
    def _on_results_current_item_changed(self, current: QListWidgetItem | None, _previous: Any) -> None:
        if current is not None:
            self.show_repo(current.data(Qt.UserRole))

    def show_repo(self, repo_id: str) -> None:
        """Fetch a repository's details and the fit of each quantisation, in the background."""
        if self.hub is None:
            return
        hub = self.hub
        self._details_serial += 1
        serial = self._details_serial
        self.title.setText(f"<b>{repo_id}</b>")
        self.licence.setText("Reading the repository…")
        self.summary.setText("")
        self.quants.setRowCount(0)
        context = self.context

        def fetch() -> Any:
            from desktop_app.core.hub_fit import repo_fit
            from desktop_app.core.memory_fit import available_memory, available_vram

            details = hub.details(repo_id)
            fit = repo_fit(hub, details, available_ram=available_memory(), available_vram=available_vram(),
                           context_length=context.settings.get("model.context_length") or FIT_CONTEXT)
            return details, fit

        def done(result: Any) -> None:
            if serial == self._details_serial:
                self._show_details(*result)

        def failed(message: str) -> None:
            if serial == self._details_serial:
                self.licence.setText(message)

        run_task(fetch, done, failed, owner=self)

    def _show_details(self, details: Any, fit: Any = None) -> None:
        self.details = details
        if details is None:
            self.title.setText("<b>Find a model</b>")
            self.licence.setText("Search above, pick a repository, then a quantisation: smaller ones are "
                                 "faster and need less memory, larger ones answer better. Q4_K_M is a "
                                 "good first choice.")
            return
        facts = [f"<b>{details.repo_id}</b>"]
        if details.base_model:
            facts.append(f"based on {details.base_model}")
        self.title.setText(" · ".join(facts))
        licence = f"Licence: {details.license or 'not stated'}."
        if details.gated:
            licence += f" <b>{details.gate_message}</b>"
        self.licence.setText(licence)
        self.summary.setText(details.summary or "The model card has no summary.")
        models = list(details.models)
        self.quants.setRowCount(len(models))
        verdicts = fit.verdicts if fit is not None else {}
        for row, model in enumerate(models):
            parts = f" in {len(model.parts)} parts" if len(model.parts) > 1 else ""
            self.quants.setItem(row, 0, QTableWidgetItem(model.name))
            self.quants.setItem(row, 1, QTableWidgetItem(format_bytes(model.size) + parts))
            verdict = verdicts.get(model.name)
            item = QTableWidgetItem(_short_verdict(verdict) if verdict else "unknown")
            if verdict is not None:
                item.setForeground(QColor(VERDICT_COLOURS.get(verdict.level, "#777777")))
                item.setToolTip(verdict.text)
            self.quants.setItem(row, 2, item)
            button = QPushButton("Download")
            button.setAccessibleName(f"Download {model.name}")
            button.clicked.connect(lambda _=False, m=model: self.download(m))
            self.quants.setCellWidget(row, 3, button)
        if not models:
            self.status.setText("This repository has no complete GGUF model; Parley runs GGUF files.")
        elif fit is not None and fit.note:
            self.status.setText(f"Only the weights are counted: {fit.note}.")
        else:
            self.status.setText("")

    # -- download and use ---------------------------------------------------------------------
    def download(self, model: Any) -> None:
        """Start downloading ``model`` (its progress shows below)."""
        try:
            self.context.downloads.add(model)
        except Exception as exc:  # a refused start (no disk space, already there) is a message
            self.status.setText(str(exc))
            return
        self.status.setText(f"Downloading {model.name} of {model.repo_id}…")

    @Slot(object)
    def _on_download_changed(self, download: Any) -> None:
        if download.model.kind != "model":
            return  # a plugin's download (a LoRA adapter): its own window speaks of it
        state = download.state.value
        if state == "done":
            self.status.setText(f"{download.label} is in your library: “Use this model” loads it.")
        elif state == "failed":
            message = download.error or "The download failed."
            if download.error_kind in ("gated", "token"):
                message += " Here: “Access token…” above, then Retry."
            self.status.setText(message)

    def _use(self, download: Any) -> None:
        """Load a downloaded model and go back to the chat."""
        controller = self.main_window.model_controller
        controller.fill_picker()
        controller.choose(download.entry_name)
        self.main_window.raise_()
        self.main_window.activateWindow()
