"""Plugins' actions: the menu they ask for, and a failing one shown as a message."""

import logging


def test_an_action_goes_to_the_menu_its_plugin_names_and_a_failing_one_shows_a_message(qtbot, make_window, paths,
                                                                                        monkeypatch, caplog):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (paths.plugins_dir / "menus.py").write_text(
        "from desktop_app.api import hookimpl\n"
        "@hookimpl\n"
        "def register_actions(register):\n"
        "    register('Menus settings…', lambda window: 1 / 0, menu='settings')\n"
        "    register('Menus elsewhere', lambda window: None, menu='nowhere')\n"
        "    register('Menus here', lambda window: None)\n")
    with caplog.at_level(logging.WARNING, logger="desktop_app.ui.plugin_ui"):
        window = make_window(wait_model=False)
    settings = [a.text() for a in window.settings_menu.actions()]
    plugins = [a.text() for a in window.plugins_menu.actions()]
    assert "Menus settings…" in settings and "Menus settings…" not in plugins
    assert settings.index("Menus settings…") > settings.index("&Preferences…")  # after the window's own
    assert "Menus elsewhere" in plugins and "Menus here" in plugins
    assert any("'nowhere'" in r.getMessage() and "Plugins menu" in r.getMessage() for r in caplog.records)
    assert window.context.plugins.records["menus"].status == "enabled"

    action = next(a for a in window.settings_menu.actions() if a.text() == "Menus settings…")
    with qtbot.waitSignal(window.error_shown) as shown:
        action.trigger()
    assert "menus" in shown.args[0] and "ZeroDivisionError" in shown.args[0]
    assert window.isVisible()
    qtbot.waitUntil(lambda: window.context.engine.loaded, timeout=60_000)
