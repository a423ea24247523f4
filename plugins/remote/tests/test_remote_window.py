"""Settings → Engines… in the real window (offscreen): an engine added there is checked off the
GUI thread, its model joins the picker, and picking it answers through the server."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from remote_servers import ALIAS, ENGINE, REF  # noqa: E402

pytestmark = pytest.mark.model


@pytest.fixture
def window(open_window):
    return open_window({"generation.temperature": 0.0, "generation.max_tokens": 16, "model.context_length": 2048})


def open_dialog(window):
    from desktop_app_remote.ui import EnginesDialog

    action = next(a for a in window.settings_menu.actions() if a.text().replace("&", "") == "Engines…")
    action.trigger()
    return window.findChild(EnginesDialog, "enginesDialog")


def picker_items(window):
    combo = window.model_combo
    return {combo.itemText(i): combo.itemData(i) for i in range(combo.count())}


def test_an_engine_added_in_the_dialog_answers_from_the_picker(qtbot, window, llama_server):
    from desktop_app.core.chat import TurnFinished  # noqa: F401  (the outcome's type)

    dialog = open_dialog(window)
    assert [dialog.table.horizontalHeaderItem(c).text() for c in range(dialog.table.columnCount())][0] == "Engine"
    dialog.name.setText(ENGINE)
    dialog.url.setText(llama_server.url)
    dialog.add_button.click()  # adding and checking run in the background
    qtbot.waitUntil(lambda: "is llama-server and serves smollm2" in dialog.status.text(), timeout=60_000)
    assert not dialog.checking
    assert dialog.table.item(0, 4).text() == ALIAS and dialog.table.item(0, 5).text() == "ready"
    label = f"{ALIAS} · {ENGINE}"
    assert picker_items(window)[label] == REF
    dialog.close()

    window.model_combo.setCurrentIndex(window.model_combo.findData(REF))
    window.model_combo.activated.emit(window.model_combo.currentIndex())
    qtbot.waitUntil(lambda: not window.model_loading and str(window.context.engine.model_path) == REF, timeout=60_000)
    assert "on box (llama-server" in window.model_info.text()
    assert window.context.settings.get("model.path") == REF
    finished = []
    window.answer_finished.connect(finished.append)
    window.send("What is the capital of France?")
    qtbot.waitUntil(lambda: bool(finished), timeout=60_000)
    message = window.context.store.get_message(finished[0])
    assert message.content and message.status == "complete"


def test_a_wrong_address_shows_why_in_the_dialog(qtbot, window):
    dialog = open_dialog(window)
    dialog.name.setText("typo")
    dialog.url.setText("gpu-box:8080")
    dialog.add_button.click()
    assert "is not a server address" in dialog.status.text() and dialog.table.rowCount() == 0


def test_a_key_typed_in_the_dialog_goes_to_the_keyring_and_is_used(qtbot, window, keyed_server, file_keyring):
    dialog = open_dialog(window)
    dialog.name.setText("keyed")
    dialog.url.setText(keyed_server.url)
    dialog.key.setText("sesame-123")
    dialog.add_button.click()
    assert dialog.key.text() == ""  # not left in the form
    qtbot.waitUntil(lambda: "serves smollm2" in dialog.status.text(), timeout=60_000)
    assert file_keyring.get_password("parley-remote-engines", "keyed") == "sesame-123"
    assert dialog.table.item(0, 2).text() == "yes"


def test_a_remote_model_whose_engine_is_down_at_start_gives_way_to_the_built_in_one(qtbot, paths):
    from remote_servers import free_port

    from desktop_app.context import build_context
    from desktop_app.ui.app import create_window
    from desktop_app_remote import state

    context = build_context(paths)
    state.store.add("away", f"http://127.0.0.1:{free_port()}")
    context.settings.set("model.path", "remote:away/big-model")
    errors = []
    w = create_window(context)
    qtbot.addWidget(w)
    w.show_error = errors.append
    w.show()
    try:
        qtbot.waitUntil(lambda: context.engine.loaded and not w.model_loading, timeout=60_000)
        qtbot.waitUntil(lambda: bool(errors), timeout=10_000)
        assert "Cannot reach away" in errors[0] and "Settings → Engines" in errors[0]
        assert not context.is_backend_model(str(context.engine.model_path))  # the built-in model answers
    finally:
        w.close()
        context.close()
