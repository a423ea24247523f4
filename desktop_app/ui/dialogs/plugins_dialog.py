"""The plugins dialog: every plugin, where it came from, its state, and its own settings."""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
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
from desktop_app.ui.dialogs.install_plugin_dialog import InstallPluginDialog
from desktop_app.ui.dialogs.settings_form import SettingsForm
from desktop_app.ui.workers import run_task

__all__ = ["PluginsDialog"]


class PluginsDialog(QDialog):
    """Lists plugins; unticking one disables it (saved at once), and its settings can be edited.

    “Install…” opens :class:`InstallPluginDialog`; “Remove” removes the selected plugin unless
    it is built in (a plugins-folder plugin is moved aside, a pip plugin uninstalled).
    """

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
        self.install_button = buttons.addButton("Install…", QDialogButtonBox.ActionRole)
        self.remove_button = buttons.addButton("Remove", QDialogButtonBox.ActionRole)
        self.remove_button.setEnabled(False)
        self.remove_button.setToolTip("Remove the selected plugin (built-in plugins can only be switched off)")
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        self.install_button.clicked.connect(self._on_install_button_clicked)
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        layout.addWidget(buttons)
        self.form: SettingsForm | None = None
        self.form_plugin: str | None = None
        self.install_dialog: InstallPluginDialog | None = None
        #: Plugins removed in this session: their code stays loaded, switched off, until the next start.
        self.removed: set[str] = set()
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
            if record.name in self.removed:
                check.setFlags(Qt.ItemIsSelectable)
            self.table.setItem(row, 0, check)
            status = record.status if not record.error else f"failed: {record.error}"
            if record.name in self.removed:
                status = "removed (gone at the next start)"
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

    @Slot()
    def _on_install_button_clicked(self) -> None:
        self.install_dialog = InstallPluginDialog(self.host, self.settings, self)
        self.install_dialog.open()

    def _selected(self) -> str | None:
        row = self.table.currentRow()
        item = self.table.item(row, 0) if row >= 0 else None
        return item.data(Qt.UserRole) if item is not None else None

    def _removable(self, name: str | None) -> bool:
        record = self.host.records.get(name) if name else None
        return (record is not None and name not in self.removed
                and (record.source == "plugins folder" or record.source.startswith("package")))

    @Slot()
    def _on_remove_button_clicked(self) -> None:
        name = self._selected()
        if not self._removable(name):
            return
        record = self.host.records[name]
        how = ("moved to the “_removed” folder inside the plugins folder" if record.source == "plugins folder"
               else f"uninstalled with pip ({record.source})")
        answer = QMessageBox.question(self, "Remove plugin", f"Remove {name}? It will be {how}.")
        if answer != QMessageBox.Yes:
            return
        from desktop_app.core.paths import AppPaths
        from desktop_app.plugin_install import PluginInstaller

        installer = PluginInstaller(self.host.plugins_dir or AppPaths.default().plugins_dir)
        self.remove_button.setEnabled(False)
        run_task(lambda: installer.remove(name), lambda message: self._on_removed(name, message),
                 lambda message: self._on_remove_failed(name, message))

    def _on_removed(self, name: str, message: str) -> None:
        self.removed.add(name)
        if self.host.records[name].status == "enabled":
            # Switched off now; not saved as disabled, so a plugin installed later under this name is on.
            self.host.set_enabled(name, False)
            self.host.disabled.discard(name)
        self._fill()
        QMessageBox.information(self, "Plugins", message)

    def _on_remove_failed(self, name: str, message: str) -> None:
        self._update_remove_button()
        QMessageBox.warning(self, "Plugins", f"{name} was not removed: {message}")

    def _update_remove_button(self) -> None:
        self.remove_button.setEnabled(self._removable(self._selected()))

    def _show_details(self, row: int) -> None:
        self._update_remove_button()
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
