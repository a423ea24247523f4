"""What the window remembers between runs (its geometry, docks, splitter and open
conversation) and the appearance it takes from the settings."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray
from PySide6.QtWidgets import QApplication

from desktop_app.core.errors import ParleyError
from desktop_app.core.paths import atomic_write_text
from desktop_app.ui.theme import apply_theme

if TYPE_CHECKING:
    from desktop_app.ui.main_window import MainWindow

__all__ = ["WindowState"]

log = logging.getLogger(__name__)


class WindowState:
    """Restores and saves the window's layout in ``state_file`` (JSON), and applies the theme."""

    def __init__(self, window: MainWindow, state_file: Path):
        self._window = window
        self._state_file = state_file

    def restore(self) -> int | None:
        """Put back the saved geometry, docks and splitter; return the conversation to reopen.

        A missing or unreadable file leaves the defaults; a saved conversation that is gone
        gives None.
        """
        window = self._window
        try:
            state = json.loads(self._state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if "geometry" in state:
            window.restoreGeometry(QByteArray(base64.b64decode(state["geometry"])))
        if "splitter" in state:
            window.splitter.setSizes([int(x) for x in state["splitter"]])
        if "window_state" in state:
            window.restoreState(QByteArray(base64.b64decode(state["window_state"])))
        last = state.get("last_conversation")
        if last is not None:
            try:
                window.context.store.get_conversation(int(last))
                return int(last)
            except (ParleyError, Exception):
                pass
        return None

    def save(self) -> None:
        """Remember geometry, splitter sizes and the open conversation."""
        window = self._window
        state = {
            "geometry": base64.b64encode(bytes(window.saveGeometry())).decode(),
            "window_state": base64.b64encode(bytes(window.saveState())).decode(),
            "splitter": window.splitter.sizes(),
            "last_conversation": window.current_conversation,
        }
        try:
            atomic_write_text(self._state_file, json.dumps(state))
        except OSError:
            log.exception("could not save the window state")

    def apply_appearance(self) -> None:
        """Apply the theme and font size from the settings."""
        window = self._window
        s = window.context.settings
        dark = apply_theme(QApplication.instance(), s.get("ui.theme"), s.get("ui.font_size"))
        if dark != window.chat_view.dark:
            window.chat_view.dark = dark
            if window.current_conversation is not None and window.generating_conversation is None:
                window.show_conversation(window.current_conversation)
