"""A form generated from typed settings options: the right editor for each type.

:func:`editor_for` and :func:`editor_value` make and read one editor; the per-model settings
form uses them too, so a value is entered the same way in both places.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QValidator
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

__all__ = ["NamedSpinBox", "SettingsForm", "editor_for", "editor_value", "option_label"]

_LONG_TEXT = {"chat.system_prompt", "system_prompt"}
#: Steps of the arrows where 1 would be silly (llama.cpp pads the context to 256 tokens anyway).
_STEPS = {"model.context_length": 256, "context_length": 256}
#: Labels that the key alone would spell badly.
_LABELS = {
    "model.path": "Model file", "model.gpu_layers": "GPU layers", "model.mmap": "Memory-map the file",
    "generation.top_p": "Top-p", "generation.top_k": "Top-k", "generation.min_p": "Min-p",
    "generation.max_tokens": "Longest answer (tokens)", "plugins.disabled": "Disabled plugins",
    "chat.system_prompt": "System prompt", "ui.font_size": "Font size (pt)",
    "gpu_layers": "GPU layers", "top_p": "Top-p", "top_k": "Top-k", "min_p": "Min-p",
    "max_tokens": "Longest answer (tokens)", "system_prompt": "System prompt",
}


def option_label(option: Option) -> str:
    """The label a form shows for ``option``."""
    return _LABELS.get(option.key) or option.key.rsplit(".", 1)[-1].replace("_", " ").capitalize()


class NamedSpinBox(QSpinBox):
    """A spin box that shows an option's special values by their words ("auto", "all") and
    accepts the words typed in."""

    def __init__(self, named: tuple[tuple[str, Any], ...], parent: QWidget | None = None):
        super().__init__(parent)
        self._words = {value: word for word, value in named}
        self._values = {word: value for word, value in named}

    def textFromValue(self, value: int) -> str:  # noqa: N802 - Qt override
        return self._words.get(value, str(value))

    def valueFromText(self, text: str) -> int:  # noqa: N802 - Qt override
        word = text.strip().lower()
        if word in self._values:
            return self._values[word]
        try:
            return int(word)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:  # noqa: D102 - Qt override
        word = text.strip().lower()
        if word in self._values:
            return QValidator.State.Acceptable, text, pos
        if word and any(name.startswith(word) for name in self._values):
            return QValidator.State.Intermediate, text, pos
        return super().validate(text, pos)


def editor_for(option: Option, value: Any) -> QWidget:
    """The editor for ``option`` (a check box, a list, a spin box or a text field) showing ``value``."""
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
        spin = NamedSpinBox(option.named) if option.named else QSpinBox()
        low = int(option.minimum if option.minimum is not None else -1_000_000)
        spin.setRange(min([low, *(v for _, v in option.named)]),
                      int(option.maximum if option.maximum is not None else 10_000_000))
        spin.setSingleStep(_STEPS.get(option.key, 1))
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
    return QLineEdit(", ".join(value) if isinstance(value, list) else str(value))


def editor_value(editor: QWidget) -> Any:
    """What ``editor`` holds, not yet checked (the option's ``coerce`` does that)."""
    if isinstance(editor, QCheckBox):
        return editor.isChecked()
    if isinstance(editor, QComboBox):
        return editor.currentText()
    if isinstance(editor, (QSpinBox, QDoubleSpinBox)):
        return editor.value()
    if isinstance(editor, QPlainTextEdit):
        return editor.toPlainText()
    return editor.text()


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
            editor = editor_for(option, values.get(option.key, option.default))
            editor.setToolTip(option.description)
            label = option_label(option)
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

    def values(self) -> dict[str, Any]:
        """Return the entered values, converted and checked; raises SettingsError naming the bad one."""
        return {option.key: option.coerce(editor_value(self.editors[option.key])) for option in self.options}
