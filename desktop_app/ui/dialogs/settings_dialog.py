"""The settings dialog, generated from the typed settings, one tab per section."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QLabel,
    QMessageBox,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from desktop_app.core.settings import Settings, SettingsError
from desktop_app.ui.dialogs.settings_form import SettingsForm

__all__ = ["SettingsDialog"]

_SECTIONS = (("model", "Model"), ("generation", "Sampling"), ("chat", "Chat"), ("hub", "Model hub"), ("ui", "Appearance"))


class SettingsDialog(QDialog):
    """Edits the core settings. After ``accept()``, :attr:`changed` lists the keys that changed."""

    def __init__(self, settings: Settings, *, gpu_supported: bool | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setObjectName("settingsDialog")
        self.resize(640, 600)
        self.settings = settings
        self.changed: list[str] = []
        layout = QVBoxLayout(self)
        self.tabs = QTabWidget()
        self.forms: list[SettingsForm] = []
        notes = {}
        if gpu_supported is False:
            notes["model.gpu_layers"] = (
                "This build of llama.cpp has no GPU support, so this has no effect; see the README "
                "to rebuild llama-cpp-python with CUDA, Metal or Vulkan."
            )
        for section, title in _SECTIONS:
            options = [o for o in settings.options.values() if o.key.startswith(section + ".")]
            values = {o.key: settings.get(o.key) for o in options}
            form = SettingsForm(options, values, notes=notes)
            self.forms.append(form)
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.NoFrame)
            scroll.setWidget(form)
            self.tabs.addTab(scroll, title)
        layout.addWidget(self.tabs)
        note = QLabel("⟳ = applied when the model is reloaded (happens automatically on OK).")
        note.setStyleSheet("color: palette(placeholder-text);")
        layout.addWidget(note)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def accept(self) -> None:  # noqa: D102 - Qt override
        try:
            values: dict[str, Any] = {}
            for form in self.forms:
                values.update(form.values())
        except SettingsError as exc:
            QMessageBox.warning(self, "Settings", str(exc))
            return
        self.changed = [k for k, v in values.items() if v != self.settings.get(k)]
        for key in self.changed:
            self.settings.set(key, values[key])
        self.settings.save()
        super().accept()

    def reload_needed(self) -> bool:
        """Whether a changed setting only takes effect after reloading the model."""
        return any(self.settings.options[k].reload_model for k in self.changed)
