"""Menu actions, made the same way for the window's own menus and for plugins' actions."""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu

__all__ = ["menu_action"]


def menu_action(parent: QObject, menu: QMenu, text: str, slot: Callable[[], Any], shortcut=None) -> QAction:
    """Add an action called ``text`` to ``menu`` that calls ``slot()``; ``parent`` owns it."""
    action = QAction(text, parent)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    # triggered passes a "checked" flag that the slots do not take.
    action.triggered.connect(lambda checked=False: slot())
    menu.addAction(action)
    return action
