"""A form generated from typed settings options: the right editor for each type."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QWidget,
)

from desktop_app.core.settings import Option

__all__ = ["SettingsForm"]

_LONG_TEXT = {"chat.system_prompt"}
#: Labels that the key alone would spell badly.
_LABELS = {
    "model.path": "Model file", "model.gpu_layers": "GPU layers", "model.mmap": "Memory-map the file",
    "generation.top_p": "Top-p", "generation.top_k": "Top-k", "generation.min_p": "Min-p",
    "generation.max_tokens": "Longest answer (tokens)", "plugins.disabled": "Disabled plugins",
    "chat.system_prompt": "System prompt", "ui.font_size": "Font size (pt)",
}


class SettingsForm(QWidget):
    """Editors for ``options`` filled with ``values``; :meth:`values` validates what was entered."""

    def __init__(self, options: list[Option], values: dict[str, Any], parent: QWidget | None = None,
                 notes: dict[str, str] | None = None):
        super().__init__(parent)
        self.options = options
        self.editors: dict[str, QWidget] = {}
        layout = QFormLayout(self)
        notes = notes or {}
        for option in options:
            editor = self._editor(option, values.get(option.key, option.default))
            editor.setToolTip(option.description)
            label = _LABELS.get(option.key) or option.key.rsplit(".", 1)[-1].replace("_", " ").capitalize()
            editor.setAccessibleName(label)
            editor.setAccessibleDescription(option.description)
            self.editors[option.key] = editor
            layout.addRow(label + ("  ⟳" if option.reload_model else ""), editor)
            help_text = option.description + (f" {notes[option.key]}" if option.key in notes else "")
            hint = QLabel(help_text)
            hint.setWordWrap(True)
            hint.setObjectName("settingHint")
            hint.setStyleSheet("color: palette(placeholder-text); font-size: small;")
            layout.addRow("", hint)

    def _editor(self, option: Option, value: Any) -> QWidget:
        if option.type is bool:
            box = QCheckBox()
            box.setChecked(bool(value))
            return box
        if option.choices:
            combo = QComboBox()
            combo.addItems([str(c) for c in option.choices])
            combo.setCurrentText(str(value))
            return combo
        if option.type is int:
            spin = QSpinBox()
            spin.setRange(int(option.minimum if option.minimum is not None else -1_000_000),
                          int(option.maximum if option.maximum is not None else 10_000_000))
            spin.setValue(int(value))
            return spin
        if option.type is float:
            spin = QDoubleSpinBox()
            spin.setDecimals(3)
            spin.setSingleStep(0.05)
            spin.setRange(option.minimum if option.minimum is not None else -1e6,
                          option.maximum if option.maximum is not None else 1e6)
            spin.setValue(float(value))
            return spin
        if option.key in _LONG_TEXT:
            text = QPlainTextEdit(str(value))
            text.setFixedHeight(80)
            return text
        line = QLineEdit(", ".join(value) if isinstance(value, list) else str(value))
        return line

    def values(self) -> dict[str, Any]:
        """Return the entered values, converted and checked; raises SettingsError naming the bad one."""
        out: dict[str, Any] = {}
        for option in self.options:
            editor = self.editors[option.key]
            if isinstance(editor, QCheckBox):
                raw: Any = editor.isChecked()
            elif isinstance(editor, QComboBox):
                raw = editor.currentText()
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                raw = editor.value()
            elif isinstance(editor, QPlainTextEdit):
                raw = editor.toPlainText()
            else:
                raw = editor.text()
            out[option.key] = option.coerce(raw)
        return out


