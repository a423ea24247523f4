"""Settings → Server… in the real window (offscreen, real model): the toggle starts and stops the
same server ``parley serve`` runs, while the window goes on chatting.

Nothing here counts on speed or on what the model says: a chat answer is held after its first
token until the test lets it go, and start and stop each wait in their thread until the window's
own timer has fired, which it cannot do if they run on (and block) the GUI thread.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QTimer  # noqa: E402

pytestmark = pytest.mark.model

#: Timer beats the GUI thread must deliver while a start or a stop runs.
BEATS = 3


@pytest.fixture
def window(open_window):
    return open_window({"generation.temperature": 0.0, "generation.max_tokens": 24, "model.context_length": 2048})


def server_action(window):
    return next(a for a in window.settings_menu.actions() if a.text().replace("&", "") == "Server…")


def open_dialog(window):
    from desktop_app_server.ui import ServerDialog

    server_action(window).trigger()
    return window.findChild(ServerDialog, "serverDialog")


class Heartbeat:
    """Counts the GUI thread's timer beats; a call on another thread can wait for a few of them."""

    def __init__(self):
        self.beats = 0
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._beat)
        self.timer.start()

    def _beat(self):
        self.beats += 1

    def wait_for_beats(self, count=BEATS, timeout=30.0) -> bool:
        """On a worker thread: True once the GUI thread has beaten ``count`` more times."""
        target = self.beats + count
        deadline = time.monotonic() + timeout
        while self.beats < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True


def hold_until_beats(monkeypatch, controller, name, heartbeat):
    """Make ``controller.<name>`` wait for the window's timer first; returns what it saw."""
    seen = {"threads": [], "beat": []}
    original = getattr(controller, name)

    def held(*args, **kwargs):
        seen["threads"].append(threading.current_thread())
        seen["beat"].append(heartbeat.wait_for_beats())
        return original(*args, **kwargs)

    monkeypatch.setattr(controller, name, held)
    return seen


def hold_answer_after_first_token(monkeypatch, engine):
    """The next answer stops after its first token until the returned event is set."""
    from desktop_app.core.engine import TokenEvent

    release = threading.Event()
    original = engine.stream_chat
    used = []

    def held(*args, **kwargs):
        first = not used
        used.append(True)
        for event in original(*args, **kwargs):
            yield event
            if first and isinstance(event, TokenEvent) and not release.is_set():
                release.wait(120)

    monkeypatch.setattr(engine, "stream_chat", held)
    return release


def in_thread(fn):
    """Run ``fn`` on a plain thread (so the GUI thread keeps running); returns its result box."""
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    threading.Thread(target=run, daemon=True).start()
    return box


def table_rows(table):
    return [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]


def test_the_settings_menu_opens_one_dialog_that_does_not_block_the_window(qtbot, window):
    from desktop_app_server.ui import COLUMNS

    dialog = open_dialog(window)
    assert dialog is not None and dialog.isVisible() and not dialog.isModal()
    assert dialog.windowModality().name == "NonModal"
    assert open_dialog(window) is dialog  # the open one comes forward
    assert [dialog.log_table.horizontalHeaderItem(c).text() for c in range(len(COLUMNS))] == list(COLUMNS)
    assert dialog.host_edit.text() == "127.0.0.1" and dialog.port_spin.value() == 8080
    assert dialog.state_label.text() == "Stopped" and not dialog.toggle.isChecked()
    assert "Not required" in dialog.key_label.text()
    assert server_action(window) not in window.plugins_menu.actions()


def test_the_toggle_serves_while_an_answer_is_written_and_the_log_shows_the_request(qtbot, window, monkeypatch):
    import openai

    from desktop_app_server import state

    controller = state.controller
    release = hold_answer_after_first_token(monkeypatch, window.context.engine)
    finished = []
    window.answer_finished.connect(finished.append)
    tokens = []
    window.client.worker.token_received.connect(lambda _conversation, text: tokens.append(text))  # on its thread
    window.send("Describe a quiet morning in a small harbour town.")
    qtbot.waitUntil(lambda: bool(tokens), timeout=60_000)

    dialog = open_dialog(window)
    dialog.port_spin.setValue(0)  # any free port
    heartbeat = Heartbeat()
    starting = hold_until_beats(monkeypatch, controller, "start", heartbeat)
    with qtbot.waitSignal(dialog.server_started, timeout=60_000) as started:
        dialog.toggle.click()
        assert dialog.state_label.text() == "Starting…" and not dialog.toggle.isEnabled()
    url = started.args[0]
    assert starting["beat"] == [True], "the window stopped processing events while the server started"
    assert starting["threads"] and threading.main_thread() not in starting["threads"]
    assert controller.is_running and url == controller.url and url.startswith("http://127.0.0.1:")
    assert not finished, "the answer was still being written while the server started"
    assert dialog.toggle.isChecked() and dialog.toggle.text() == "Stop server"
    assert dialog.state_label.text() == "● Running" and dialog.url_label.text() == url + "/v1"
    assert not dialog.host_edit.isEnabled()  # the address applies at the next start
    assert window.context.plugin_context("server").settings.get("port") == 0  # saved
    dialog.copy_url_button.click()
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == url + "/v1"

    # Closing the dialog leaves the server running; the chat finishes.
    dialog.close()
    assert controller.is_running and not dialog._timer.isActive()
    release.set()
    qtbot.waitUntil(lambda: bool(finished), timeout=120_000)

    # A request from another program is answered and shows in the log of the dialog, reopened.
    dialog = open_dialog(window)
    model = next(m["name"] for m in window.context.plugin_context("server").library() if m["loaded"])
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=300)
    box = in_thread(lambda: client.chat.completions.create(
        model=model, max_tokens=4, messages=[{"role": "user", "content": "Say hello."}]))
    qtbot.waitUntil(lambda: bool(box), timeout=120_000)
    assert "error" not in box, box.get("error")
    reply = box["result"]
    assert reply.object == "chat.completion" and reply.usage.completion_tokens >= 1
    qtbot.waitUntil(lambda: any(r[2] == "/v1/chat/completions" and r[4] == "200" for r in table_rows(dialog.log_table)),
                    timeout=10_000)
    row = next(r for r in table_rows(dialog.log_table) if r[2] == "/v1/chat/completions")
    assert row[1] == "POST" and row[3] == model
    assert row[5] == f"{reply.usage.prompt_tokens} → {reply.usage.completion_tokens}" and row[6].endswith(" s")
    assert "requests since it started" in dialog.status_label.text()
    client.close()

    stopping = hold_until_beats(monkeypatch, controller, "stop", heartbeat)
    with qtbot.waitSignal(dialog.server_stopped, timeout=60_000):
        dialog.toggle.click()
    assert stopping["beat"] == [True], "the window stopped processing events while the server stopped"
    assert threading.main_thread() not in stopping["threads"]
    assert not controller.is_running and dialog.state_label.text() == "Stopped"
    assert not dialog.toggle.isChecked() and dialog.host_edit.isEnabled() and not dialog.copy_url_button.isEnabled()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/health", timeout=10)
    assert table_rows(dialog.log_table), "the log of the last run stays readable"
    heartbeat.timer.stop()


def test_a_taken_port_is_said_so_and_the_address_is_kept(qtbot, window):
    from desktop_app_server import state

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        dialog = open_dialog(window)
        dialog.port_spin.setValue(port)
        with qtbot.waitSignal(dialog.start_failed, timeout=60_000) as failed:
            dialog.toggle.click()
        assert f"Port {port} on 127.0.0.1 is in use" in failed.args[0]
        assert dialog.error_label.isVisible() and "pick another port" in dialog.error_label.text()
        assert dialog.state_label.text() == "Error" and not dialog.toggle.isChecked() and dialog.toggle.isEnabled()
        assert dialog.port_spin.value() == port and dialog.host_edit.text() == "127.0.0.1"
        assert not state.controller.is_running
        # Another port works, and the message goes.
        dialog.port_spin.setValue(0)
        with qtbot.waitSignal(dialog.server_started, timeout=60_000):
            dialog.toggle.click()
        assert not dialog.error_label.isVisible()
    finally:
        taken.close()
        state.controller.stop()


def test_beyond_loopback_the_key_is_required_and_a_new_key_is_shown_once(qtbot, window):
    from desktop_app_server import state

    dialog = open_dialog(window)
    dialog.host_edit.setText("0.0.0.0")
    assert "Required: listening on 0.0.0.0" in dialog.key_label.text()
    assert "No key has been made yet" in dialog.key_label.text()
    with qtbot.waitSignal(dialog.start_failed, timeout=5_000) as failed:
        dialog.toggle.click()
    assert "needs an API key" in failed.args[0] and "New key…" in failed.args[0]
    assert not state.controller.is_running and not dialog.toggle.isChecked()
    assert dialog.host_edit.text() == "0.0.0.0"  # nothing typed is lost
    assert window.context.plugin_context("server").settings.get("host") == "127.0.0.1"  # nor saved half-checked

    keys = dialog.open_new_key_dialog()
    assert "replaces" not in keys.message.text()
    keys.make_button.click()
    first = keys.key_edit.text()
    assert first.startswith("sk-parley-") and keys.key_row.isVisible() and "shown only now" in keys.message.text()
    keys.copy_button.click()
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == first
    assert first not in state.controller.keys.path.read_text()  # only its digest is stored
    assert "A key has been made" in dialog.key_label.text()
    keys.close()

    again = dialog.open_new_key_dialog()
    assert "stop working" in again.message.text() and not again.key_row.isVisible()
    again.make_button.click()
    second = again.key_edit.text()
    assert second != first and state.controller.keys.check(second) and not state.controller.keys.check(first)
    again.close()

    # On this computer with the key asked for: the server refuses a request without it.
    dialog.host_edit.setText("127.0.0.1")
    dialog.port_spin.setValue(0)
    dialog.key_required_check.setChecked(True)
    assert window.context.plugin_context("server").settings.get("api_key_required") is True
    with qtbot.waitSignal(dialog.server_started, timeout=60_000) as started:
        dialog.toggle.click()
    url = started.args[0]
    try:
        assert "The running server asks for it" in dialog.key_label.text()
        box = in_thread(lambda: urllib.request.urlopen(url + "/v1/models", timeout=30))
        qtbot.waitUntil(lambda: bool(box), timeout=30_000)
        assert isinstance(box.get("error"), urllib.error.HTTPError) and box["error"].code == 401
        request = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {second}"})
        box = in_thread(lambda: urllib.request.urlopen(request, timeout=30).status)
        qtbot.waitUntil(lambda: bool(box), timeout=30_000)
        assert box.get("result") == 200
    finally:
        state.controller.stop()


def test_the_server_stops_when_parley_closes(qtbot, window):
    import desktop_app_server
    from desktop_app_server import state

    dialog = open_dialog(window)
    dialog.port_spin.setValue(0)
    with qtbot.waitSignal(dialog.server_started, timeout=60_000):
        dialog.toggle.click()
    controller = state.controller
    dialog.close()
    assert controller.is_running
    desktop_app_server.app_closing(window.context.plugin_context("server"))
    assert not controller.is_running
