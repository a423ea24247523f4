"""The template picker, editor and prompt improver in the real window (offscreen, real model)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402


@pytest.fixture
def window(open_window):
    return open_window({"generation.temperature": 0.0, "generation.max_tokens": 48, "model.context_length": 2048})


def bar(window):
    from desktop_app_prompt_templates.ui import TemplateBar

    return window.findChild(TemplateBar)


def send(qtbot, window, text):
    qtbot.keyClicks(window.composer.edit, text)
    # Generous: a slow machine on one core takes minutes where a laptop takes seconds.
    with qtbot.waitSignal(window.answer_finished, timeout=600_000) as blocker:
        qtbot.keyClick(window.composer.edit, Qt.Key_Return)
    return window.context.store.get_message(blocker.args[0])


def test_picking_a_template_with_a_variable_applies_it_and_is_remembered(qtbot, window):
    picker = bar(window)
    picker.combo.setCurrentIndex(picker.combo.findData("Translator"))
    assert list(picker.fields) == ["language"] and picker.fields["language"].text() == "French"
    picker.fields["language"].setText("Spanish")
    picker.fields["language"].editingFinished.emit()
    answer = send(qtbot, window, "Good night")
    trace = window.context.store.get_trace(answer.id)
    assert "Translate into Spanish:\n\nGood night" in trace["prompt"]
    assert any(e["plugin"] == "prompt_templates" for e in trace["entries"])
    conversation = window.current_conversation
    assert window.context.store.get_conversation(conversation).meta["prompt_templates"] == {
        "template": "Translator", "variables": {"language": "Spanish"}}
    # A new chat starts from the picker's choice; going back shows the conversation's own.
    window.new_conversation()
    picker.combo.setCurrentIndex(picker.combo.findData(""))
    window.show_conversation(conversation)
    assert picker.combo.currentData() == "Translator" and picker.fields["language"].text() == "Spanish"


def test_json_template_from_the_picker_gives_json(qtbot, window):
    import json

    picker = bar(window)
    picker.combo.setCurrentIndex(picker.combo.findData("JSON extractor"))
    answer = send(qtbot, window, "Ana is 40 and lives in Madrid.")
    assert set(json.loads(answer.content)) == {"name", "age", "city"}


def test_self_consistency_answer_shows_votes_and_samples(qtbot, window):
    from desktop_app_prompt_templates import state

    # A copy with short samples: the built-in's five samples of up to 384 tokens are slow on one core.
    quick = state.library.duplicate("Self-consistency reasoner", "Quick reasoner")
    quick.preset["max_tokens"] = 24
    state.library.save(quick, replacing=quick.name)
    picker = bar(window)
    picker.fill()
    picker.combo.setCurrentIndex(picker.combo.findData("Quick reasoner"))
    answer = send(qtbot, window, "What is 2 + 2?")
    # How many are drawn depends on the model's answers: sampling stops once the vote is decided.
    drawn = answer.stats["samples_drawn"]
    assert 3 <= drawn <= 5 and len(answer.stats["samples"]) == drawn  # 3 agreeing of 5 decide it
    assert answer.stats["generated_tokens"] <= drawn * 24
    assert "*Self-consistency: " in answer.content  # the votes (or that there were none), under the answer
    widget = [w for w in window.chat_view.widgets if w.message.role == "assistant"][-1]
    assert widget.samples_button.text() == f"Samples ({drawn})"
    assert not widget.samples_view.isVisible()
    qtbot.waitUntil(widget.isVisible)  # a widget added to a shown layout appears on the next event loop turn
    widget.samples_button.click()
    assert widget.samples_view.isVisible() and f"Sample {drawn}" in widget.samples_view.markdown


def test_editor_creates_a_template_with_a_live_preview(qtbot, window):
    from desktop_app_prompt_templates import state

    editor = bar(window).open_editor()
    editor.new_template()
    editor.name.setText("Haiku writer")
    editor.system.setPlainText("You write haiku about {{ topic }}.")
    editor.variables.insertRow(0)
    from PySide6.QtWidgets import QTableWidgetItem

    editor.variables.setItem(0, 0, QTableWidgetItem("topic"))
    editor.variables.setItem(0, 1, QTableWidgetItem("the sea"))
    with qtbot.waitSignal(editor.preview_shown, timeout=30_000):
        editor.update_preview()
    preview = editor.preview.toPlainText()
    assert preview.startswith("<|im_start|>system\nYou write haiku about the sea.<|im_end|>")
    assert preview.rstrip().endswith("<|im_start|>assistant")
    editor.system.setPlainText("{% if %}")
    editor.update_preview()
    assert editor.preview.toPlainText().startswith("⚠") and "system" in editor.preview.toPlainText()
    editor.system.setPlainText("You write haiku about {{ topic }}.")
    editor.save()
    assert state.library.get("Haiku writer").origin == "user"
    assert (window.context.paths.data_dir / "templates" / "new-template.toml").exists()
    editor.reject()
    assert bar(window).combo.findData("Haiku writer") > 0


def test_improve_prompt_shows_a_diff_and_accepting_replaces_the_message(qtbot, window):
    from desktop_app_prompt_templates.ui import improve_prompt

    window.composer.edit.setPlainText("tell me about dogs")
    dialog = improve_prompt(window.api)
    qtbot.waitUntil(lambda: dialog.accept_button.isEnabled(), timeout=60_000)
    assert dialog.suggestion and "span" in dialog.diff.toHtml()
    dialog.accept()
    assert window.composer.edit.toPlainText() == dialog.suggestion


def test_improve_prompt_needs_a_message(qtbot, window):
    from desktop_app_prompt_templates.ui import improve_prompt

    window.composer.edit.clear()
    with qtbot.waitSignal(window.error_shown):
        assert improve_prompt(window.api) is None


def test_a_template_that_cannot_be_applied_is_shown_and_the_message_goes_out(qtbot, window):
    picker = bar(window)
    picker.combo.setCurrentIndex(picker.combo.findData("Translator"))
    picker.fields["language"].setText("")
    picker.fields["language"].editingFinished.emit()
    from desktop_app_prompt_templates import state

    # A variable without a value: the user's own template uses it without a default.
    state.library.save(state.library.get("Translator").__class__("Needs topic", user="About {{ topic }}: {{ message }}"))
    picker.fill()
    picker.combo.setCurrentIndex(picker.combo.findData("Needs topic"))
    state.choice.selection = {"template": "Needs topic", "variables": {}}
    with qtbot.waitSignal(window.error_shown, timeout=60_000) as blocker:
        send(qtbot, window, "Hello there")
    assert "topic" in blocker.args[0] and "prompt_templates" in blocker.args[0]
    history = window.context.store.history(window.current_conversation)
    assert history[-1].status == "complete"


def test_broken_template_files_are_flagged_in_the_picker(qtbot, paths):
    from desktop_app.context import build_context
    from desktop_app.ui.app import create_window

    (paths.data_dir / "templates").mkdir(parents=True, exist_ok=True)
    (paths.data_dir / "templates" / "oops.toml").write_text('name = "Oops"\nsystem = "{{ x"\n')
    context = build_context(paths)
    w = create_window(context, load_model=False)
    qtbot.addWidget(w)
    try:
        assert bar(w).problems.text() == "⚠ 1 skipped"
        assert "oops.toml" in bar(w).problems.toolTip()
    finally:
        w.close()
        context.close()


def test_saving_a_built_in_template_makes_a_copy(qtbot, window):
    from desktop_app_prompt_templates import state

    editor = bar(window).open_editor()
    editor.refresh("Translator")
    editor.system.setPlainText("You translate like a poet.")
    editor.save()
    assert state.library.get("Translator").system.startswith("You are a professional")
    copy = state.library.get("Translator copy")
    assert copy.origin == "user" and copy.system == "You translate like a poet."
    editor.reject()


def test_a_template_that_loops_for_ever_is_stopped_and_rendered_off_the_gui_thread(qtbot, window, monkeypatch):
    import threading

    from desktop_app_prompt_templates import ui

    threads = []
    render = ui._render_preview

    def recording(*args):
        threads.append(threading.current_thread())
        return render(*args)

    monkeypatch.setattr(ui, "_render_preview", recording)
    editor = bar(window).open_editor()
    editor.new_template()
    editor.system.setPlainText("{% for i in range(9999) %}{% for j in range(9999) %}x{% endfor %}{% endfor %}")
    with qtbot.waitSignal(editor.preview_shown, timeout=30_000) as shown:
        editor.update_preview()
    assert shown.args[0].startswith("⚠") and "too much work" in shown.args[0]
    assert threads and all(t is not threading.main_thread() for t in threads)
    editor.reject()
