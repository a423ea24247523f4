"""The plugins dialog: every plugin, where it came from, its state, and its own settings."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMessageBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop_app.core.settings import SettingsError
from desktop_app.ui.dialogs.settings_form import SettingsForm

__all__ = ["PluginsDialog"]


class PluginsDialog(QDialog):
    """Lists plugins; unticking one disables it (saved at once), and its settings can be edited."""

    COLUMNS = ("Enabled", "Plugin", "Version", "Source", "Status")

    def __init__(self, host, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Plugins")
        self.setObjectName("pluginsDialog")
        self.resize(760, 460)
        self.host = host
        self.settings = settings
        layout = QVBoxLayout(self)
        splitter = QSplitter(Qt.Vertical)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setAccessibleName("Plugins")
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        splitter.addWidget(self.table)
        self.details = QWidget()
        self.details_layout = QVBoxLayout(self.details)
        splitter.addWidget(self.details)
        layout.addWidget(splitter)
        if not host.records:
            layout.addWidget(QLabel("No plugins are installed. See the README to write one."))
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout.addWidget(buttons)
        self.form: SettingsForm | None = None
        self.form_plugin: str | None = None
        self._fill()
        self.table.itemChanged.connect(self._on_table_item_changed)
        self.table.currentCellChanged.connect(lambda row, *_: self._show_details(row))

    def _fill(self) -> None:
        self.table.blockSignals(True)
        self.table.setRowCount(0)
        for record in self.host.records.values():
            row = self.table.rowCount()
            self.table.insertRow(row)
            check = QTableWidgetItem()
            check.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled | Qt.ItemIsSelectable)
            check.setCheckState(Qt.Checked if record.name not in self.host.disabled else Qt.Unchecked)
            check.setData(Qt.UserRole, record.name)
            check.setData(Qt.AccessibleTextRole, f"Enable {record.name}")
            self.table.setItem(row, 0, check)
            status = record.status if not record.error else f"failed: {record.error}"
            for col, text in enumerate((record.name, record.version or "", record.source, status), start=1):
                item = QTableWidgetItem(text)
                if record.error:
                    item.setForeground(Qt.red)
                    item.setToolTip(record.error)
                self.table.setItem(row, col, item)
        self.table.blockSignals(False)

    def _on_table_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        name = item.data(Qt.UserRole)
        enabled = item.checkState() == Qt.Checked
        self.host.set_enabled(name, enabled)
        self.settings.set("plugins.disabled", sorted(self.host.disabled))
        self.settings.save()
        self._fill()
        if enabled:
            QMessageBox.information(self, "Plugins", f"{name} will be enabled the next time Parley starts.")

    def _show_details(self, row: int) -> None:
        self._save_form()
        while self.details_layout.count():
            widget = self.details_layout.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        self.form = None
        if row < 0:
            return
        name = self.table.item(row, 0).data(Qt.UserRole)
        record = self.host.records[name]
        prefix = f"plugins.{name}."
        options = [o for o in self.settings.options.values() if o.key.startswith(prefix)]
        where = f"{record.source}" + (f" — {record.location}" if record.location else "")
        self.details_layout.addWidget(QLabel(f"<b>{name}</b> {record.version or ''} <br>{where}"))
        if record.error:
            error = QLabel(f"<span style='color:#c00'>Switched off: {record.error}</span>")
            error.setWordWrap(True)
            self.details_layout.addWidget(error)
        if options:
            self.form = SettingsForm(options, {o.key: self.settings.get(o.key) for o in options})
            self.form_plugin = name
            self.details_layout.addWidget(self.form)
        else:
            self.details_layout.addWidget(QLabel("This plugin has no settings."))

    def _save_form(self) -> bool:
        if self.form is None:
            return True
        try:
            for key, value in self.form.values().items():
                self.settings.set(key, value)
        except SettingsError as exc:
            QMessageBox.warning(self, "Plugin settings", str(exc))
            return False
        self.settings.save()
        return True

    def done(self, result: int) -> None:  # noqa: D102 - Qt override
        if self._save_form():
            super().done(result)
