"""The main window: conversations on the left, the chat in the middle, the model on top."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QByteArray, Qt, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.core.errors import ParleyError
from desktop_app.core.models import DEFAULT_MODEL_NAME
from desktop_app.core.paths import atomic_write_text
from desktop_app.core.store import StoreError
from desktop_app.ui.chat_view import ChatView
from desktop_app.ui.composer import Composer
from desktop_app.ui.dialogs.inspector import PromptInspector
from desktop_app.ui.dialogs.plugins_dialog import PluginsDialog
from desktop_app.ui.dialogs.settings_dialog import SettingsDialog
from desktop_app.ui.markdown import render_markdown
from desktop_app.ui.sidebar import Sidebar
from desktop_app.ui.theme import apply_theme
from desktop_app.ui.window_api import WindowApi
from desktop_app.ui.workers import CURRENT_LEAF, EngineClient, run_task

__all__ = ["MainWindow"]

log = logging.getLogger(__name__)

ADD_MODEL = "Add model…"
_AREAS = {"left": Qt.LeftDockWidgetArea, "right": Qt.RightDockWidgetArea, "bottom": Qt.BottomDockWidgetArea}


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
        self.generating_conversation: int | None = None
        self.stream_text = ""
        self._incremental = False
        self.model_loading = False
        self.gpu_supported: bool | None = None
        self._reported_failures: set[str] = set()
        self._state_file = context.paths.config_dir / "window.json"
        self.dialogs: list[QWidget] = []
        #: The open "allow this tool call?" dialog, if any (Stop refuses it).
        self.approval_dialog: QWidget | None = None
        #: What plugins see of the window.
        self.api = WindowApi(self)

        self._build_toolbar()
        self._build_central()
        self._build_status_bar()
        self._build_menus()
        self._connect_worker()
        self.apply_appearance()
        self._add_plugin_ui()
        self._restore_state()
        self.sidebar.refresh(select=self.current_conversation)
        if self.current_conversation is not None:
            self.show_conversation(self.current_conversation)
        self._report_plugin_failures()
        for warning in context.warnings:
            self.show_error(warning)
        # Import the Markdown and highlighting libraries off the GUI thread before the first
        # answer needs them (doing it on first render froze the window for ~60 ms).
        run_task(lambda: render_markdown("*warm-up*\n\n```python\npass\n```", self.chat_view.dark),
                 lambda _: None, lambda _: None)
        if load_model:
            self.load_model(None)

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
        self._fill_model_combo()
        self.model_combo.activated.connect(self._on_model_combo_activated)
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
        self._action(file_menu, "&New chat", self.new_conversation, QKeySequence.New)
        self._action(file_menu, "&Import conversation…", self.import_conversation)
        self._action(file_menu, "&Export conversation…", self.export_conversation, "Ctrl+E")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.Quit)
        chat_menu = menu.addMenu("&Chat")
        self._action(chat_menu, "&Stop answer", self.stop)
        self._action(chat_menu, "&Regenerate answer", self.regenerate, "Ctrl+R")
        self._action(chat_menu, "&Find in conversations", self.sidebar.search.setFocus, QKeySequence.Find)
        self._action(chat_menu, "Focus &message box", self.composer.edit.setFocus, "Ctrl+L")
        settings_menu = menu.addMenu("&Settings")
        self._action(settings_menu, "&Preferences…", self.open_settings, "Ctrl+,")
        self._action(settings_menu, "P&lugins…", self.open_plugins)
        self._action(settings_menu, "&Add model…", self.add_model_dialog)
        self.view_menu = menu.addMenu("&View")
        self.plugins_menu = menu.addMenu("&Plugins")
        self.plugins_menu.menuAction().setVisible(False)
        help_menu = menu.addMenu("&Help")
        self._action(help_menu, "&About Parley", self._about)
        # Esc stops the answer from anywhere in the window.
        QShortcut(QKeySequence(Qt.Key_Escape), self, activated=self.stop, context=Qt.WindowShortcut)

    def _action(self, menu, text: str, slot: Callable[[], Any], shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda checked=False: slot())
        menu.addAction(action)
        return action

    def _connect_worker(self) -> None:
        w = self.client.worker
        w.model_load_started.connect(self._on_worker_model_load_started)
        w.model_loaded.connect(self._on_worker_model_loaded)
        w.model_load_failed.connect(self._on_worker_model_load_failed)
        w.turn_started.connect(self._on_worker_turn_started)
        w.token_received.connect(self._on_worker_token_received)
        w.turn_finished.connect(self._on_worker_turn_finished)
        w.turn_failed.connect(self._on_worker_turn_failed)
        w.tool_call_started.connect(self._on_worker_tool_call_started)
        w.tool_call_finished.connect(self._on_worker_tool_call_finished)
        w.tool_approval_requested.connect(self._on_worker_tool_approval_requested)

    def _add_plugin_ui(self) -> None:
        """Plugins' panels, actions and composer widgets; each plugin's context gets the window."""
        plugins = self.context.plugins
        for name, record in plugins.records.items():
            if record.status == "enabled":
                self.context.plugin_context(name).window = self.api

        def add_panel(plugin: str, title: str, factory: Callable[..., QWidget], area: str = "right") -> None:
            dock = QDockWidget(title, self)
            dock.setObjectName(f"panel-{title}")
            dock.setWidget(factory(self.context.plugin_context(plugin), dock))
            self.addDockWidget(_AREAS.get(area, Qt.RightDockWidgetArea), dock)
            # Panels open from the View menu or the toolbar (the window remembers which are open),
            # so a small screen is not crowded by panels nobody asked for.
            dock.hide()
            toggle = dock.toggleViewAction()
            self.view_menu.addAction(toggle)
            self.toolbar.addAction(toggle)

        def add_action(text: str, callback: Callable[[Any], Any], shortcut: str | None = None,
                       toolbar: bool = False) -> None:
            action = self._action(self.plugins_menu, text, lambda: callback(self.api), shortcut)
            self.plugins_menu.menuAction().setVisible(True)
            if toolbar:
                self.toolbar.addAction(action)

        for hook, add in (("register_panels", add_panel), ("register_actions", add_action),
                          ("register_composer_widgets", None)):
            for entry in plugins.collect(hook):
                try:
                    if add is None:
                        self.composer.add_extra(entry.item(self.api, self.composer))
                    elif add is add_panel:
                        add_panel(entry.plugin, *entry.args, **entry.kwargs)
                    else:
                        add(*entry.args, **entry.kwargs)
                except Exception as exc:  # one plugin's broken panel must not stop the window
                    log.exception("plugin %s: %s failed", entry.plugin, hook)
                    plugins.fail(entry.plugin, f"raised in {hook}: {type(exc).__name__}: {exc}")

    # -- appearance and state -----------------------------------------------------------
    def apply_appearance(self) -> None:
        """Apply the theme and font size from the settings."""
        s = self.context.settings
        dark = apply_theme(QApplication.instance(), s.get("ui.theme"), s.get("ui.font_size"))
        if dark != self.chat_view.dark:
            self.chat_view.dark = dark
            if self.current_conversation is not None and self.generating_conversation is None:
                self.show_conversation(self.current_conversation)

    def _restore_state(self) -> None:
        try:
            state = json.loads(self._state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if "geometry" in state:
            self.restoreGeometry(QByteArray(base64.b64decode(state["geometry"])))
        if "splitter" in state:
            self.splitter.setSizes([int(x) for x in state["splitter"]])
        if "window_state" in state:
            self.restoreState(QByteArray(base64.b64decode(state["window_state"])))
        last = state.get("last_conversation")
        if last is not None:
            try:
                self.context.store.get_conversation(int(last))
                self.current_conversation = int(last)
            except (ParleyError, Exception):
                pass

    def save_state(self) -> None:
        """Remember geometry, splitter sizes and the open conversation."""
        state = {
            "geometry": base64.b64encode(bytes(self.saveGeometry())).decode(),
            "window_state": base64.b64encode(bytes(self.saveState())).decode(),
            "splitter": self.splitter.sizes(),
            "last_conversation": self.current_conversation,
        }
        try:
            atomic_write_text(self._state_file, json.dumps(state))
        except OSError:
            log.exception("could not save the window state")

    # -- models ---------------------------------------------------------------------------
    def _fill_model_combo(self) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        configured = self.context.settings.get("model.path")
        for entry in self.context.models.entries():
            label = entry.name + (" (built-in)" if entry.builtin else "")
            self.model_combo.addItem(label, "" if entry.builtin else entry.name)
            self.model_combo.setItemData(self.model_combo.count() - 1, entry.path, Qt.ToolTipRole)
        if configured and self.model_combo.findData(configured) < 0:
            self.model_combo.addItem(Path(configured).name, configured)
        self.model_combo.insertSeparator(self.model_combo.count())
        self.model_combo.addItem(ADD_MODEL, ADD_MODEL)
        index = self.model_combo.findData(configured)
        self.model_combo.setCurrentIndex(max(index, 0))
        self.model_combo.blockSignals(False)

    @Slot(int)
    def _on_model_combo_activated(self, index: int) -> None:
        data = self.model_combo.itemData(index)
        if data == ADD_MODEL:
            self._fill_model_combo()  # put the selection back; the dialog decides
            self.add_model_dialog()
            return
        if data != self.context.settings.get("model.path") or not self.context.engine.loaded:
            self.context.settings.set("model.path", data)
            self.context.settings.save()
            self.load_model(data)

    def load_model(self, name: str | None) -> None:
        """Load a model in the background (None or "": the configured one)."""
        self.model_loading = True
        self.client.load_requested.emit(name or self.context.settings.get("model.path") or "")

    def add_model_dialog(self) -> None:
        """Pick a GGUF file, check it and read its metadata in the background, then load it."""
        path, _ = QFileDialog.getOpenFileName(self, "Add a GGUF model", str(Path.home()), "GGUF models (*.gguf);;All files (*)")
        if path:
            self.add_model(path)

    def add_model(self, path: str) -> None:
        """Add ``path`` to the library (in the background) and switch to it."""
        self.statusBar().showMessage(f"Reading {Path(path).name}…")
        self.model_progress_action.setVisible(True)

        def done(entry) -> None:
            self.model_progress_action.setVisible(self.model_loading)
            self.statusBar().showMessage(f"Added {entry.name}.", 5000)
            self.context.settings.set("model.path", entry.name)
            self.context.settings.save()
            self._fill_model_combo()
            self.load_model(entry.name)

        def failed(message: str) -> None:
            self.model_progress_action.setVisible(self.model_loading)
            self.statusBar().clearMessage()
            self.show_error(message)

        run_task(lambda: self.context.models.add(path), done, failed)

    @Slot(str)
    def _on_worker_model_load_started(self, name: str) -> None:
        self.model_loading = True
        self.model_combo.setEnabled(False)
        self.model_progress_action.setVisible(True)
        self.model_info.setText(f"Loading {Path(name).name or DEFAULT_MODEL_NAME}…")

    @Slot(str, object, list)
    def _on_worker_model_loaded(self, path: str, info: Any, warnings: list) -> None:
        self.model_loading = False
        self.model_combo.setEnabled(True)
        self.model_progress_action.setVisible(False)
        self.gpu_supported = self.client.worker.gpu_supported
        n_ctx = self.context.engine.context_length
        if info is not None:
            self.model_info.setText(
                f"  {info.architecture} · {info.parameter_count / 1e6:,.0f}M parameters · {info.quantization} · "
                f"context {n_ctx:,} of {info.context_length:,}"
                + ("" if info.has_chat_template else " · no chat template (using ChatML)")
            )
            self.model_combo.setToolTip(f"{info.name}\n{path}\n{info.file_size / 1e6:,.1f} MB")
        else:
            self.model_info.setText(f"  context {n_ctx:,}")
        self.context_label.setText(f"context 0 / {n_ctx:,}")
        # A configured model that failed may have given way to another (see EngineWorker._load).
        self._show_loaded_model_in_picker(save=False)
        for warning in warnings:
            self.show_error(warning)
        self.model_ready.emit(path)

    def _show_loaded_model_in_picker(self, *, save: bool = True) -> None:
        """Make the picker and the settings name the model that is really loaded.

        ``save`` False changes the setting for this session only: a model that failed at
        start (on a disk not mounted yet, say) is tried again at the next start.
        """
        for entry in self.context.models.entries():
            if Path(entry.path) == self.context.engine.model_path:
                wanted = "" if entry.builtin else entry.name
                if self.context.settings.get("model.path") != wanted:
                    self.context.settings.set("model.path", wanted)
                    if save:
                        self.context.settings.save()
        self._fill_model_combo()

    @Slot(str)
    def _on_worker_model_load_failed(self, message: str) -> None:
        self.model_loading = False
        self.model_combo.setEnabled(True)
        self.model_progress_action.setVisible(False)
        if self.context.engine.loaded:
            self.model_info.setText(f"  still using {self.context.engine.model_path.name}")
            self._show_loaded_model_in_picker()
        else:
            self.model_info.setText("  no model loaded")
        self.show_error(message)
        self.model_failed.emit(message)

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
        siblings = {m.id: [s.id for s in store.siblings(m)] for m in history}
        traces = {m.id: self._trace(m.id) for m in history if m.role == "assistant"}
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

    def _trace(self, message_id: int) -> list[dict[str, Any]]:
        """An answer's stored trace entries (its sources and tool calls are shown with it)."""
        trace = self.context.store.get_trace(message_id) or {}
        return list(trace.get("entries", []))

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
    @Slot(str, object)
    def send(self, text: str, editing=None) -> None:
        """Send ``text``; when ``editing`` an earlier message, the answer starts a new branch."""
        if self.generating_conversation is not None:
            return
        self.error_banner.hide()
        if self.current_conversation is None:
            model = self.context.engine.model_path.name if self.context.engine.model_path else None
            self.current_conversation = self.context.store.create_conversation(model=model).id
            self.save_state()  # a crash from now on still reopens this new conversation
        parent = editing.parent_id if editing is not None else CURRENT_LEAF
        # A plain follow-up only adds to the view; an edit changes the branch, so it is redrawn.
        self._start_turn(self.current_conversation, incremental=editing is None)
        self.client.send_requested.emit(self.current_conversation, text, parent, None)

    def regenerate(self) -> None:
        """Answer the last question of the open conversation again (a new branch)."""
        if self.generating_conversation is not None or self.current_conversation is None:
            return
        if not any(m.role == "user" for m in self.context.store.history(self.current_conversation)):
            return
        self.error_banner.hide()
        self._start_turn(self.current_conversation, incremental=False)
        self.client.regenerate_requested.emit(self.current_conversation, None)

    def _start_turn(self, conversation_id: int, *, incremental: bool) -> None:
        self.turn_starting.emit(conversation_id)
        self.context.engine.reset_cancel()  # a Stop from before this turn must not end it
        self.generating_conversation = conversation_id
        self.sidebar.busy_conversation = conversation_id
        self.stream_text = ""
        self._incremental = incremental
        self.composer.set_busy(True)

    def stop(self) -> None:
        """Stop the answer being written (the partial answer is kept)."""
        if self.generating_conversation is not None:
            self.client.cancel()
        if self.approval_dialog is not None:
            self.approval_dialog.reject()  # a pending tool call is refused

    @Slot(int, int, int)
    def _on_worker_turn_started(self, conversation_id: int, user_id: int, answer_id: int) -> None:
        self.sidebar.refresh(select=self.current_conversation)
        if conversation_id != self.current_conversation:
            return
        if not self._incremental:
            self.show_conversation(conversation_id)
            return
        # Redrawing a long conversation would freeze the window: add just the new messages.
        store = self.context.store
        view = self.chat_view
        if view.widgets and view.widgets[-1].message.role == "assistant":
            previous = view.widgets[-1]
            view.replace_message(previous, previous.message,
                                 [m.id for m in store.siblings(previous.message)], last=False)
        view.add_message(store.get_message(user_id))
        view.begin_stream(store.get_message(answer_id))

    @Slot(int, str)
    def _on_worker_token_received(self, conversation_id: int, text: str) -> None:
        self.stream_text += text
        if conversation_id == self.current_conversation:
            self.chat_view.append_text(text)

    @Slot(int, int, object)
    def _on_worker_turn_finished(self, conversation_id: int, message_id: int, result: Any) -> None:
        self._end_turn(conversation_id, message_id)
        s = result.stats
        self.speed_label.setText(
            f"{s.get('tokens_per_second', 0):.1f} tokens/s · first token {s.get('time_to_first_token', 0):.2f} s"
        )
        used = s.get("prompt_tokens", 0) + s.get("generated_tokens", 0)
        dropped = s.get("dropped_messages", 0)
        self.context_label.setText(
            f"· context {used:,} / {s.get('context_length', 0):,}"
            + (f" · {dropped} oldest messages left out" if dropped else "")
        )
        self._report_plugin_failures()
        # Plugins' notes about this turn (e.g. a template that could not be applied) are shown.
        trace = self.context.store.get_trace(message_id) or {}
        notes = [f"{e['plugin']}: {e['content']}" for e in trace.get("entries", []) if e.get("kind") == "note"]
        if notes:
            self.show_error("\n".join(notes))
        self.answer_finished.emit(message_id)

    @Slot(int, object)
    def _on_worker_tool_call_started(self, conversation_id: int, event: Any) -> None:
        if conversation_id == self.current_conversation:
            self.chat_view.show_activity(f"calling {event.call.name}…")

    @Slot(int, object)
    def _on_worker_tool_call_finished(self, conversation_id: int, outcome: Any) -> None:
        if conversation_id == self.current_conversation:
            state = "failed" if outcome.error else "done"
            self.chat_view.show_activity(f"{outcome.call.name}: {state} — writing…")

    @Slot(object)
    def _on_worker_tool_approval_requested(self, request: Any) -> None:
        from desktop_app.ui.tool_approval import ToolApprovalDialog

        if request.conversation_id == self.current_conversation:
            self.chat_view.show_activity(f"waiting for your approval of {request.call.name}…")
        dialog = ToolApprovalDialog(request, self)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        self.approval_dialog = dialog
        dialog.finished.connect(lambda _=0: setattr(self, "approval_dialog", None))
        # Not modal: the window (its Stop button, other conversations) stays usable meanwhile.
        dialog.show()

    @Slot(int, str)
    def _on_worker_turn_failed(self, conversation_id: int, error: str) -> None:
        self._end_turn(conversation_id, None)
        self.show_error(error)

    def _end_turn(self, conversation_id: int, message_id: int | None) -> None:
        self.generating_conversation = None
        self.sidebar.busy_conversation = None
        self.composer.set_busy(False)
        if conversation_id == self.current_conversation:
            streamed = self.chat_view.end_stream()
            if self._incremental and streamed is not None and message_id is not None:
                store = self.context.store
                answer = store.get_message(message_id)
                self.chat_view.replace_message(streamed, answer, [m.id for m in store.siblings(answer)], last=True,
                                               trace=self._trace(message_id))
            else:
                self.show_conversation(conversation_id)
        self.sidebar.refresh(select=self.current_conversation)

    # -- dialogs --------------------------------------------------------------------------
    def open_inspector(self, message_id: int) -> PromptInspector:
        """Show the exact prompt and trace of an answer."""
        store = self.context.store
        dialog = PromptInspector(store.get_trace(message_id), store.get_message(message_id).stats, self)
        self._open(dialog)
        return dialog

    def open_settings(self) -> SettingsDialog:
        """Open the settings; on OK, apply the appearance and reload the model if needed."""
        dialog = SettingsDialog(self.context.settings, gpu_supported=self.gpu_supported, parent=self)

        def accepted() -> None:
            self.apply_appearance()
            if dialog.reload_needed():
                self.load_model(None)

        dialog.accepted.connect(accepted)
        self._open(dialog)
        return dialog

    def open_plugins(self) -> PluginsDialog:
        """Open the plugins dialog."""
        dialog = PluginsDialog(self.context.plugins, self.context.settings, self)
        self._open(dialog)
        return dialog

    def _open(self, dialog: QWidget) -> None:
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

    def _report_plugin_failures(self) -> None:
        for record in self.context.plugins.failed():
            if record.name not in self._reported_failures:
                self._reported_failures.add(record.name)
                self.show_error(f"The plugin “{record.name}” was switched off: {record.error}. "
                                "See Settings → Plugins.")

    # -- closing --------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        """Stop any answer (it is kept, marked incomplete), stop the worker, remember the layout."""
        self.save_state()
        if not self.client.shutdown():
            log.error("the engine thread did not stop in time")
        super().closeEvent(event)
