"""File → Get models…: from the empty app to chatting with a downloaded model, in the window,
against the loopback hub mirror (the real SmolLM2 file, served with Range and its SHA-256)."""

import pytest

from tests.hub_catalogue_repos import GATED, SMOL, reset, served_catalogue
from tests.memory_keyring import memory_keyring

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def served():
    with served_catalogue() as (mirror, url):
        yield mirror, url


@pytest.fixture
def hub_url(served, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    reset(served[0])
    with memory_keyring():
        yield served[1]


def open_models(qtbot, window):
    from desktop_app.ui.dialogs.models_window import ModelsWindow

    action = next(a for m in window.menuBar().actions() if m.text() == "&File"
                  for a in m.menu().actions() if a.text() == "&Get models…")
    action.trigger()
    dialog = window.findChild(ModelsWindow, "modelsWindow")
    assert dialog is not None and dialog.isVisible()
    return dialog


def search(qtbot, dialog, query):
    dialog.query.setText(query)
    dialog.search()
    qtbot.waitUntil(lambda: dialog.search_button.isEnabled() and dialog.results.count() > 0, timeout=30_000)


def test_search_pick_download_and_chat_without_leaving_the_window(qtbot, open_window, hub_url):
    window = open_window({"hub.endpoint": hub_url})
    context = window.context
    dialog = open_models(qtbot, window)
    assert hub_url in dialog.source.text()
    search(qtbot, dialog, "SmolLM2")
    assert dialog.results.item(1).data(0x0100) == SMOL  # Qt.UserRole; the more downloaded repository is first
    dialog.results.setCurrentRow(1)
    qtbot.waitUntil(lambda: dialog.quants.rowCount() == 3, timeout=30_000)
    names = [dialog.quants.item(row, 0).text() for row in range(3)]
    assert names == ["IQ2_XXS", "Q4_1", "Q8_0"]  # smallest first; the incomplete split one is not offered
    assert "in 2 parts" in dialog.quants.item(2, 1).text()
    verdict = dialog.quants.item(1, 2)
    assert verdict.text().startswith("fits · ") and "MB of" in verdict.text()
    assert "4,096 tokens of context" in verdict.toolTip()  # the whole sentence, with the numbers
    assert "apache-2.0" in dialog.licence.text()
    assert "compact" in dialog.summary.text()

    # Nothing is in the library until the download is complete and verified.
    before = {e.name for e in context.models.entries()}
    dialog.quants.cellWidget(1, 3).click()  # Download Q4_1
    # Each slot of the report's signal is its own queued event: wait for the row and the status line.
    qtbot.waitUntil(lambda: any(r.download.state.value == "done" for r in dialog.downloads.rows.values())
                    and "in your library" in dialog.status.text(), timeout=60_000)
    row = next(iter(dialog.downloads.rows.values()))
    added = {e.name for e in context.models.entries()} - before
    assert added == {row.download.entry_name}
    assert row.use_button.isVisible() and not row.pause_button.isVisible()

    row.use_button.click()
    qtbot.waitUntil(lambda: not window.model_loading and context.engine.loaded
                    and context.settings.get("model.path") == row.download.entry_name, timeout=60_000)
    assert window.model_combo.currentData() == row.download.entry_name
    assert str(context.engine.model_path).endswith("SmolLM2-135M-Instruct-Q4_1.gguf")

    # And the chat answers with it.
    window.composer.edit.setPlainText("Say hello.")
    with qtbot.waitSignal(window.answer_finished, timeout=60_000) as blocker:
        window.composer.send_button.click()
    answer = context.store.get_message(blocker.args[0])
    assert answer.role == "assistant" and answer.content.strip()


def test_pause_resume_and_cancel_from_the_window(qtbot, open_window, hub_url, served):
    mirror = served[0]
    window = open_window({"hub.endpoint": hub_url})
    dialog = open_models(qtbot, window)
    search(qtbot, dialog, "SmolLM2-135M")
    qtbot.waitUntil(lambda: dialog.quants.rowCount() == 3, timeout=30_000)
    mirror.faults.hold_after_bytes = 5_000_000  # caught mid-file, on any machine's speed
    dialog.quants.cellWidget(1, 3).click()
    assert mirror.faults.held.wait(30)
    row = next(iter(dialog.downloads.rows.values()))
    qtbot.waitUntil(lambda: row.download.state.value == "downloading", timeout=10_000)
    assert row.pause_button.text() == "Pause" and row.cancel_button.isVisible()

    row.pause_button.click()
    qtbot.waitUntil(lambda: row.download.state.value == "paused", timeout=10_000)
    assert row.pause_button.text() == "Resume" and "Paused" in row.status.text()
    mirror.faults.release.set()
    window.context.downloads.wait(row.download_id, timeout=60)  # its thread has stopped
    # Caught again, 1 MB into the resumed reply, so the cancel comes mid-file on any machine.
    mirror.faults.held.clear()
    mirror.faults.release.clear()
    mirror.faults.hold_after_bytes = 1_000_000

    row.pause_button.click()  # resume: it continues from the bytes on disk
    assert mirror.faults.held.wait(30)
    qtbot.waitUntil(lambda: row.download.state.value == "downloading", timeout=10_000)
    assert any(h.get("range", "").startswith("bytes=") and h.get("range") != "bytes=0-"
               for method, path, h in mirror.requests if method == "GET" and path.endswith("Q4_1.gguf"))
    row.cancel_button.click()
    mirror.faults.release.set()
    qtbot.waitUntil(lambda: row.download.state.value == "cancelled", timeout=30_000)
    assert "partial file was deleted" in row.status.text()
    assert not row.pause_button.isVisible() and not row.use_button.isVisible()
    # The download's thread deletes the partial file as it stops.
    qtbot.waitUntil(lambda: not any(p.is_file() for p in window.context.downloads.folder.rglob("*")),
                    timeout=30_000)
    assert all("Q4_1" not in e.name for e in window.context.models.entries())


def test_a_paused_download_is_listed_after_a_restart(qtbot, open_window, hub_url, served, paths):
    from desktop_app.context import build_context

    mirror = served[0]
    mirror.faults.hold_after_bytes = 5_000_000
    first = build_context(paths)
    first.settings.set("hub.endpoint", hub_url)
    details = first.hub().details(SMOL)
    status = first.downloads.add(details.models[1])
    assert mirror.faults.held.wait(30)
    first.close()  # the app quits mid-file: the bytes stay, the download comes back paused
    mirror.faults.release.set()

    window = open_window({"hub.endpoint": hub_url})
    dialog = open_models(qtbot, window)
    row = dialog.downloads.rows[status.id]
    assert row.download.state.value == "paused" and row.download.interrupted
    assert "Paused when Parley closed" in row.status.text() and row.pause_button.text() == "Resume"
    row.pause_button.click()
    qtbot.waitUntil(lambda: row.download.state.value == "done", timeout=60_000)
    ranges = [h.get("range") for method, path, h in mirror.requests if path.endswith("Q4_1.gguf") and method == "GET"]
    assert any(r and r.startswith("bytes=") and r != "bytes=0-" for r in ranges)  # resumed, not restarted


def test_a_gated_repository_says_what_to_accept(qtbot, open_window, hub_url):
    window = open_window({"hub.endpoint": hub_url})
    dialog = open_models(qtbot, window)
    search(qtbot, dialog, "Llama-3.2")
    dialog.results.setCurrentRow(0)
    assert dialog.results.item(0).data(0x0100) == GATED
    qtbot.waitUntil(lambda: dialog.quants.rowCount() == 1, timeout=30_000)
    assert "llama3.2" in dialog.licence.text() and "accept" in dialog.licence.text().lower()
    assert "Only the weights are counted" in dialog.status.text()
    dialog.quants.cellWidget(0, 3).click()
    row = next(iter(dialog.downloads.rows.values()))
    qtbot.waitUntil(lambda: row.download.state.value == "failed", timeout=30_000)
    assert "token" in row.status.text() and row.pause_button.text() == "Retry"
    assert not any("Llama" in e.name for e in window.context.models.entries())


def test_the_picker_opens_get_models(qtbot, open_window, hub_url):
    from desktop_app.ui.model_controller import GET_MODELS
    from desktop_app.ui.dialogs.models_window import ModelsWindow

    window = open_window({"hub.endpoint": hub_url})
    combo = window.model_combo
    index = combo.findData(GET_MODELS)
    assert index > 0
    combo.activated.emit(index)
    assert window.findChild(ModelsWindow, "modelsWindow").isVisible()
    assert combo.currentData() != GET_MODELS  # the picker still shows the loaded model


def test_an_empty_window_lists_the_most_downloaded_models(qtbot, open_window, hub_url):
    window = open_window({"hub.endpoint": hub_url})
    dialog = open_models(qtbot, window)  # nothing typed: it lists what most people download
    qtbot.waitUntil(lambda: dialog.results.count() >= 3, timeout=30_000)
    assert "most downloaded GGUF repositories" in dialog.status.text()
    qtbot.waitUntil(lambda: "without an access token" in dialog.source.text(), timeout=10_000)


def test_a_malformed_hub_address_is_said_in_the_window(qtbot, open_window, hub_url, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "hf-mirror.com")  # not a web address
    window = open_window()
    dialog = open_models(qtbot, window)
    assert "HF_ENDPOINT must be an http:// or https:// address" in dialog.source.text()
    assert "Settings → Preferences → Model hub" in dialog.source.text()
    assert not dialog.search_button.isEnabled()
    monkeypatch.setenv("HF_ENDPOINT", hub_url)  # fixed: the window follows when opened again
    dialog.close()
    dialog = open_models(qtbot, window)
    assert hub_url in dialog.source.text()
    qtbot.waitUntil(lambda: dialog.search_button.isEnabled() and dialog.results.count() > 0, timeout=30_000)
