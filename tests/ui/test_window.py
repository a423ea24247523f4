"""The window driven through its widgets, with the real model (offscreen)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QComboBox, QDockWidget, QDoubleSpinBox, QInputDialog, QMessageBox

from desktop_app.ui.chat_view import RENDER_INTERVAL_MS
from tests.gguf_files import write_tiny_gguf
from tests.ui.conftest import send


def assistant_widgets(window):
    return [w for w in window.chat_view.widgets if w.message.role == "assistant"]


def test_a_full_conversation_streams_and_is_stored(qtbot, window):
    tokens = []
    window.client.worker.token_received.connect(lambda conv, text: tokens.append(text))
    started = time.monotonic()
    message_id = send(qtbot, window, "What is the capital of France?")
    streamed_ms = (time.monotonic() - started) * 1000
    answer = window.context.store.get_message(message_id)
    assert answer.status == "complete" and "Paris" in answer.content
    assert len(tokens) > 3 and "".join(tokens) == answer.content
    shown = assistant_widgets(window)[-1]
    assert shown.message.content == answer.content
    assert "tokens/s" in window.speed_label.text() and "context" in window.context_label.text()
    # Coalesced rendering: at most one render per interval, however fast the tokens come.
    assert window.chat_view.render_count <= streamed_ms / RENDER_INTERVAL_MS + 1
    # The conversation appears in the sidebar, titled by the question.
    assert "What is the capital of France?" in window.sidebar.list.item(0).text()
    # A follow-up goes into the same conversation.
    send(qtbot, window, "And of Spain?")
    assert len(window.context.store.history(window.current_conversation)) == 4


def test_shift_enter_adds_a_line_and_empty_messages_are_not_sent(qtbot, window):
    qtbot.keyClicks(window.composer.edit, "line one")
    qtbot.keyClick(window.composer.edit, Qt.Key_Return, Qt.ShiftModifier)
    qtbot.keyClicks(window.composer.edit, "line two")
    assert window.composer.edit.toPlainText() == "line one\nline two"
    window.composer.edit.clear()
    qtbot.keyClick(window.composer.edit, Qt.Key_Return)
    assert window.generating_conversation is None and window.current_conversation is None


def test_stop_mid_answer_keeps_the_partial_answer(qtbot, make_window):
    window = make_window(settings={"generation.max_tokens": 600})
    qtbot.keyClicks(window.composer.edit, "Write a very long essay about the history of Rome.")
    with qtbot.waitSignal(window.answer_finished, timeout=60_000) as blocker:
        qtbot.keyClick(window.composer.edit, Qt.Key_Return)
        qtbot.waitUntil(lambda: len(window.stream_text) > 40, timeout=30_000)
        assert window.composer.send_button.text() == "Stop"
        qtbot.keyClick(window.composer.edit, Qt.Key_Escape)
    answer = window.context.store.get_message(blocker.args[0])
    assert answer.status == "incomplete" and answer.stats["finish_reason"] == "cancelled"
    assert answer.content and answer.stats["generated_tokens"] < 600
    assert "stopped" in assistant_widgets(window)[-1].status.text()
    assert window.composer.send_button.text() == "Send"


def test_regenerate_and_switch_between_versions(qtbot, make_window):
    window = make_window(settings={"generation.temperature": 1.0})
    first = send(qtbot, window, "Name a colour.")
    with qtbot.waitSignal(window.answer_finished, timeout=60_000) as blocker:
        assistant_widgets(window)[-1].regenerate_button.click()
    second = blocker.args[0]
    assert second != first
    widget = assistant_widgets(window)[-1]
    assert widget.message.id == second and widget.branch_label.text() == "2/2"
    previous = [b for b in widget.findChildren(type(widget.copy_button)) if b.text() == "◀"][0]
    previous.click()
    widget = assistant_widgets(window)[-1]
    assert widget.message.id == first and widget.branch_label.text() == "1/2"


def test_edit_and_resend_starts_a_branch_and_keeps_the_old_one(qtbot, window):
    send(qtbot, window, "Name a fruit.")
    send(qtbot, window, "Name another one.")
    store = window.context.store
    old_history = [m.content for m in store.history(window.current_conversation)]
    user_widgets = [w for w in window.chat_view.widgets if w.message.role == "user"]
    user_widgets[1].edit_button.click()
    assert window.composer.edit.toPlainText() == "Name another one."
    assert window.composer.edit_banner.isVisibleTo(window)
    window.composer.edit.clear()
    send(qtbot, window, "Name a vegetable.")
    history = store.history(window.current_conversation)
    assert [m.content for m in history][:2] == old_history[:2]
    assert history[2].content == "Name a vegetable."
    user_widget = [w for w in window.chat_view.widgets if w.message.role == "user"][1]
    assert user_widget.branch_label.text() == "2/2"
    previous = [b for b in user_widget.findChildren(type(user_widget.copy_button)) if b.text() == "◀"][0]
    previous.click()
    assert [m.content for m in store.history(window.current_conversation)] == old_history


def test_switch_conversations_and_find_the_history_after_a_restart(qtbot, make_window):
    window = make_window()
    send(qtbot, window, "First conversation question")
    first = window.current_conversation
    qtbot.keyClick(window, Qt.Key_N, Qt.ControlModifier)
    assert window.current_conversation is None and window.chat_view.widgets == []
    send(qtbot, window, "Second conversation question")
    second = window.current_conversation
    assert first != second and window.sidebar.list.count() == 2
    # The newest conversation is on top; click the older one.
    item = window.sidebar.list.item(1)
    window.sidebar.list.setCurrentItem(item)
    assert window.current_conversation == first
    assert window.chat_view.widgets[0].message.content == "First conversation question"
    window.resize(700, 520)  # fits the offscreen screen (800x600), which restoreGeometry respects
    window.splitter.setSizes([300, 600])
    sizes = window.splitter.sizes()
    window.close()
    again = make_window()
    assert again.current_conversation == first
    assert again.chat_view.widgets[0].message.content == "First conversation question"
    assert again.sidebar.list.count() == 2
    assert again.size().width() == 700 and again.splitter.sizes() == sizes


def test_search_rename_and_delete_from_the_sidebar(qtbot, window, monkeypatch):
    send(qtbot, window, "Tell me about volcanoes")
    qtbot.keyClick(window, Qt.Key_N, Qt.ControlModifier)
    send(qtbot, window, "Tell me about glaciers")
    window.sidebar.search.setText("volcanoes")
    qtbot.waitUntil(lambda: window.sidebar.list.count() == 1, timeout=30_000)
    assert "volcanoes" in window.sidebar.list.item(0).text()
    window.sidebar.search.clear()
    qtbot.waitUntil(lambda: window.sidebar.list.count() == 2, timeout=30_000)
    window.sidebar.list.setCurrentRow(0)
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("Ice", True))
    window.sidebar.rename_current()
    assert window.sidebar.list.item(0).text().startswith("Ice")
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.No)
    window.sidebar.delete_current()
    assert window.sidebar.list.count() == 2
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    window.sidebar.delete_current()
    assert window.sidebar.list.count() == 1
    assert window.current_conversation is None


def test_settings_changes_are_saved_and_applied(qtbot, window):
    dialog = window.open_settings()
    forms = {dialog.tabs.tabText(i): dialog.forms[i] for i in range(dialog.tabs.count())}
    temperature = forms["Sampling"].editors["generation.temperature"]
    assert isinstance(temperature, QDoubleSpinBox)
    temperature.setValue(0.35)
    theme = forms["Appearance"].editors["ui.theme"]
    assert isinstance(theme, QComboBox)
    theme.setCurrentText("dark")
    hint_texts = [w.text() for w in forms["Model"].findChildren(type(window.model_info))]
    if window.gpu_supported is False:
        assert any("no GPU support" in t for t in hint_texts)
    dialog.accept()
    text = (window.context.paths.settings_file).read_text()
    assert "temperature = 0.35" in text and 'theme = "dark"' in text
    assert window.chat_view.dark is True
    assert QGuiApplication.palette().window().color().lightness() < 100


def test_changing_a_model_setting_reloads_the_model(qtbot, window):
    dialog = window.open_settings()
    model_form = dialog.forms[0]
    model_form.editors["model.context_length"].setValue(1024)
    with qtbot.waitSignal(window.model_ready, timeout=60_000):
        dialog.accept()
    assert window.context.engine.context_length == 1024


def test_disable_a_plugin_from_the_dialog(qtbot, make_window, paths, monkeypatch):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (paths.plugins_dir / "shout.py").write_text(
        "from desktop_app.api import hookimpl, Option\n"
        "@hookimpl\n"
        "def register_settings(register):\n"
        "    register([Option('volume', int, 5, 'How loud.')])\n"
        "@hookimpl\n"
        "def prepare_turn(turn):\n"
        "    turn.add_system('Answer loudly.')\n"
    )
    window = make_window()
    dialog = window.open_plugins()
    rows = {dialog.table.item(r, 1).text(): r for r in range(dialog.table.rowCount())}
    assert set(rows) == {"prompt_templates", "local_docs", "tools", "lora", "server", "remote", "lab", "shout"}
    row = rows["shout"]
    assert dialog.table.item(rows["prompt_templates"], 3).text() == "built-in"
    assert dialog.table.item(row, 3).text() == "plugins folder"
    dialog.table.setCurrentCell(row, 1)
    assert "plugins.shout.volume" in dialog.form.editors
    dialog.form.editors["plugins.shout.volume"].setValue(9)
    dialog.table.item(row, 0).setCheckState(Qt.Unchecked)
    dialog.reject()
    settings_text = paths.settings_file.read_text()
    assert "shout" in settings_text and "volume = 9" in settings_text
    assert window.context.plugins.records["shout"].status == "disabled"
    message_id = send(qtbot, window, "Hello")
    assert "Answer loudly." not in window.context.store.get_trace(message_id)["prompt"]


def test_a_plugin_error_is_shown_and_the_chat_goes_on(qtbot, make_window, paths, monkeypatch):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (paths.plugins_dir / "buggy.py").write_text(
        "from desktop_app.api import hookimpl\n"
        "@hookimpl\n"
        "def prepare_turn(turn):\n"
        "    raise RuntimeError('buggy plugin exploded')\n"
    )
    (paths.plugins_dir / "broken_import.py").write_text("import not_a_real_module_anywhere\n")
    window = make_window()
    assert "broken_import" in window.error_banner.label.text()
    message_id = send(qtbot, window, "Hello")
    assert window.context.store.get_message(message_id).status == "complete"
    assert window.error_banner.isVisible()
    assert "buggy plugin exploded" in window.error_banner.label.text()


def test_plugins_can_add_a_panel_and_an_action(qtbot, make_window, paths, monkeypatch):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (paths.plugins_dir / "notes.py").write_text(
        "from desktop_app.api import hookimpl\n"
        "from PySide6.QtWidgets import QLabel\n"
        "clicked = []\n"
        "@hookimpl\n"
        "def register_panels(register):\n"
        "    register('Notes', lambda context, parent: QLabel(f'my notes ({context.name})', parent), area='right')\n"
        "@hookimpl\n"
        "def register_actions(register):\n"
        "    register('Say hi', lambda window: clicked.append(window), shortcut='Ctrl+Shift+H', toolbar=True)\n"
    )
    window = make_window(wait_model=False)
    docks = {d.windowTitle(): d for d in window.findChildren(QDockWidget)}
    assert set(docks) == {"Notes", "Documents", "Tools", "LoRA"} and docks["Notes"].widget().text() == "my notes (notes)"
    assert not docks["Notes"].isVisible()
    toggle = [a for a in window.view_menu.actions() if a.text() == "Notes"][0]
    toggle.trigger()
    assert docks["Notes"].isVisible()
    actions = [a for a in window.plugins_menu.actions() if a.text() == "Say hi"]
    assert actions and window.plugins_menu.menuAction().isVisible()
    actions[0].trigger()
    assert sys.modules["parley_user_plugins.notes"].clicked == [window.api]  # the plugins' view of the window
    qtbot.waitUntil(lambda: window.context.engine.loaded, timeout=60_000)


def test_a_corrupt_model_file_is_refused_with_a_message_and_the_chat_goes_on(qtbot, window, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a model" * 100)
    with qtbot.waitSignal(window.error_shown, timeout=30_000) as blocker:
        window.add_model(str(bad))
    assert "not a GGUF model" in blocker.args[0]
    assert window.error_banner.isVisible()
    # A file with a valid header that llama.cpp still refuses: the previous model stays.
    fake = write_tiny_gguf(tmp_path / "fake.gguf")
    entry = window.context.models.add(fake)
    with qtbot.waitSignal(window.model_failed, timeout=60_000) as blocker:
        window.load_model(entry.name)
    assert "Still using" in blocker.args[0]
    assert window.context.engine.loaded
    assert window.model_combo.isEnabled()
    send(qtbot, window, "Still there?")


def test_adding_a_real_model_switches_to_it(qtbot, window):
    from desktop_app.core.models import default_model_path

    with qtbot.waitSignal(window.model_ready, timeout=60_000):
        window.add_model(str(default_model_path()))
    names = [window.model_combo.itemText(i) for i in range(window.model_combo.count())]
    assert "SmolLM2-135M-Instruct.Q4_1" in names and "Add model…" in names
    assert window.model_combo.currentText() == "SmolLM2-135M-Instruct.Q4_1"
    assert "Q4_1" in window.model_info.text()


def test_prompt_inspector_shows_the_exact_prompt_and_the_trace(qtbot, window):
    message_id = send(qtbot, window, "Hi there")
    assistant_widgets(window)[-1].inspect_button.click()
    dialog = window.dialogs[-1]
    prompt = dialog.prompt.toPlainText()
    assert prompt == window.context.store.get_trace(message_id)["prompt"]
    assert "<|im_start|>user\nHi there<|im_end|>" in prompt
    assert dialog.parts.topLevelItem(0).text(0) == "core"
    dialog.reject()


def test_copy_buttons_copy_the_message_and_code_blocks(qtbot, window):
    from desktop_app.core.store import Message
    from desktop_app.ui.chat_view import MessageWidget

    message = Message(1, 1, None, "assistant", "Here:\n\n```python\nprint('hi')\n```\n", 0.0)
    widget = MessageWidget(message, dark=False)
    qtbot.addWidget(widget)
    widget.copy_button.click()
    assert QGuiApplication.clipboard().text() == message.content
    assert widget.body.code_blocks == ["print('hi')\n"]
    widget.body.anchorClicked.emit(QUrl("copy-code:0"))
    assert QGuiApplication.clipboard().text() == "print('hi')\n"


def test_markdown_renders_tables_lists_and_escapes_html(qtbot):
    from desktop_app.ui.markdown import render_markdown

    rendered = render_markdown("# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- x\n\n<img src=/etc/passwd>")
    assert "<h1>T</h1>" in rendered.html and "<td>1</td>" in rendered.html and "<li>x</li>" in rendered.html
    assert "<img" not in rendered.html and "&lt;img" in rendered.html


def test_closing_during_generation_stops_cleanly_and_keeps_the_partial_answer(qtbot, make_window):
    window = make_window(settings={"generation.max_tokens": 2000})
    store = window.context.store
    qtbot.keyClicks(window.composer.edit, "Write a very long essay about the history of Rome.")
    qtbot.keyClick(window.composer.edit, Qt.Key_Return)
    qtbot.waitUntil(lambda: len(window.stream_text) > 40, timeout=30_000)
    conversation = window.generating_conversation
    window.close()
    # Closed without waiting for the rest of the answer: the thread is gone, the answer unfinished.
    assert not window.client.thread.isRunning()
    answer = store.history(conversation)[-1]
    assert answer.role == "assistant" and answer.status == "incomplete" and answer.content


def test_the_window_appears_before_any_heavy_library_is_imported(paths):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PARLEY_LAUNCHED_AT=str(time.time()),
               PARLEY_EXIT_AFTER_SHOW="1")
    out = subprocess.run([sys.executable, "-m", "desktop_app.cli"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "window shown after" in out.stdout
    assert "heavy modules loaded: []" in out.stdout


def test_keyboard_and_accessible_names(qtbot, window):
    for widget in (window.composer.edit, window.composer.send_button, window.sidebar.search,
                   window.sidebar.list, window.model_combo, window.chat_view):
        assert widget.accessibleName()
        assert widget.focusPolicy() != Qt.NoFocus
    window.composer.edit.setFocus()
    qtbot.keyClick(window, Qt.Key_F, Qt.ControlModifier)
    assert window.sidebar.search.hasFocus() or QGuiApplication.focusObject() is window.sidebar.search


def test_a_generation_error_is_shown_and_the_window_stays_usable(qtbot, window):
    window.context.engine.unload()  # as if the model vanished: the turn cannot run
    with qtbot.waitSignal(window.error_shown, timeout=30_000) as blocker:
        window.send("Are you there?")
    assert "No model is loaded" in blocker.args[0]
    qtbot.waitUntil(lambda: window.generating_conversation is None, timeout=10_000)
    assert window.composer.send_button.text() == "Send"
    answer = window.context.store.history(window.current_conversation)[-1]
    assert answer.status == "error"
    assert "failed" in assistant_widgets(window)[-1].status.text()
    with qtbot.waitSignal(window.model_ready, timeout=60_000):
        window.load_model(None)
    send(qtbot, window, "Now?")


def test_markdown_images_never_load_files(qtbot):
    from desktop_app.ui.chat_view import MarkdownView
    from desktop_app.ui.markdown import render_markdown

    rendered = render_markdown("Look: ![secret](/etc/passwd) and ![zero](/dev/zero)")
    assert "<img" not in rendered.html and 'href="/etc/passwd"' in rendered.html
    view = MarkdownView()
    qtbot.addWidget(view)
    view.set_markdown("![zero](/dev/zero)", False)  # would read forever if loaded
    assert "[image: zero]" in view.toPlainText()


def test_an_edit_is_dropped_when_switching_conversations(qtbot, window):
    send(qtbot, window, "First chat")
    first = window.current_conversation
    user = [w for w in window.chat_view.widgets if w.message.role == "user"][0]
    qtbot.keyClick(window, Qt.Key_N, Qt.ControlModifier)
    send(qtbot, window, "Second chat")
    window.show_conversation(first)
    user = [w for w in window.chat_view.widgets if w.message.role == "user"][0]
    user.edit_button.click()
    assert window.composer.editing is not None
    window.sidebar.list.setCurrentRow(0)  # the second chat
    assert window.current_conversation != first and window.composer.editing is None


def test_a_configured_model_that_fails_at_start_gives_way_to_the_built_in_one(qtbot, make_window, paths, tmp_path):
    import shutil

    from desktop_app.core.models import ModelLibrary, default_model_path

    moved = tmp_path / "My model.gguf"
    shutil.copy(default_model_path(), moved)
    entry = ModelLibrary(paths).add(moved)
    moved.unlink()  # the file was moved or deleted since the last session
    errors = []
    window = make_window(settings={"model.path": entry.name}, wait_model=False)
    window.error_shown.connect(errors.append)
    qtbot.waitUntil(lambda: window.context.engine.loaded and not window.model_loading, timeout=120_000)
    assert window.context.engine.model_path == default_model_path()
    qtbot.waitUntil(lambda: bool(errors), timeout=10_000)
    assert f"The model “{entry.name}” could not be loaded" in errors[0]
    assert "using its built-in model" in errors[0] and "Add model…" in errors[0]
    assert window.model_combo.currentData() == ""  # the picker shows the built-in model
    send(qtbot, window, "Are you there?")
    # For this session only: the next start tries the configured model again.
    from desktop_app.core.settings import Settings

    assert Settings.load(paths.settings_file).get("model.path") == entry.name


def test_a_long_conversation_opens_at_its_newest_message_and_builds_older_ones_on_scrolling(qtbot, window):
    from desktop_app.ui.chat_view import FILL_DELAY_MS, FIRST_SHOWN

    store = window.context.store
    conversation = store.create_conversation("Long")
    for i in range(60):
        store.add_message(conversation.id, "user", f"Question {i}")
        store.add_message(conversation.id, "assistant", f"Answer {i}:\n\n```python\nprint({i})\n```\n")
    window.show_conversation(conversation.id)
    view = window.chat_view
    # Only the newest messages are built at first, and the view is at the bottom, once laid out.
    assert len(view.widgets) == FIRST_SHOWN and view.loading
    assert view.widgets[-1].message.content.startswith("Answer 59")
    bar = view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() == bar.maximum(), timeout=5_000)
    # ...and stays there while the layout settles and more messages are built above.
    qtbot.wait(FILL_DELAY_MS * 4)
    assert bar.value() == bar.maximum() and view.widgets[-1].message.content.startswith("Answer 59")
    # Scrolling up builds older ones above.
    shown = len(view.widgets)
    bar.setValue(0)
    qtbot.waitUntil(lambda: len(view.widgets) > shown, timeout=5_000)
    assert view.widgets[0].message.content.startswith("Question")
    view.finish_loading()
    assert not view.loading and len(view.widgets) == 120
    assert [w.message.content for w in view.widgets][:2] == ["Question 0", "Answer 0:\n\n```python\nprint(0)\n```\n"]


def test_the_markdown_warm_up_runs_once_before_the_first_load(qtbot, window):
    # The window's own warm-up ran when its first load began.
    assert window.client.worker.take_warm_up() is None
    ran = []
    window.client.worker.set_warm_up(lambda: ran.append(window.model_loading))
    with qtbot.waitSignal(window.model_ready, timeout=120_000):
        window.load_model(None)
    # It ran on the engine's thread, as the load began (not beside it on a thread of its own)...
    assert ran == [True] and window.client.worker.take_warm_up() is None
    # ...and once.
    with qtbot.waitSignal(window.model_ready, timeout=120_000):
        window.load_model(None)
    assert ran == [True]
