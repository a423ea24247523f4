"""Each model's own settings in the window: switching in the picker applies them, the model info edits them."""

from __future__ import annotations

import json

from desktop_app.core.models import DEFAULT_MODEL_NAME, default_model_path
from tests.gguf_files import write_tiny_gguf
from tests.ui.conftest import send

PRECISE = {"context_length": 1024, "temperature": 0.0, "top_k": 7, "max_tokens": 6,
           "system_prompt": "Answer in one word."}


def add_precise(window, settings=PRECISE):
    """A second library entry for the same SmolLM2 file, with settings of its own."""
    context = window.context
    context.models.add(default_model_path(), name="Precise")
    context.models.set_settings("Precise", dict(settings))
    window.model_controller.fill_picker()


def pick(qtbot, window, data):
    """Choose a model in the toolbar's picker, as a click does, and wait for it to load."""
    combo = window.model_combo
    index = combo.findData(data)
    assert index >= 0, data
    with qtbot.waitSignal(window.model_ready, timeout=60_000):
        combo.setCurrentIndex(index)
        combo.activated.emit(index)


def stored_settings(paths, name="Precise"):
    return next(m for m in json.loads(paths.models_file.read_text())["models"] if m["name"] == name)["settings"]


def open_info(qtbot, window, name=None):
    with qtbot.waitSignal(window.model_controller.model_info_opened, timeout=30_000) as blocker:
        window.open_model_info(name)
    return blocker.args[0]


def test_switching_in_the_picker_loads_and_answers_with_the_models_own_settings(qtbot, open_window):
    window = open_window({"generation.max_tokens": 16})
    context = window.context
    auto_context = context.engine.context_length
    assert auto_context == context.engine.load_plan.context_length  # the built-in model: auto
    assert window.model_info.toolTip() == context.engine.fit_explanation
    add_precise(window)

    pick(qtbot, window, "Precise")
    assert context.engine.context_length == 1024 and context.loaded_model_name == "Precise"
    assert window.model_combo.currentData() == "Precise"  # not the built-in entry of the same file
    assert window.context_label.text() == "context 0 / 1,024"
    answer = context.store.get_message(send(qtbot, window, "What is the capital of France?"))
    assert (answer.options["top_k"], answer.options["max_tokens"], answer.options["temperature"]) == (7, 6, 0.0)
    assert answer.stats["generated_tokens"] <= 6
    assert "Answer in one word." in context.store.get_trace(answer.id)["prompt"]

    pick(qtbot, window, "")  # back to the built-in model: its defaults again
    assert context.engine.context_length == auto_context and context.loaded_model_name == DEFAULT_MODEL_NAME
    window.new_conversation()
    answer = context.store.get_message(send(qtbot, window, "Hello"))
    assert (answer.options["top_k"], answer.options["max_tokens"]) == (40, 16)
    assert "Answer in one word." not in context.store.get_trace(answer.id)["prompt"]


def test_the_info_form_saves_checks_and_resets_a_models_settings(qtbot, open_window, paths):
    window = open_window()
    add_precise(window, {"top_k": 7})
    dialog = open_info(qtbot, window, "Precise")
    rows = dialog.rows
    assert rows["top_k"].editor.value() == 7 and rows["top_k"].own
    assert rows["top_k"].hint.text() == "this model's own (default: 40)"
    assert rows["temperature"].hint.text() == "the built-in model's preset" and not rows["temperature"].own
    assert rows["context_length"].editor.text() == "auto"
    assert dialog.findChild(type(dialog.status_label), "modelInfoMemory").text().startswith("If it loaded now: Context")

    rows["temperature"].editor.setValue(0.4)  # typing a value makes it the model's own
    assert rows["temperature"].own and rows["temperature"].reset.isEnabled()
    dialog.save_button.click()
    assert stored_settings(paths) == {"top_k": 7, "temperature": 0.4}
    assert "Saved" in dialog.status_label.text()

    # A value the setting cannot take: said in the dialog, nothing written, what was typed kept.
    rows["context_length"].editor.setValue(100)
    dialog.save_button.click()
    assert dialog.error_label.isVisibleTo(dialog)
    assert dialog.error_label.text() == "Not saved: context_length must be at least 256 (or auto)."
    assert stored_settings(paths) == {"top_k": 7, "temperature": 0.4}
    assert rows["context_length"].editor.value() == 100 and rows["temperature"].editor.value() == 0.4
    rows["context_length"].editor.setValue(512)
    rows["system_prompt"].editor.setPlainText("Be terse.")
    dialog.save_button.click()
    assert not dialog.error_label.isVisibleTo(dialog)
    assert stored_settings(paths) == {"top_k": 7, "temperature": 0.4, "context_length": 512,
                                      "system_prompt": "Be terse."}
    assert window.context.engine.context_length != 512  # Precise is not the loaded model: nothing reloads

    rows["temperature"].reset.click()  # one setting back to its default
    assert rows["temperature"].editor.value() == 0.0 and not rows["temperature"].own
    dialog.save_button.click()
    assert "temperature" not in stored_settings(paths)
    dialog.reset_button.click()  # all of them, saved at once
    assert stored_settings(paths) is None
    assert rows["context_length"].editor.text() == "auto" and rows["top_k"].editor.value() == 40


def test_saving_a_new_context_for_the_loaded_model_loads_it_again_and_explains_it(qtbot, open_window, paths):
    window = open_window()
    context = window.context
    dialog = open_info(qtbot, window)  # the loaded model: the built-in one
    assert dialog.details.entry.builtin and dialog.details.loaded
    memory = dialog.findChild(type(dialog.status_label), "modelInfoMemory").text()
    plan = context.engine.load_plan
    assert memory == f"Loaded with: {plan.context.explanation}\n{plan.gpu.explanation}"
    assert context.engine.fit_explanation == f"{plan.context.explanation} {plan.gpu.explanation}"
    assert memory.startswith(f"Loaded with: Context {context.engine.context_length:,} tokens")
    dialog.rows["context_length"].editor.setValue(768)
    with qtbot.waitSignal(window.model_ready, timeout=60_000):
        dialog.save_button.click()
    assert context.engine.context_length == 768
    assert json.loads(paths.models_file.read_text())["builtin"]["settings"] == {"context_length": 768}
    assert window.model_info.toolTip().startswith("Context 768 tokens (your setting) fits")


def test_a_file_outside_the_library_shows_its_info_but_no_form_to_keep(qtbot, open_window, tmp_path):
    window = open_window()
    outside = write_tiny_gguf(tmp_path / "elsewhere.gguf")
    dialog = open_info(qtbot, window, str(outside))
    assert not dialog.details.in_library
    assert dialog.library_hint.isVisibleTo(dialog) and "Add model…" in dialog.library_hint.text()
    assert not dialog.save_button.isEnabled() and not dialog.reset_button.isEnabled()
    assert all(not row.editor.isEnabled() for row in dialog.rows.values())


def test_the_settings_dialog_shows_auto_and_takes_the_words(qtbot, open_window, paths):
    window = open_window()
    dialog = window.open_settings()
    context_editor = dialog.forms[0].editors["model.context_length"]
    layers = dialog.forms[0].editors["model.gpu_layers"]
    assert context_editor.text() == "auto" and layers.text() == "auto"
    layers.lineEdit().selectAll()
    qtbot.keyClicks(layers.lineEdit(), "all")
    layers.interpretText()
    assert layers.value() == -1 and layers.text() == "all"
    context_editor.stepUp()  # from auto, one step of 256 tokens
    assert context_editor.value() == 256
    context_editor.setValue(2048)
    with qtbot.waitSignal(window.model_ready, timeout=60_000):
        dialog.accept()  # both need a reload, which follows at once
    text = paths.settings_file.read_text()
    assert 'gpu_layers = "all"' in text and "context_length = 2048" in text
    assert window.context.engine.context_length == 2048
