"""The LoRA panel and training dialog in the real window (offscreen, real model)."""

from __future__ import annotations

import os
import shutil
import time

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt, QTimer  # noqa: E402

from desktop_app.core.models import default_model_path  # noqa: E402
from desktop_app_lora.convert import convert_peft_adapter  # noqa: E402
from lora_test_files import make_adapter_gguf, make_peft  # noqa: E402


@pytest.fixture(scope="module")
def adapter_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    convert_peft_adapter(make_peft(root / "peft", seed=5, std=0.03), root / "style.gguf", default_model_path())
    make_adapter_gguf(root / "big-model.gguf", n_embd=2048, layers=24, rank=16)
    return root


@pytest.fixture
def window(qtbot, paths, adapter_files):
    from desktop_app.context import build_context
    from desktop_app.ui.app import create_window

    # Files dropped into the adapters folder join the library.
    (paths.data_dir / "adapters").mkdir(parents=True)
    for name in ("style.gguf", "big-model.gguf"):
        shutil.copy(adapter_files / name, paths.data_dir / "adapters" / name)
    context = build_context(paths)
    context.settings.set("generation.temperature", 0.0)
    context.settings.set("generation.max_tokens", 24)
    context.settings.set("model.context_length", 1024)
    w = create_window(context)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: context.engine.loaded and not w.model_loading, timeout=60_000)
    yield w
    panel(w).job.cancel()
    panel(w).job.wait(60)
    w.close()
    context.close()


def panel(window):
    from desktop_app_lora.ui import LoraPanel

    return window.findChild(LoraPanel)


def send(qtbot, window, text):
    qtbot.keyClicks(window.composer.edit, text)
    with qtbot.waitSignal(window.answer_finished, timeout=120_000) as blocker:
        qtbot.keyClick(window.composer.edit, Qt.Key_Return)
    return window.context.store.get_message(blocker.args[0])


def adapters_in_trace(window, message):
    trace = window.context.store.get_trace(message.id)
    return [(e["content"]["name"], e["content"]["scale"]) for e in trace["entries"] if e["kind"] == "adapter"]


def test_the_panel_lists_adapters_with_metadata_and_marks_misfits(window):
    p = panel(window)
    assert list(p.rows) == ["big-model", "style"]
    style, big = p.rows["style"], p.rows["big-model"]
    assert "llama · rank 8 · alpha 16 · attn_k, attn_output, attn_q, attn_v" in style.details.text()
    assert style.check.isEnabled() and not style.check.isChecked() and not style.slider.isEnabled()
    assert not big.check.isEnabled()
    assert "embedding size 2048, but SmolLM2-135M-Instruct.Q4_1.gguf has 576" in big.details.text()
    assert p.status_label.isHidden()
    assert "Teach it this…" in [a.text() for a in window.plugins_menu.actions()]


def test_ticking_and_scaling_reach_the_answer_and_each_conversation_keeps_its_own(qtbot, window):
    p = panel(window)
    send(qtbot, window, "Hi")  # a conversation exists now
    conversation = window.current_conversation
    row = p.rows["style"]
    row.check.setChecked(True)
    row.slider.setValue(50)
    assert row.scale_label.text() == "×0.50" and row.slider.isEnabled()
    assert p.status_label.text() == "LoRA: style ×0.5" and p.status_label.isVisible()
    qtbot.waitUntil(lambda: not p._save_timer.isActive(), timeout=30_000)  # stored once the slider settles
    answer = send(qtbot, window, "Tell me about cats.")
    assert adapters_in_trace(window, answer) == [("style", 0.5)]
    assert [(path.name, scale) for path, scale in window.context.engine.active_adapters] == [("style.gguf", 0.5)]
    # A new chat starts with the adapters for new conversations: none.
    window.new_conversation()
    assert not p.rows["style"].check.isChecked() and p.status_label.isHidden()
    answer = send(qtbot, window, "Tell me about dogs.")
    assert adapters_in_trace(window, answer) == []
    assert window.context.engine.active_adapters == []
    # Back in the first conversation: its adapter and scale.
    window.show_conversation(conversation)
    assert p.rows["style"].check.isChecked() and p.rows["style"].scale == 0.5
    assert p.status_label.text() == "LoRA: style ×0.5"


def test_a_question_sent_while_the_slider_settles_uses_the_new_scale(qtbot, window):
    p = panel(window)
    send(qtbot, window, "Hi")
    row = p.rows["style"]
    row.check.setChecked(True)
    qtbot.waitUntil(lambda: not p._save_timer.isActive(), timeout=30_000)
    p._save_timer.setInterval(60_000)  # however slowly the turn starts, the timer has not fired
    row.slider.setValue(150)
    assert p._save_timer.isActive()  # not stored yet: the user is still moving it
    answer = send(qtbot, window, "Tell me about cats.")
    assert adapters_in_trace(window, answer) == [("style", 1.5)]


def test_a_misfit_is_refused_with_its_reason_and_the_answer_goes_on(qtbot, window):
    from desktop_app_lora import state
    from desktop_app_lora.library import Choice

    p = panel(window)
    # Chosen elsewhere (e.g. `parley lora apply`) before the model changed.
    state.remember(None, [Choice("big-model", 1.0), Choice("style", 1.0)])
    p.refresh()
    assert p.rows["big-model"].check.isChecked() and p.rows["big-model"].check.isEnabled()  # so it can be unticked
    with qtbot.waitSignal(window.error_shown, timeout=120_000) as shown:
        send(qtbot, window, "Hello there")
    assert "left out" in shown.args[0] and "embedding size 2048" in shown.args[0]
    answer = window.context.store.get_message(window.context.store.history(window.current_conversation)[-1].id)
    assert answer.status == "complete" and answer.content
    assert adapters_in_trace(window, answer) == [("style", 1.0)]
    # Ticking a misfit by hand is refused with the same reason.
    p.rows["big-model"].check.setChecked(False)
    qtbot.waitUntil(lambda: not p._save_timer.isActive(), timeout=30_000)
    with qtbot.waitSignal(window.error_shown, timeout=30_000) as refused:
        p.rows["big-model"].check.setChecked(True)
    assert "embedding size 2048" in refused.args[0] and not p.rows["big-model"].check.isChecked()


def test_add_convert_and_remove_from_the_panel(qtbot, window, tmp_path, adapter_files):
    p = panel(window)
    signals = p.add(str(adapter_files / "style.gguf"), name="style copy")
    with qtbot.waitSignal(signals.finished, timeout=30_000):
        pass
    assert "style copy" in p.rows
    bad = tmp_path / "notes.gguf"
    bad.write_text("not an adapter")
    with qtbot.waitSignal(window.error_shown, timeout=30_000) as shown:
        p.add(str(bad))
    assert "notes.gguf is not a GGUF LoRA adapter" in shown.args[0]
    folder = make_peft(tmp_path / "peft", layers=2, modules=("v_proj",))
    signals = p.convert(str(folder), "converted")
    with qtbot.waitSignal(signals.finished, timeout=60_000):
        pass
    assert "converted" in p.rows and "attn_v" in p.rows["converted"].details.text()
    copy = window.context.paths.data_dir / "adapters" / "style-copy.gguf"
    assert copy.exists()
    p.remove("style copy")
    assert "style copy" not in p.rows and not copy.exists()


# A cold child process imports torch, transformers and peft and loads the model before its first
# step, twice: minutes on one slow core.
@pytest.mark.timeout(1800)
def test_training_from_the_window_shows_progress_can_be_cancelled_and_never_blocks(qtbot, window):
    send(qtbot, window, "What is the secret word?")
    p = panel(window)
    dialog = p.open_train_dialog(from_conversation=True)
    assert dialog.from_conversation.isChecked() and dialog.pairs.count() == 1
    assert dialog.pairs.item(0).checkState() == Qt.Checked
    assert dialog.name_edit.text() == "secret-word"
    dialog.answer_edit.setPlainText("The secret word is Quibbleflux.")
    assert "Quibbleflux" in dialog.pairs.item(0).text()
    assert dialog.examples()[0][-1] == {"role": "assistant", "content": "The secret word is Quibbleflux."}
    assert dialog.examples()[0][0]["role"] == "system"  # trained under the prompt it answers under

    # The window keeps answering its event loop while training runs: measure the longest gap.
    gaps, last = [], [time.monotonic()]

    def tick():
        now = time.monotonic()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer(interval=20)
    timer.timeout.connect(tick)
    timer.start()
    steps = []
    p.job.progressed.connect(lambda r: steps.append(r) if r.stage == "training" else None)
    dialog.start()
    assert not steps  # start() returned at once: the training runs elsewhere
    assert not dialog.train_button.isEnabled() and dialog.cancel_button.isVisible()
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=900_000)
    assert not p.progress.isHidden() and "loss" in p.status.text() and "loss" in dialog.progress_label.text()
    with qtbot.waitSignal(p.job.failed, timeout=300_000):  # stops before the next step
        dialog.cancel_button.click()
    timer.stop()
    assert p.job.cancelled and "cancelled" in p.status.text()
    assert p.progress.isHidden() and dialog.train_button.isEnabled()
    assert "secret-word" not in p.rows
    gaps.sort()
    print(f"\nlongest pauses of the window's event loop while training: {gaps[-1] * 1000:.0f} ms, "
          f"then {gaps[-2] * 1000:.0f} ms ({len(gaps)} ticks)")
    # The loop kept turning all along. One pause is forgiven: on a single busy core the scheduler
    # (or a swap-in) may stall any process once. Training on the window's thread is caught above
    # (start() would not return before the steps); work that blocks the window while training
    # runs elsewhere stalls it again and again, at every step and report.
    assert len(gaps) > 2 and gaps[-2] < 1.0

    # Again, to the end (one short pass): the adapter joins the library and this conversation.
    dialog.epochs.setValue(1)
    with qtbot.waitSignal(p.job.finished, timeout=900_000) as finished:
        dialog.start()
    entry, result = finished.args
    assert entry.name == "secret-word" and result.steps == 1 and result.examples == 1
    assert "secret-word" in p.rows and p.rows["secret-word"].check.isChecked()
    assert p.status_label.text() == "LoRA: secret-word ×1"
    assert "Trained “secret-word”" in dialog.progress_label.text()
    assert not list(window.context.paths.cache_dir.glob("parley-lora-*"))
