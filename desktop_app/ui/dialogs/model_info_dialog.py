"""The model's info: what the file is, how it was (or would be) loaded and why, and its own settings.

:func:`read_model_details` gathers everything from the model's header and the settings; it
reads the file, so the window runs it off the GUI thread and opens :class:`ModelInfoDialog`
with the result. The form edits the model's own settings (``ModelEntry.settings`` in
models.json): a row the user changes becomes the model's own, ↺ gives it back to the default
it inherits, and Save checks every value with the same rules as the global settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.core.memory_fit import AUTO_CONTEXT, AUTO_GPU_LAYERS
from desktop_app.core.model_settings import (LOAD_SETTINGS, MODEL_SETTINGS, model_option, stored_settings,
                                             validate_model_settings)
from desktop_app.core.settings import SettingsError
from desktop_app.ui.dialogs.settings_form import editor_for, editor_value, option_label

__all__ = ["ModelDetails", "ModelInfoDialog", "display_path", "read_model_details"]


@dataclass
class ModelDetails:
    """What the model's info shows, gathered off the GUI thread by :func:`read_model_details`."""

    entry: Any
    in_library: bool
    info: Any
    #: Each model setting's value for this model and where it comes from (ResolvedSetting).
    resolved: dict[str, Any]
    #: The same without the model's own settings: what ↺ and "Reset to defaults" give back.
    inherited: dict[str, Any]
    #: True when this entry is the loaded model.
    loaded: bool
    #: How the context and GPU layers were chosen at its load, or would be if it loaded now.
    memory: str


def read_model_details(context: Any, name_or_path: str | None = None) -> ModelDetails:
    """Everything the model info shows about a model (None: the loaded one, else the configured one).

    Reads the file's header: call it off the GUI thread. Raises ParleyError for a model that
    cannot be read.
    """
    loaded_entry = context.loaded_entry()
    if name_or_path is None and loaded_entry is not None:
        entry = loaded_entry
    else:
        entry = context.model_entry(name_or_path)
    info = context.models.info(entry.name if context.in_library(entry) else entry.path)
    loaded = loaded_entry is not None and loaded_entry.name == entry.name
    if not loaded and loaded_entry is None and context.engine.loaded and context.engine.model_path is not None:
        loaded = Path(context.engine.model_path) == Path(entry.path)  # a file outside the library
    plan = context.engine.load_plan if loaded else None
    if plan is not None:
        memory = f"Loaded with: {plan.context.explanation}\n{plan.gpu.explanation}"
    else:
        plan = context.plan_load(entry.name if context.in_library(entry) else entry.path)
        memory = f"If it loaded now: {plan.context.explanation}\n{plan.gpu.explanation}"
    return ModelDetails(entry, context.in_library(entry), info, context.resolved_settings(entry),
                        context.resolved_settings(replace(entry, settings=None)), loaded, memory)


def display_path(path: str | Path) -> str:
    """``path`` with the home folder shown as ~, as people write it."""
    text, home = str(path), os.path.expanduser("~")
    if home and home != "/" and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home):]
    return text


class _Row:
    """One setting in the form: its editor, its ↺ button, the line saying where the value comes from."""

    def __init__(self, name: str, editor: QWidget, reset: QToolButton, hint: QLabel, own: bool):
        self.name = name
        self.editor = editor
        self.reset = reset
        self.hint = hint
        self.own = own


class ModelInfoDialog(QDialog):
    """A model's info and its own settings.

    Signals:
        settings_saved(str, bool): the model's settings were written (its name; whether a
            setting that needs a reload changed).
    """

    settings_saved = Signal(str, bool)

    def __init__(self, context: Any, details: ModelDetails, parent: QWidget | None = None):
        super().__init__(parent)
        self.context = context
        self.details = details
        entry = details.entry
        self.setObjectName("modelInfoDialog")
        self.setWindowTitle(f"Model info: {entry.name}")
        self.resize(720, 600)
        layout = QVBoxLayout(self)
        title = QLabel(f"<span style='font-size: large; font-weight: bold'>{entry.name}</span>"
                       + (" (built-in)" if entry.builtin else ""))
        title.setObjectName("modelInfoTitle")
        layout.addWidget(title)
        layout.addLayout(self._facts(details))

        self.group = QGroupBox("Settings for this model")
        self.group.setObjectName("modelSettingsGroup")
        group_layout = QVBoxLayout(self.group)
        self.rows: dict[str, _Row] = {}
        grid = QGridLayout()
        grid.setColumnStretch(3, 1)
        grid.setHorizontalSpacing(8)
        for index, name in enumerate(MODEL_SETTINGS):
            self._add_row(grid, index, name)
        group_layout.addLayout(grid)
        reload_note = QLabel("⟳ = saving a change loads the model again, if it is the one loaded; the others "
                             "apply from the next answer.")
        reload_note.setWordWrap(True)
        reload_note.setStyleSheet("color: palette(placeholder-text); font-size: small;")
        group_layout.addWidget(reload_note)
        self.library_hint = QLabel(
            "This file is not in the library, so it cannot keep settings of its own: it uses the global "
            "settings. Add it with Settings → Add model… to give it its own.")
        self.library_hint.setObjectName("modelSettingsLibraryHint")
        self.library_hint.setWordWrap(True)
        group_layout.addWidget(self.library_hint)
        layout.addWidget(self.group)

        self.error_label = QLabel()
        self.error_label.setObjectName("modelSettingsError")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c62828;")
        self.error_label.hide()
        layout.addWidget(self.error_label)
        self.status_label = QLabel()
        self.status_label.setObjectName("modelSettingsStatus")
        self.status_label.setStyleSheet("color: palette(placeholder-text);")
        buttons = QHBoxLayout()
        self.reset_button = QPushButton("Reset to defaults")
        self.reset_button.setToolTip("Forget this model's own settings: it uses the defaults shown under each one.")
        self.reset_button.clicked.connect(self.reset_all)
        self.save_button = QPushButton("Save")
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(self.save)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        buttons.addWidget(self.reset_button)
        buttons.addWidget(self.status_label, 1)
        buttons.addWidget(self.save_button)
        buttons.addWidget(close)
        layout.addLayout(buttons)

        stored = details.in_library
        self.library_hint.setVisible(not stored)
        for row in self.rows.values():
            row.editor.setEnabled(stored)
            row.reset.setEnabled(stored and row.own)
        self.reset_button.setEnabled(stored)
        self.save_button.setEnabled(stored)

    # -- building -----------------------------------------------------------------------------
    def _facts(self, details: ModelDetails) -> QFormLayout:
        info, entry = details.info, details.entry
        facts = QFormLayout()
        facts.setLabelAlignment(Qt.AlignRight)

        def add(label: str, text: str, name: str) -> None:
            value = QLabel(text)
            value.setObjectName(name)
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextSelectableByMouse)
            facts.addRow(label, value)

        add("File", display_path(entry.path), "modelInfoFile")
        add("Model", f"{info.architecture} · {info.parameter_count / 1e6:,.0f}M parameters · {info.quantization} · "
                     f"{info.file_size / 1e6:,.1f} MB", "modelInfoModel")
        template = "its own chat template" if info.has_chat_template else "no chat template (ChatML is used)"
        add("Trained for", f"{info.context_length:,} tokens of context · {template}", "modelInfoTrained")
        add("Memory", details.memory, "modelInfoMemory")
        return facts

    def _add_row(self, grid: QGridLayout, index: int, name: str) -> None:
        option = model_option(self.context.settings, name)
        resolved = self.details.resolved[name]
        editor = editor_for(option, resolved.value)
        label = QLabel(option_label(option) + ("  ⟳" if name in LOAD_SETTINGS else ""))
        label.setBuddy(editor)
        editor.setObjectName(f"modelSetting_{name}")
        editor.setAccessibleName(option_label(option))
        editor.setToolTip(option.description)
        reset = QToolButton(text="↺")
        reset.setObjectName(f"modelSettingReset_{name}")
        reset.setAutoRaise(True)
        reset.setAccessibleName(f"Reset {option_label(option)}")
        hint = QLabel()
        hint.setObjectName(f"modelSettingHint_{name}")
        hint.setStyleSheet("color: palette(placeholder-text);")
        row = _Row(name, editor, reset, hint, resolved.source == "model")
        self.rows[name] = row
        if isinstance(editor, QPlainTextEdit):  # a long text: the whole width, the hint under it
            editor.setFixedHeight(72)
            grid.addWidget(label, index, 0, Qt.AlignRight | Qt.AlignTop)
            grid.addWidget(editor, index, 1, 1, 3)
            grid.addWidget(reset, index, 4, Qt.AlignTop)
            grid.addWidget(hint, index + 1, 1, 1, 3)
        else:
            editor.setFixedWidth(130)
            grid.addWidget(label, index, 0, Qt.AlignRight)
            grid.addWidget(editor, index, 1)
            grid.addWidget(reset, index, 2)
            grid.addWidget(hint, index, 3)
        self._show_source(row)
        reset.clicked.connect(lambda _=False, row=row: self.reset_row(row))
        _on_change(editor, lambda row=row: self._on_editor_changed(row))

    # -- what each row says -------------------------------------------------------------------
    def _show_source(self, row: _Row) -> None:
        inherited = self.details.inherited[row.name]
        shown = _short(model_option(self.context.settings, row.name).label(inherited.value))
        if row.own:
            where = "" if inherited.source == "default" else f", {inherited.source_text}"
            text = f"this model's own (default: {shown}{where})"
        elif row.name == "context_length" and inherited.value == AUTO_CONTEXT:
            text = "auto: the largest that fits (see Memory above)"
        elif row.name == "gpu_layers" and inherited.value == AUTO_GPU_LAYERS:
            text = "auto: as many as fit in the GPU's free memory"
        else:
            text = inherited.source_text
        row.hint.setText(text)
        row.reset.setEnabled(self.details.in_library and row.own)
        row.reset.setToolTip(f"Use the default: {shown}")

    def _on_editor_changed(self, row: _Row) -> None:
        if not row.own:
            row.own = True
            self._show_source(row)
        self.status_label.clear()

    # -- actions ------------------------------------------------------------------------------
    def reset_row(self, row: _Row) -> None:
        """Give one setting back to its default (saved with Save)."""
        _set_editor(row.editor, model_option(self.context.settings, row.name), self.details.inherited[row.name].value)
        row.own = False
        self._show_source(row)
        self.status_label.clear()

    def reset_all(self) -> None:
        """Forget all of the model's own settings and save that."""
        for row in self.rows.values():
            self.reset_row(row)
        self.save()

    def entered_settings(self) -> dict[str, Any]:
        """The model's own settings as entered (the rows the user made its own), checked;
        raises SettingsError naming the first bad one."""
        raw = {name: editor_value(row.editor) for name, row in self.rows.items() if row.own}
        return validate_model_settings(self.context.settings, raw)

    @Slot()
    def save(self) -> bool:
        """Check the entered settings and write them to the library; False (with the reason shown,
        nothing lost) when a value is not allowed."""
        try:
            own = self.entered_settings()
        except SettingsError as exc:
            self.error_label.setText(f"Not saved: {exc}.")
            self.error_label.show()
            return False
        self.error_label.hide()
        name = self.details.entry.name
        before = {k: v for k, v in self.context.model_settings(self.details.entry).items()}
        entry = self.context.models.set_settings(name, stored_settings(self.context.settings, own) or None)
        self.details.entry = entry
        for row_name, row in self.rows.items():
            row.own = row_name in own
            self._show_source(row)
        reload = any(before.get(k) != own.get(k) for k in LOAD_SETTINGS)
        if reload and self.details.loaded:
            self.status_label.setText("Saved; the model is loading again with them.")
        elif self.details.loaded:
            self.status_label.setText("Saved; the next answer uses them.")
        else:
            self.status_label.setText("Saved; used when this model is loaded.")
        self.settings_saved.emit(name, reload)
        return True


def _short(value: Any) -> str:
    """A value as a hint quotes it: texts in quotes, cut to 40 characters."""
    if not isinstance(value, str) or value in ("auto", "all"):
        return str(value)
    text = value.replace("\n", " ")
    return f"“{text[:40]}…”" if len(text) > 40 else f"“{text}”"


def _on_change(editor: QWidget, callback: Any) -> None:
    """Call ``callback()`` when the user changes ``editor``'s value."""
    if isinstance(editor, QCheckBox):
        editor.toggled.connect(lambda _=None: callback())
    elif isinstance(editor, QComboBox):
        editor.currentIndexChanged.connect(lambda _=None: callback())
    elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
        editor.valueChanged.connect(lambda _=None: callback())
    elif isinstance(editor, QPlainTextEdit):
        editor.textChanged.connect(callback)
    elif isinstance(editor, QLineEdit):
        editor.textEdited.connect(lambda _=None: callback())


def _set_editor(editor: QWidget, option: Any, value: Any) -> None:
    """Show ``value`` in ``editor`` without it counting as the user's change."""
    editor.blockSignals(True)
    try:
        if isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QComboBox):
            editor.setCurrentText(str(value))
        elif isinstance(editor, QSpinBox):
            editor.setValue(int(value))
        elif isinstance(editor, QDoubleSpinBox):
            editor.setValue(float(value))
        elif isinstance(editor, QPlainTextEdit):
            editor.setPlainText(str(value))
        elif isinstance(editor, QLineEdit):
            editor.setText(str(value))
    finally:
        editor.blockSignals(False)
