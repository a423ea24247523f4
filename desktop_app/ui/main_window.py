"""The main window: conversations on the left, the chat in the middle, the model on top.

The window builds the widgets and menus and shows conversations; its other jobs live apart:
turns in :mod:`~desktop_app.ui.turn_controller`, the model picker in
:mod:`~desktop_app.ui.model_controller`, plugins' panels and actions in
:mod:`~desktop_app.ui.plugin_ui`, the saved layout and theme in :mod:`~desktop_app.ui.window_state`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.core.errors import ParleyError
from desktop_app.core.paths import atomic_write_text
from desktop_app.core.store import StoreError
from desktop_app.ui.actions import menu_action
from desktop_app.ui.chat_view import ChatView
from desktop_app.ui.composer import Composer
from desktop_app.ui.dialogs.inspector import PromptInspector
from desktop_app.ui.dialogs.plugins_dialog import PluginsDialog
from desktop_app.ui.dialogs.settings_dialog import SettingsDialog
from desktop_app.ui.markdown import render_markdown
from desktop_app.ui.dialogs.download_list import DownloadBridge
from desktop_app.ui.model_controller import ModelController
from desktop_app.ui.plugin_ui import PluginUI
from desktop_app.ui.sidebar import Sidebar
from desktop_app.ui.turn_controller import TurnController, answer_trace
from desktop_app.ui.window_api import WindowApi
from desktop_app.ui.window_state import WindowState
from desktop_app.ui.workers import EngineClient, run_task

__all__ = ["MainWindow"]

log = logging.getLogger(__name__)



class ErrorBanner(QFrame):
    """A dismissable message at the top of the chat, for errors a person should see."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("errorBanner")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.label.setAccessibleName("Error message")
        layout.addWidget(self.label, 1)
        close = QToolButton(text="✕", toolTip="Dismiss", accessibleName="Dismiss error")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout.addWidget(close)
        self.hide()

    def show_message(self, text: str) -> None:
        """Show ``text`` (replacing any previous message)."""
        self.label.setText(text)
        self.show()


class MainWindow(QMainWindow):
    """Parley's window.

    Signals:
        model_ready(str): a model finished loading (its path).
        model_failed(str): a model could not be loaded (the reason).
        conversation_shown(object): the open conversation changed (its id, or None for a new chat).
        answer_finished(int): an answer was stored (its message id).
        error_shown(str): an error message is shown to the user.
        turn_starting(int): a question is about to go to the model (the conversation's id);
            a panel holding a choice it has not stored yet (e.g. a slider still settling)
            stores it now, so this turn uses it.
    """

    model_ready = Signal(str)
    model_failed = Signal(str)
    conversation_shown = Signal(object)
    answer_finished = Signal(int)
    error_shown = Signal(str)
    turn_starting = Signal(int)

    def __init__(self, context: Any, *, load_model: bool = True):
        super().__init__()
        self.context = context
        self.setWindowTitle("Parley")
        self.setObjectName("mainWindow")
        self.resize(1100, 760)
        self.client = EngineClient(context, self)
        self.current_conversation: int | None = None
        self.dialogs: list[QWidget] = []
        #: What plugins see of the window.
        self.api = WindowApi(self)

        self._build_toolbar()
        self._build_central()
        self._build_status_bar()
        # The jobs of the window, each in its own object; they work on the widgets built above.
        self.turn_controller = TurnController(self)
        self.model_controller = ModelController(self)
        # Downloads report from their own threads; the bridge's signal brings them to this one.
        self.download_bridge = DownloadBridge(self)
        context.add_download_listener(self.download_bridge.report)
        self.plugin_ui = PluginUI(self)
        self.window_state = WindowState(self, context.paths.config_dir / "window.json")
        self.turn_controller.turn_starting.connect(self.turn_starting)
        self.turn_controller.answer_finished.connect(self.answer_finished)
        self.model_controller.model_ready.connect(self.model_ready)
        self.model_controller.model_failed.connect(self.model_failed)
        self._build_menus()
        self.apply_appearance()
        self.plugin_ui.build()
        self.current_conversation = self.window_state.restore()
        self.sidebar.refresh(select=self.current_conversation)
        if self.current_conversation is not None:
            self.show_conversation(self.current_conversation)
        self.plugin_ui.report_failures()
        for warning in context.warnings:
            self.show_error(warning)
        self.client.worker.set_warm_up(
            lambda: render_markdown("*warm-up*\n\n```python\npass\n```", self.chat_view.dark))
        QTimer.singleShot(0, self._warm_up)
        if load_model:
            self.load_model(None)

    @Slot()
    def _warm_up(self) -> None:
        """Import the Markdown and highlighting libraries off the GUI thread before the first
        answer needs them (doing it on first render froze the window for ~60 ms): on the
        engine's thread before a model load that is under way, else on a thread of its own."""
        if self.model_loading:
            return  # the load runs it first (EngineWorker.set_warm_up)
        warm_up = self.client.worker.take_warm_up()
        if warm_up is not None:
            run_task(warm_up, lambda _: None, lambda _: None)

    # -- building -------------------------------------------------------------------------
    def _build_toolbar(self) -> None:
        bar = self.addToolBar("Model")
        bar.setObjectName("modelToolbar")
        bar.setMovable(False)
        bar.addWidget(QLabel(" Model: "))
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("modelPicker")
        self.model_combo.setAccessibleName("Model")
        self.model_combo.setMinimumWidth(240)
        bar.addWidget(self.model_combo)
        self.model_info_button = QToolButton()
        # Qt's own icon: the "ⓘ" character is missing from many systems' fonts.
        self.model_info_button.setIcon(self.style().standardIcon(QStyle.SP_MessageBoxInformation))
        self.model_info_button.setObjectName("modelInfoButton")
        self.model_info_button.setAccessibleName("Model info and settings")
        self.model_info_button.setToolTip("The model's info and its own settings")
        self.model_info_button.setAutoRaise(True)
        bar.addWidget(self.model_info_button)
        self.model_progress = QProgressBar()
        self.model_progress.setObjectName("modelProgress")
        self.model_progress.setAccessibleName("Model loading")
        self.model_progress.setRange(0, 0)
        self.model_progress.setMaximumWidth(120)
        self.model_progress.setTextVisible(False)
        self.model_progress_action = bar.addWidget(self.model_progress)
        self.model_info = QLabel()
        self.model_info.setObjectName("modelInfo")
        bar.addWidget(self.model_info)
        self.toolbar = bar

    def _build_central(self) -> None:
        self.sidebar = Sidebar(self.context.store)
        self.sidebar.conversation_selected.connect(self.show_conversation)
        self.sidebar.new_requested.connect(self.new_conversation)
        self.sidebar.conversation_deleted.connect(self._on_sidebar_conversation_deleted)
        right = QWidget()
        column = QVBoxLayout(right)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        self.error_banner = ErrorBanner()
        column.addWidget(self.error_banner)
        self.chat_view = ChatView()
        self.chat_view.edit_requested.connect(self._on_chat_edit_requested)
        self.chat_view.regenerate_requested.connect(self.regenerate)
        self.chat_view.inspect_requested.connect(self.open_inspector)
        self.chat_view.branch_requested.connect(self._on_chat_branch_requested)
        column.addWidget(self.chat_view, 1)
        self.composer = Composer()
        self.composer.send_requested.connect(self.send)
        self.composer.stop_requested.connect(self.stop)
        self.composer.regenerate_requested.connect(self.regenerate)
        column.addWidget(self.composer)
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([260, 840])
        self.setCentralWidget(self.splitter)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.speed_label = QLabel()
        self.speed_label.setObjectName("speedLabel")
        self.context_label = QLabel()
        self.context_label.setObjectName("contextLabel")
        bar.addPermanentWidget(self.speed_label)
        bar.addPermanentWidget(self.context_label)

    def _build_menus(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        menu_action(self, file_menu, "&New chat", self.new_conversation, QKeySequence.New)
        menu_action(self, file_menu, "&Get models…", self.open_models_window, "Ctrl+Shift+M")
        file_menu.addSeparator()
        menu_action(self, file_menu, "&Import conversation…", self.import_conversation)
        menu_action(self, file_menu, "&Export conversation…", self.export_conversation, "Ctrl+E")
        file_menu.addSeparator()
        menu_action(self, file_menu, "&Quit", self.close, QKeySequence.Quit)
        chat_menu = menu.addMenu("&Chat")
        menu_action(self, chat_menu, "&Stop answer", self.stop)
        menu_action(self, chat_menu, "&Regenerate answer", self.regenerate, "Ctrl+R")
        menu_action(self, chat_menu, "&Find in conversations", self.sidebar.search.setFocus, QKeySequence.Find)
        menu_action(self, chat_menu, "Focus &message box", self.composer.edit.setFocus, "Ctrl+L")
        self.settings_menu = menu.addMenu("&Settings")
        menu_action(self, self.settings_menu, "&Preferences…", self.open_settings, "Ctrl+,")
        menu_action(self, self.settings_menu, "P&lugins…", self.open_plugins)
        menu_action(self, self.settings_menu, "&Add model…", self.add_model_dialog)
        menu_action(self, self.settings_menu, "&Model info and settings…", lambda: self.open_model_info(None))
        self.view_menu = menu.addMenu("&View")
        self.plugins_menu = menu.addMenu("&Plugins")
        menu_action(self, self.plugins_menu, "&Install plugin…", self.open_install_plugin)
        menu_action(self, self.plugins_menu, "&Manage plugins…", self.open_plugins)
        self.plugins_menu.addSeparator()  # the plugins' own actions follow
        help_menu = menu.addMenu("&Help")
        menu_action(self, help_menu, "&About Parley", self._about)
        # Esc stops the answer from anywhere in the window.
        QShortcut(QKeySequence(Qt.Key_Escape), self, activated=self.stop, context=Qt.WindowShortcut)

    # -- appearance and state -----------------------------------------------------------
    def apply_appearance(self) -> None:
        """Apply the theme and font size from the settings."""
        self.window_state.apply_appearance()

    def save_state(self) -> None:
        """Remember geometry, splitter sizes and the open conversation."""
        self.window_state.save()

    # -- models ---------------------------------------------------------------------------
    @property
    def model_loading(self) -> bool:
        """True while a model is being loaded."""
        return self.model_controller.model_loading

    @property
    def gpu_supported(self) -> bool | None:
        """Whether this build can offload to a GPU (None until a model has loaded)."""
        return self.model_controller.gpu_supported

    def load_model(self, name: str | None) -> None:
        """Load a model in the background (None or "": the configured one)."""
        self.model_controller.load_model(name)

    def open_models_window(self) -> None:
        """File → Get models…: search the model hub, download, and use a model."""
        from desktop_app.ui.dialogs.models_window import open_models_window

        open_models_window(self)

    def add_model_dialog(self) -> None:
        """Pick a GGUF file, check it and read its metadata in the background, then load it."""
        self.model_controller.add_model_dialog()

    def add_model(self, path: str) -> None:
        """Add ``path`` to the library (in the background) and switch to it."""
        self.model_controller.add_model(path)

    def open_model_info(self, name: str | None = None) -> None:
        """Show a model's info and its own settings (None: the loaded model); the dialog opens once
        the file's header is read (``model_controller.model_info_opened``)."""
        self.model_controller.open_model_info(name)

    # -- conversations --------------------------------------------------------------------
    def new_conversation(self) -> None:
        """Start with an empty chat (it is stored when the first message is sent)."""
        self.current_conversation = None
        self.chat_view.clear()
        self.sidebar.list.clearSelection()
        self.sidebar.list.setCurrentRow(-1)
        self.composer.cancel_editing()
        self.composer.edit.setFocus()
        self.conversation_shown.emit(None)

    @Slot(int)
    def show_conversation(self, conversation_id: int) -> None:
        """Show a stored conversation's current branch."""
        store = self.context.store
        try:
            history = store.history(conversation_id)
        except (ParleyError, StoreError) as exc:
            self.show_error(str(exc))
            return
        switched = conversation_id != self.current_conversation
        if switched:
            self.composer.cancel_editing()  # an edit belongs to the conversation it was started in
        self.current_conversation = conversation_id
        # Asked for each message when it is shown: a long conversation shows its newest first.
        def siblings(m: Any) -> list[int]:
            return [s.id for s in store.siblings(m)]

        def traces(m: Any) -> Any:
            return answer_trace(store, m.id) if m.role == "assistant" else None
        streaming = self.generating_conversation == conversation_id and history and history[-1].role == "assistant"
        if streaming:
            self.chat_view.set_messages(history[:-1], siblings, traces)
            answer = history[-1]
            answer.content = self.stream_text
            self.chat_view.begin_stream(answer)
        else:
            self.chat_view.set_messages(history, siblings, traces)
        if self.sidebar.current_id() != conversation_id:
            self.sidebar.refresh(select=conversation_id)
        self.conversation_shown.emit(conversation_id)
        if switched:
            # Saved now, not only on close, so a crash still reopens this conversation. Only on a
            # switch: redrawing the same conversation (after every answer) changes nothing to save.
            self.save_state()

    @Slot(int)
    def _on_sidebar_conversation_deleted(self, conversation_id: int) -> None:
        if conversation_id == self.current_conversation:
            self.new_conversation()

    @Slot(int)
    def _on_chat_branch_requested(self, message_id: int) -> None:
        if self.current_conversation is None or self.generating_conversation is not None:
            return
        store = self.context.store
        store.set_current_leaf(self.current_conversation, store.latest_leaf(message_id))
        self.show_conversation(self.current_conversation)

    @Slot(object)
    def _on_chat_edit_requested(self, message) -> None:
        if self.generating_conversation is None:
            self.composer.start_editing(message)

    def import_conversation(self) -> None:
        """Import a conversation exported as JSON."""
        path, _ = QFileDialog.getOpenFileName(self, "Import conversation", str(Path.home()), "JSON (*.json)")
        if not path:
            return
        try:
            conversation = self.context.store.import_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (ValueError, OSError, ParleyError, Exception) as exc:
            self.show_error(f"Could not import {Path(path).name}: {exc}")
            return
        self.sidebar.refresh(select=conversation.id)
        self.show_conversation(conversation.id)

    def export_conversation(self) -> None:
        """Export the open conversation as Markdown or JSON."""
        if self.current_conversation is None:
            return
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export conversation", str(Path.home() / "conversation.md"), "Markdown (*.md);;JSON (*.json)")
        if not path:
            return
        store = self.context.store
        if path.endswith(".json") or "JSON" in chosen:
            text = json.dumps(store.export_json(self.current_conversation), indent=2, ensure_ascii=False)
        else:
            text = store.export_markdown(self.current_conversation)
        atomic_write_text(Path(path), text)
        self.statusBar().showMessage(f"Exported to {path}", 5000)

    # -- chatting -------------------------------------------------------------------------
    @property
    def generating_conversation(self) -> int | None:
        """The conversation whose answer is being written, if any."""
        return self.turn_controller.generating_conversation

    @property
    def stream_text(self) -> str:
        """What the model has written so far in the current turn."""
        return self.turn_controller.stream_text

    @property
    def approval_dialog(self) -> QWidget | None:
        """The open "allow this tool call?" dialog, if any (Stop refuses it)."""
        return self.turn_controller.approval_dialog

    @Slot(str, object)
    def send(self, text: str, editing=None) -> None:
        """Send ``text``; when ``editing`` an earlier message, the answer starts a new branch."""
        self.turn_controller.send(text, editing)

    def regenerate(self) -> None:
        """Answer the last question of the open conversation again (a new branch)."""
        self.turn_controller.regenerate()

    def stop(self) -> None:
        """Stop the answer being written (the partial answer is kept)."""
        self.turn_controller.stop()

    # -- dialogs --------------------------------------------------------------------------
    def open_inspector(self, message_id: int) -> PromptInspector:
        """Show the exact prompt and trace of an answer."""
        store = self.context.store
        dialog = PromptInspector(store.get_trace(message_id), store.get_message(message_id).stats, self)
        self.open_dialog(dialog)
        return dialog

    def open_settings(self) -> SettingsDialog:
        """Open the settings; on OK, apply the appearance and reload the model if needed."""
        dialog = SettingsDialog(self.context.settings, gpu_supported=self.gpu_supported, parent=self)

        def accepted() -> None:
            self.apply_appearance()
            if dialog.reload_needed():
                self.load_model(None)

        dialog.accepted.connect(accepted)
        self.open_dialog(dialog)
        return dialog

    def open_plugins(self) -> PluginsDialog:
        """Open the plugins dialog."""
        dialog = PluginsDialog(self.context.plugins, self.context.settings, self)
        self.open_dialog(dialog)
        return dialog

    def open_install_plugin(self) -> QWidget:
        """Open the dialog that installs a plugin from a file, a folder or pip, after the user trusts it."""
        from desktop_app.ui.dialogs.install_plugin_dialog import InstallPluginDialog

        dialog = InstallPluginDialog(self.context.plugins, self.context.settings, self)
        self.open_dialog(dialog)
        return dialog

    def open_dialog(self, dialog: QWidget) -> None:
        """Open a dialog without blocking, kept alive until it closes."""
        # open() is window-modal but does not block: the model keeps streaming meanwhile.
        self.dialogs.append(dialog)
        dialog.finished.connect(lambda _=0: self.dialogs.remove(dialog) if dialog in self.dialogs else None)
        dialog.open()

    def _about(self) -> None:
        from desktop_app import __version__

        QMessageBox.about(self, "About Parley", f"<b>Parley {__version__}</b><br>A private chat app for local models.")

    # -- errors ---------------------------------------------------------------------------
    def show_error(self, text: str) -> None:
        """Show a readable error at the top of the chat; the app stays usable."""
        log.warning("shown to the user: %s", text)
        self.error_banner.show_message(text)
        self.error_shown.emit(text)

    # -- closing --------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        """Stop any answer (it is kept, marked incomplete), stop the worker, remember the layout."""
        self.save_state()
        self.context.remove_download_listener(self.download_bridge.report)
        if not self.client.shutdown():
            log.error("the engine thread did not stop in time")
        super().closeEvent(event)
