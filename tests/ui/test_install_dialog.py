"""The install dialog and the Plugins dialog's Install…/Remove buttons (offscreen, no model)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QMessageBox

from desktop_app.core.settings import Settings
from desktop_app.plugins import PluginHost
from desktop_app.ui.dialogs.install_plugin_dialog import InstallPluginDialog
from desktop_app.ui.dialogs.plugins_dialog import PluginsDialog
from tests.unit.plugin_wheels import HELLO


@pytest.fixture
def host_and_settings(paths):
    host = PluginHost(plugins_dir=paths.plugins_dir)
    return host, Settings.load(paths.settings_file)


def test_install_and_enable_waits_for_the_trust_box(qtbot, paths, tmp_path, host_and_settings):
    host, settings = host_and_settings
    settings.set("plugins.disabled", ["hello"])  # installing it again enables it
    source = tmp_path / "hello.py"
    source.write_text(HELLO)
    dialog = InstallPluginDialog(host, settings)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.install_button.isEnabled() and not dialog.trust_box.isEnabled()
    with qtbot.waitSignal(dialog.candidate_ready, timeout=60_000):
        dialog.set_target(str(source))
    summary = dialog.summary.toPlainText()
    assert "Plugin:    hello" in summary and "Panels:    Hello panel" in summary and "not a sandbox" in summary
    assert dialog.trust_box.isEnabled() and not dialog.trust_box.isChecked()
    assert not dialog.install_button.isEnabled()
    qtbot.mouseClick(dialog.trust_box, Qt.LeftButton, pos=QPoint(8, dialog.trust_box.height() // 2))
    assert dialog.install_button.isEnabled()
    dialog.trust_box.setChecked(False)
    assert not dialog.install_button.isEnabled()
    dialog.trust_box.setChecked(True)
    with qtbot.waitSignal(dialog.plugin_installed, timeout=60_000) as blocker:
        qtbot.mouseClick(dialog.install_button, Qt.LeftButton)
    assert blocker.args == [["hello"]]
    assert (paths.plugins_dir / "hello.py").read_text() == HELLO
    assert "next time Parley starts" in dialog.status_label.text()
    assert Settings.load(paths.settings_file).get("plugins.disabled") == []
    assert not dialog.install_button.isEnabled() and not dialog.trust_box.isChecked()


def test_a_bad_choice_is_explained_and_nothing_can_be_installed(qtbot, paths, tmp_path, host_and_settings):
    dialog = InstallPluginDialog(*host_and_settings)
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.work_failed, timeout=60_000) as blocker:
        dialog.set_target(str(tmp_path / "missing.py"))
    assert "does not exist" in blocker.args[0] and "does not exist" in dialog.status_label.text()
    assert not dialog.trust_box.isEnabled() and not dialog.install_button.isEnabled()
    assert list(paths.plugins_dir.iterdir()) == []


def test_remove_is_offered_for_a_folder_plugin_only(qtbot, paths, monkeypatch):
    monkeypatch.setenv("PARLEY_LOAD_PLUGINS", "hello")
    (paths.plugins_dir / "hello.py").write_text(HELLO)
    host = PluginHost(plugins_dir=paths.plugins_dir).load_all()
    dialog = PluginsDialog(host, Settings.load(paths.settings_file))
    qtbot.addWidget(dialog)
    rows = {dialog.table.item(row, 1).text(): row for row in range(dialog.table.rowCount())}
    dialog.table.setCurrentCell(rows["tools"], 1)
    assert not dialog.remove_button.isEnabled()
    dialog.table.setCurrentCell(rows["hello"], 1)
    assert dialog.remove_button.isEnabled()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    told = []
    monkeypatch.setattr(QMessageBox, "information", lambda parent, title, text: told.append(text))
    qtbot.mouseClick(dialog.remove_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: bool(told), timeout=60_000)
    assert "moved hello.py to" in told[0]
    assert not (paths.plugins_dir / "hello.py").exists() and (paths.plugins_dir / "_removed").is_dir()
    assert host.records["hello"].status == "disabled" and "hello" not in host.disabled
    assert "removed" in dialog.table.item(rows["hello"], 4).text()
    assert not dialog.remove_button.isEnabled()
