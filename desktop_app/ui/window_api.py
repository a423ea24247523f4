"""What a plugin's window code may use of the main window: :class:`WindowApi`.

Plugins get it as ``context.window`` (their panels' factories get the context), and their
actions' callbacks and composer widgets' factories get it as ``window``. It is small on
purpose: the window's own parts can change without breaking a plugin.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDialog, QWidget

__all__ = ["WindowApi"]


class WindowApi:
    """The main window, as plugins see it. Use it on the GUI thread only.

    Signals (connect to them; they fire on the GUI thread):

    - ``conversation_shown(object)``: a conversation is open (its id, or None for a new chat);
    - ``turn_starting(int)``: an answer is about to be written in that conversation;
    - ``answer_finished(int)``: an answer (its message id) is stored;
    - ``model_ready(str)``: a model (its path) is loaded.
    """

    def __init__(self, window: Any):
        self._window = window
        self.conversation_shown = window.conversation_shown
        self.turn_starting = window.turn_starting
        self.answer_finished = window.answer_finished
        self.model_ready = window.model_ready

    @property
    def widget(self) -> QWidget:
        """The parent for a plugin's dialogs and message boxes (the main window). Only its Qt
        widget side is for plugins; what else the object holds is not part of the API."""
        return self._window

    @property
    def current_conversation(self) -> int | None:
        """The open conversation's id; None for a new chat not stored yet."""
        return self._window.current_conversation

    def composer_text(self) -> str:
        """What the user has typed in the message box."""
        return self._window.composer.edit.toPlainText()

    def set_composer_text(self, text: str) -> None:
        """Replace the message box's text (the user still sends it)."""
        self._window.composer.edit.setPlainText(text)

    def show_error(self, text: str) -> None:
        """Show a message the user can act on, at the top of the chat."""
        self._window.show_error(text)

    def add_status_widget(self, widget: QWidget) -> None:
        """Put a small widget (e.g. a label) at the right of the status bar."""
        self._window.statusBar().addPermanentWidget(widget)

    def open_dialog(self, dialog: QDialog) -> QDialog:
        """Open a dialog and keep it alive until it closes. It is window-modal (the user answers it
        before typing in the window) but never blocks: answers keep streaming. For a dialog that
        stays open beside the chat, call its ``show()`` instead and keep a reference."""
        self._window.open_dialog(dialog)
        return dialog

    def open_conversation(self, conversation_id: int) -> None:
        """Show a stored conversation in the chat (and select it in the list), e.g. one a plugin
        just added with ``context.conversations.import_json``."""
        self._window.show_conversation(conversation_id)

    def refresh_models(self) -> None:
        """List the models again in the model picker (e.g. after a backend learnt of new ones)."""
        self._window.model_controller.fill_picker()

    def load_model(self, name_or_path: str) -> None:
        """Load a model in the background, as picking it in the model picker does (and remember
        it as the model to use)."""
        self._window.model_controller.choose(name_or_path)

    def find_panel(self, kind: type) -> Any:
        """The plugins' side panel of this class, or None before the window made it."""
        return next((p for p in self._window.plugin_ui.panels if isinstance(p, kind)), None)
