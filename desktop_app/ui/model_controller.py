"""The model controller: the toolbar's model picker, loading a model in the background,
adding a GGUF file to the library, the model's info and settings, and what the window shows
while a model loads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import QFileDialog

from desktop_app.core.models import DEFAULT_MODEL_NAME
from desktop_app.ui.dialogs.model_info_dialog import ModelInfoDialog, read_model_details
from desktop_app.ui.workers import run_task

if TYPE_CHECKING:
    from desktop_app.ui.main_window import MainWindow

__all__ = ["ADD_MODEL", "GET_MODELS", "ModelController"]

#: The picker's last entries: the Models window (search and download), and the file dialog.
GET_MODELS = "Get models…"
ADD_MODEL = "Add model…"


class ModelController(QObject):
    """Keeps the window's model picker and the loaded model in step.

    The loading itself runs on the worker's thread; this object only asks for it and shows
    its progress and outcome in the toolbar (``model_combo``, ``model_progress_action`` and
    ``model_info`` of the window).

    Signals:
        model_ready(str): a model finished loading (its path).
        model_failed(str): a model could not be loaded (the reason).
        model_info_opened(object): the model info dialog opened (the dialog).
    """

    model_ready = Signal(str)
    model_failed = Signal(str)
    model_info_opened = Signal(object)

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self._window = window
        self._context = window.context
        #: True from a load request until the worker says how it went.
        self.model_loading = False
        #: Whether this llama.cpp build can offload to a GPU (None until a model has loaded).
        self.gpu_supported: bool | None = None
        self.fill_picker()
        window.model_combo.activated.connect(self._on_model_combo_activated)
        window.model_info_button.clicked.connect(lambda: self.open_model_info(self.picked_model()))
        w = window.client.worker
        w.model_load_started.connect(self._on_worker_model_load_started)
        w.model_loaded.connect(self._on_worker_model_loaded)
        w.model_load_failed.connect(self._on_worker_model_load_failed)

    def fill_picker(self) -> None:
        """List the library's models and the plugin backends' models in the picker, and select
        the configured one."""
        combo = self._window.model_combo
        combo.blockSignals(True)
        combo.clear()
        configured = self._context.settings.get("model.path")
        for entry in self._context.models.entries():
            label = entry.name + (" (built-in)" if entry.builtin else "")
            combo.addItem(label, "" if entry.builtin else entry.name)
            combo.setItemData(combo.count() - 1, entry.path, Qt.ToolTipRole)
        for model in self._context.backend_models():  # e.g. a remote engine's, marked by engine
            combo.addItem(f"{model.name} · {model.engine}", model.ref)
            combo.setItemData(combo.count() - 1, model.detail or model.ref, Qt.ToolTipRole)
        if configured and combo.findData(configured) < 0:
            combo.addItem(Path(configured).name, configured)
        combo.insertSeparator(combo.count())
        combo.addItem(GET_MODELS, GET_MODELS)
        combo.addItem(ADD_MODEL, ADD_MODEL)
        index = combo.findData(configured)
        combo.setCurrentIndex(max(index, 0))
        combo.blockSignals(False)

    @Slot(int)
    def _on_model_combo_activated(self, index: int) -> None:
        data = self._window.model_combo.itemData(index)
        if data in (ADD_MODEL, GET_MODELS):
            self.fill_picker()  # put the selection back; the dialog decides
            if data == ADD_MODEL:
                self.add_model_dialog()
            else:
                self._window.open_models_window()
            return
        self.choose(data)

    def choose(self, data: str) -> None:
        """Make ``data`` (a library name, "" for the built-in model, or a backend's model
        reference) the configured model and load it, unless it is loaded already."""
        settings = self._context.settings
        if data != settings.get("model.path") or not self._context.engine.loaded:
            settings.set("model.path", data)
            settings.save()
            self.load_model(data)

    def picked_model(self) -> str | None:
        """The model the picker shows: a library name, a path, or a backend's reference."""
        data = self._window.model_combo.currentData()
        if data == ADD_MODEL or data is None:
            return None
        return data or DEFAULT_MODEL_NAME

    def open_model_info(self, name: str | None = None) -> None:
        """Show a model's info and its own settings (None: the loaded model), read in the background."""
        context, window = self._context, self._window
        if context.is_backend_model(name):
            where = context.engine.describe() if hasattr(context.engine, "describe") else ""
            window.show_error(f"{name} runs on another engine{' (' + where + ')' if where else ''}; its settings "
                              "are that engine's. Model info and settings are for the library's GGUF files.")
            return

        def done(details) -> None:
            dialog = ModelInfoDialog(context, details, window)
            dialog.settings_saved.connect(self._on_model_info_settings_saved)
            window.open_dialog(dialog)
            self.model_info_opened.emit(dialog)

        run_task(lambda: read_model_details(context, name), done, window.show_error)

    @Slot(str, bool)
    def _on_model_info_settings_saved(self, name: str, reload: bool) -> None:
        if reload and self._context.loaded_model_name == name and not self.model_loading:
            self.load_model(name)

    def load_model(self, name: str | None) -> None:
        """Load a model in the background (None or "": the configured one)."""
        self.model_loading = True
        self._window.client.load_requested.emit(name or self._context.settings.get("model.path") or "")

    def add_model_dialog(self) -> None:
        """Pick a GGUF file, check it and read its metadata in the background, then load it."""
        path, _ = QFileDialog.getOpenFileName(self._window, "Add a GGUF model", str(Path.home()),
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.add_model(path)

    def add_model(self, path: str) -> None:
        """Add ``path`` to the library (in the background) and switch to it."""
        window = self._window
        window.statusBar().showMessage(f"Reading {Path(path).name}…")
        window.model_progress_action.setVisible(True)

        def done(entry) -> None:
            window.model_progress_action.setVisible(self.model_loading)
            window.statusBar().showMessage(f"Added {entry.name}.", 5000)
            self._context.settings.set("model.path", entry.name)
            self._context.settings.save()
            self.fill_picker()
            self.load_model(entry.name)

        def failed(message: str) -> None:
            window.model_progress_action.setVisible(self.model_loading)
            window.statusBar().clearMessage()
            window.show_error(message)

        run_task(lambda: self._context.models.add(path), done, failed)

    @Slot(str)
    def _on_worker_model_load_started(self, name: str) -> None:
        window = self._window
        self.model_loading = True
        window.model_combo.setEnabled(False)
        window.model_progress_action.setVisible(True)
        window.model_info.setText(f"Loading {Path(name).name or DEFAULT_MODEL_NAME}…")

    @Slot(str, object, list)
    def _on_worker_model_loaded(self, path: str, info: Any, warnings: list) -> None:
        window = self._window
        self.model_loading = False
        window.model_combo.setEnabled(True)
        window.model_progress_action.setVisible(False)
        self.gpu_supported = window.client.worker.gpu_supported
        n_ctx = self._context.engine.context_length
        explanation = getattr(self._context.engine, "fit_explanation", "") or ""
        window.model_info.setToolTip(explanation)
        if info is not None:
            window.model_info.setText(
                f"  {info.architecture} · {info.parameter_count / 1e6:,.0f}M parameters · {info.quantization} · "
                f"context {n_ctx:,} of {info.context_length:,}"
                + ("" if info.has_chat_template else " · no chat template (using ChatML)")
            )
            window.model_combo.setToolTip(f"{info.name}\n{path}\n{info.file_size / 1e6:,.1f} MB")
        else:
            where = self._context.engine.describe() if hasattr(self._context.engine, "describe") else ""
            window.model_info.setText(f"  {where + ' · ' if where else ''}context {n_ctx:,}")
        window.context_label.setText(f"context 0 / {n_ctx:,}")
        # A configured model that failed may have given way to another (see EngineWorker._load).
        self._show_loaded_model_in_picker(save=False)
        for warning in warnings:
            window.show_error(warning)
        self.model_ready.emit(path)

    def _show_loaded_model_in_picker(self, *, save: bool = True) -> None:
        """Make the picker and the settings name the model that is really loaded.

        ``save`` False changes the setting for this session only: a model that failed at
        start (on a disk not mounted yet, say) is tried again at the next start.
        """
        settings = self._context.settings
        loaded = self._context.engine.model_path if self._context.engine.loaded else None
        wanted = None
        current = self._context.loaded_entry()  # by name: two entries may share one file
        if current is not None:
            wanted = "" if current.builtin else current.name
        elif loaded is not None and self._context.is_backend_model(str(loaded)):
            wanted = str(loaded)  # a remote engine's model, say
        if wanted is not None and settings.get("model.path") != wanted:
            settings.set("model.path", wanted)
            if save:
                settings.save()
        self.fill_picker()

    @Slot(str)
    def _on_worker_model_load_failed(self, message: str) -> None:
        window = self._window
        self.model_loading = False
        window.model_combo.setEnabled(True)
        window.model_progress_action.setVisible(False)
        engine = self._context.engine
        if engine.loaded:
            window.model_info.setText(f"  still using {engine.model_path.name}")
            self._show_loaded_model_in_picker()
        else:
            window.model_info.setText("  no model loaded")
        window.show_error(message)
        self.model_failed.emit(message)
