"""The prompt inspector: the exact prompt an answer came from, and which plugin added what."""

from __future__ import annotations

import json

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from PySide6.QtCore import Qt

__all__ = ["PromptInspector"]


class PromptInspector(QDialog):
    """Shows a stored trace: the rendered prompt (with the chat template's markers) and its parts."""

    def __init__(self, trace: dict | None, stats: dict | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Prompt inspector")
        self.setObjectName("promptInspector")
        self.resize(820, 620)
        layout = QVBoxLayout(self)
        if trace is None:
            layout.addWidget(QLabel("No prompt was recorded for this message."))
            trace = {"prompt": "", "entries": []}
        stats = stats or {}
        if stats:
            summary = ", ".join(
                f"{k.replace('_', ' ')}: {round(v, 3) if isinstance(v, float) else v}"
                for k, v in stats.items() if k not in ("samples",)
            )
            info = QLabel(summary)
            info.setWordWrap(True)
            layout.addWidget(info)
        splitter = QSplitter(Qt.Vertical)
        self.parts = QTreeWidget()
        self.parts.setAccessibleName("What each plugin added")
        self.parts.setHeaderLabels(["Plugin", "Kind", "Content"])
        for entry in trace["entries"]:
            content = entry.get("content")
            text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
            item = QTreeWidgetItem([entry.get("plugin", "?"), entry.get("kind", "?"), text])
            item.setToolTip(2, text)
            self.parts.addTopLevelItem(item)
        self.parts.resizeColumnToContents(0)
        self.parts.resizeColumnToContents(1)
        splitter.addWidget(self.parts)
        self.prompt = QPlainTextEdit(trace["prompt"])
        self.prompt.setObjectName("promptText")
        self.prompt.setAccessibleName("Exact prompt")
        self.prompt.setReadOnly(True)
        self.prompt.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        splitter.addWidget(self.prompt)
        splitter.setSizes([180, 420])
        layout.addWidget(splitter)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
