"""Light and dark themes on Qt's Fusion style, and the chat font size."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

__all__ = ["apply_theme", "is_dark"]

_STYLESHEET = """
QFrame#userMessage { background: %(user)s; border: 1px solid %(border)s; border-radius: 8px; }
QFrame#assistantMessage { background: %(assistant)s; border: 1px solid %(border)s; border-radius: 8px; }
QLabel#placeholder { color: %(muted)s; font-size: 14pt; }
QLabel#editBanner, QLabel#errorBanner { padding: 4px 8px; border-radius: 4px; }
QLabel#editBanner { background: %(edit)s; }
QFrame#errorBanner { background: %(error)s; border-radius: 4px; }
QLabel#modelInfo { color: %(muted)s; }
"""


def is_dark(theme: str) -> bool:
    """Whether ``theme`` ("system", "light", "dark") means dark colours right now."""
    if theme == "system":
        hints = QGuiApplication.styleHints()
        return getattr(hints, "colorScheme", lambda: Qt.ColorScheme.Light)() == Qt.ColorScheme.Dark
    return theme == "dark"


def apply_theme(app: QApplication, theme: str, font_size: int) -> bool:
    """Apply the theme and chat font size to the whole app; returns whether it is dark."""
    app.setStyle("Fusion")
    dark = is_dark(theme)
    palette = QPalette()
    if dark:
        colours = {
            QPalette.Window: "#202124", QPalette.WindowText: "#e8eaed", QPalette.Base: "#17181a",
            QPalette.AlternateBase: "#26282b", QPalette.Text: "#e8eaed", QPalette.Button: "#2d2f33",
            QPalette.ButtonText: "#e8eaed", QPalette.Highlight: "#3d6fd9", QPalette.HighlightedText: "#ffffff",
            QPalette.ToolTipBase: "#2d2f33", QPalette.ToolTipText: "#e8eaed", QPalette.Link: "#8ab4f8",
            QPalette.PlaceholderText: "#9aa0a6",
        }
        for role, colour in colours.items():
            palette.setColor(role, QColor(colour))
        palette.setColor(QPalette.Disabled, QPalette.ButtonText, QColor("#6b6e72"))
        palette.setColor(QPalette.Disabled, QPalette.Text, QColor("#6b6e72"))
        values = {"user": "#243447", "assistant": "#26282b", "border": "#3c4043", "muted": "#9aa0a6",
                  "edit": "#4a3f1c", "error": "#5c2b29"}
    else:
        palette = app.style().standardPalette()
        values = {"user": "#e8f0fe", "assistant": "#ffffff", "border": "#dadce0", "muted": "#5f6368",
                  "edit": "#fef7e0", "error": "#fce8e6"}
    app.setPalette(palette)
    app.setStyleSheet(_STYLESHEET % values)
    font = app.font()
    font.setPointSize(font_size)
    app.setFont(font)
    return dark
