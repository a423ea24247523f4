"""“Find adapters on the hub…” in the real window (offscreen, real model), against the hub mirror."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from desktop_app_lora.hub_adapters import COMPATIBLE, INCOMPATIBLE, PROBABLY  # noqa: E402
from lora_hub_repos import BIG, FRENCH, PIRATE, reset, served_adapters  # noqa: E402
from tests.memory_keyring import memory_keyring  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with served_adapters(tmp_path_factory.mktemp("hub-adapters")) as (mirror, url):
        yield mirror, url


@pytest.fixture
def mirror(served, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return reset(served[0])


@pytest.fixture(autouse=True)
def ring():
    with memory_keyring() as ring:
        yield ring


@pytest.fixture
def window(open_window, served, mirror):
    w = open_window({"hub.endpoint": served[1], "model.context_length": 512})
    yield w
    dialog = panel(w).hub_dialog
    if dialog is not None:
        dialog.job.cancel()
        dialog.job.wait(30)


def panel(window):
    from desktop_app_lora.ui import LoraPanel

    return window.findChild(LoraPanel)


def rows(dialog):
    return [dialog.results.itemWidget(dialog.results.item(i)) for i in range(dialog.results.count())]


def searched(qtbot, dialog, query=""):
    dialog.query.setText(query)
    with qtbot.waitSignal(dialog.job.searched, timeout=60_000):
        dialog.search_button.click()
    return rows(dialog)


def test_find_check_and_download_an_adapter_from_the_window(qtbot, window, served, tmp_path):
    p = panel(window)
    assert p.hub_button.text() == "Find adapters on the hub…"
    assert "Find LoRA adapters on the hub…" in [a.text() for a in window.plugins_menu.actions()]
    p.hub_button.click()
    dialog = p.hub_dialog
    assert dialog.isVisible() and served[1] in dialog.intro.text() and "smollm2 135M" in dialog.intro.text()
    assert "empty: smollm2" in dialog.query.placeholderText()

    found = searched(qtbot, dialog)
    assert [(r.candidate.repo_id, r.candidate.compatibility.verdict) for r in found] == [
        (FRENCH, COMPATIBLE), (PIRATE, PROBABLY), (BIG, INCOMPATIBLE)]
    assert "Compatible" in found[0].verdict.text() and "Made for HuggingFaceTB/SmolLM2-135M-Instruct" in found[0].reason.text()
    assert "32 layers" in found[2].reason.text()
    assert "3 adapters found, 2 of them fit" in dialog.status.text()
    assert dialog.results.currentRow() == 0 and dialog.download_button.isEnabled()
    dialog.grab().save(str(tmp_path / "hub-dialog.png"))

    dialog.results.setCurrentRow(2)  # the one that does not fit cannot be downloaded
    assert not dialog.download_button.isEnabled() and "cannot be used with the loaded model" in dialog.status.text()

    dialog.results.setCurrentRow(0)
    with qtbot.waitSignal(dialog.adapter_added, timeout=60_000) as added:
        dialog.download_button.click()
        assert dialog.cancel_button.isVisible() and not dialog.search_button.isEnabled()
    entry = added.args[0]
    assert entry.name == "smollm2-135m-french-lora" and "Added smollm2-135m-french-lora" in dialog.status.text()
    assert entry.name in p.rows and p.rows[entry.name].check.isEnabled()  # listed, and it fits
    assert dialog.download_button.isEnabled() and dialog.progress.isHidden()

    # It went through the app's one download manager, listed with the models' downloads, not as a model.
    from desktop_app.ui.dialogs.download_list import DownloadList

    done = [d for d in window.context.downloads.downloads() if d.model.kind == "adapter"]
    assert [(d.state.value, d.entry_name) for d in done] == [("done", entry.name)]
    listed = DownloadList(window.context.downloads, window.download_bridge, lambda _download: None)
    qtbot.addWidget(listed)
    row = listed.rows[done[0].id]
    assert not row.use_button.isVisibleTo(listed) and f"added as {entry.name}" in row.status.text()


def test_a_failed_search_says_why_and_the_dialog_stays_usable(qtbot, window, mirror):
    mirror.faults.fail_status, mirror.faults.failures_left = 503, 0
    dialog = panel(window).open_hub_dialog()
    assert searched(qtbot, dialog, "no-such-adapter") == []
    assert "No LoRA adapters found" in dialog.status.text()
    assert dialog.search_button.isEnabled() and not dialog.download_button.isEnabled()


def test_without_a_model_the_dialog_is_not_opened(qtbot, window):
    window.context.engine.unload()
    errors = []
    window.show_error = errors.append
    assert panel(window).open_hub_dialog() is None
    assert errors and "Load a model first" in errors[0]
