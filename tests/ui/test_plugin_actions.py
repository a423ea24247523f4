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


def _conversation(window, question="What is 6 times 7?", answer="It is 41."):
    data = {"format": "parley-conversation/1", "title": "Sums", "messages": [
        {"id": 1, "parent_id": None, "role": "user", "content": question},
        {"id": 2, "parent_id": 1, "role": "assistant", "content": answer}]}
    conversation = window.context.plugin_context("lab").conversations.import_json(data)
    window.show_conversation(conversation.id)
    return conversation


def test_a_message_action_is_in_the_more_menu_of_the_messages_it_names(qtbot, make_window, paths, monkeypatch):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (paths.plugins_dir / "marks.py").write_text(
        "from pathlib import Path\n"
        "from desktop_app.api import hookimpl\n"
        "seen = Path(__file__).with_name('seen.txt')\n"
        "@hookimpl\n"
        "def register_message_actions(register):\n"
        "    register('Mark it', lambda window, message: seen.write_text(message.role + ': ' + message.content))\n"
        "    register('Break it', lambda window, message: 1 / 0, roles=('user', 'assistant'))\n")
    window = make_window(wait_model=False)
    _conversation(window)
    user, answer = window.chat_view.widgets
    user_entries = [a.text() for a in user.more_button.menu().actions()]
    answer_entries = [a.text() for a in answer.more_button.menu().actions()]
    assert "Break it" in user_entries and "Mark it" not in user_entries
    assert "Mark it" in answer_entries and "Add to task set…" in answer_entries
    next(a for a in answer.more_button.menu().actions() if a.text() == "Mark it").trigger()
    assert (paths.plugins_dir / "seen.txt").read_text() == "assistant: It is 41."
    with qtbot.waitSignal(window.error_shown) as shown:
        next(a for a in user.more_button.menu().actions() if a.text() == "Break it").trigger()
    assert "marks" in shown.args[0] and "ZeroDivisionError" in shown.args[0]
    qtbot.waitUntil(lambda: window.context.engine.loaded, timeout=60_000)
