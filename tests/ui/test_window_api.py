"""What plugins get of the window: their model calls join the engine's batch from their own
thread, never the GUI thread, and the WindowApi reads and writes the message box and shows messages."""

from __future__ import annotations

import threading

import pytest

from desktop_app.api import ChatMessage, GenerationOptions
from desktop_app.ui.api import WindowApi, run_task


def test_a_plugins_model_call_joins_the_engine_batch_off_the_gui_thread(qtbot, make_window, monkeypatch):
    window = make_window()
    context = window.context.plugin_context("prompt_templates")
    assert isinstance(context.window, WindowApi)
    with pytest.raises(RuntimeError, match="run_task"):
        context.complete([ChatMessage("user", "hi")])  # on the GUI thread it would freeze the window
    engine = window.context.engine
    threads = []
    real = engine.stream_chat

    def recording(*args, **kwargs):
        # The model writes several answers at once: the call joins them from its own thread,
        # with a Stop of its own, instead of waiting behind the chat on the engine worker.
        threads.append((threading.current_thread() is threading.main_thread(), "cancel" in kwargs))
        yield from real(*args, **kwargs)

    monkeypatch.setattr(engine, "stream_chat", recording)
    results = []
    run_task(lambda: context.complete([ChatMessage("user", "Say hello.")], GenerationOptions(temperature=0.0,
                                                                                             max_tokens=4)),
             results.append, results.append)
    qtbot.waitUntil(lambda: bool(results), timeout=60_000)
    assert threads == [(False, True)]
    assert results[0].finish_reason in ("stop", "length") and results[0].text


def test_the_window_api_reads_and_writes_the_message_box_and_shows_messages(qtbot, make_window):
    window = make_window(wait_model=False)
    api = window.api
    window.composer.edit.setPlainText("draft")
    assert api.composer_text() == "draft"
    api.set_composer_text("better draft")
    assert window.composer.edit.toPlainText() == "better draft"
    api.show_error("Something a person can act on.")
    assert window.error_banner.label.text() == "Something a person can act on."
    assert api.current_conversation == window.current_conversation and api.widget is window
    shown = []
    api.conversation_shown.connect(shown.append)
    window.new_conversation()
    assert shown == [None]
    qtbot.waitUntil(lambda: window.context.engine.loaded, timeout=60_000)


def test_a_panel_that_fails_to_build_switches_its_plugin_off_and_leaves_no_empty_panel(qtbot, make_window, paths,
                                                                                      monkeypatch):
    from PySide6.QtWidgets import QDockWidget

    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (paths.plugins_dir / "broken_panel.py").write_text(
        "from desktop_app.api import hookimpl\n"
        "@hookimpl\n"
        "def register_panels(register):\n"
        "    register('Broken', lambda context, parent: 1 / 0)\n")
    window = make_window(wait_model=False)
    assert "Broken" not in [d.windowTitle() for d in window.findChildren(QDockWidget)]
    record = window.context.plugins.records["broken_panel"]
    assert record.status == "failed" and "ZeroDivisionError" in record.error
    assert "broken_panel" in window.error_banner.label.text()
    qtbot.waitUntil(lambda: window.context.engine.loaded, timeout=60_000)
