"""“Add to task set…” on an answer: the question and the corrected answer become an item."""

from __future__ import annotations

from desktop_app_lab import state
from desktop_app_lab.tasks import load_task_set


def _show_answer(window, question="How many days of leave do I get?", answer="You get 20 days."):
    data = {"format": "parley-conversation/1", "title": "Leave", "messages": [
        {"id": 1, "parent_id": None, "role": "user", "content": question},
        {"id": 2, "parent_id": 1, "role": "assistant", "content": answer}]}
    conversation = window.context.plugin_context("lab").conversations.import_json(data)
    window.show_conversation(conversation.id)
    return window.chat_view.widgets[-1]


def _add_dialog(window, answer_widget):
    action = next(a for a in answer_widget.more_button.menu().actions() if a.text() == "Add to task set…")
    action.trigger()
    from desktop_app_lab.ui_add import AddToSetDialog

    dialogs = [d for d in window.findChildren(AddToSetDialog) if d.isVisible()]
    assert len(dialogs) == 1
    return dialogs[0]


def test_a_corrected_answer_starts_a_new_set_and_a_mistake_loses_nothing(qtbot, open_window):
    window = open_window()
    dialog = _add_dialog(window, _show_answer(window))
    assert dialog.question.toPlainText() == "How many days of leave do I get?"
    assert dialog.expected.toPlainText() == "You get 20 days." and dialog.sets.currentData() == ""
    dialog.expected.setPlainText("26 days")
    dialog.save()  # no name yet: explained, nothing typed is lost
    assert "name" in dialog.error.text() and dialog.isVisible() and dialog.expected.toPlainText() == "26 days"
    dialog.new_name.setText("Questions about leave")
    dialog.check.setCurrentIndex(dialog.check.findData("contains_any"))
    dialog.save()
    assert not dialog.isVisible()
    task_set, item = dialog.added
    saved = load_task_set(task_set.path)
    assert saved.name == "Questions about leave" and saved.check == {"kind": "contains_any"}
    assert saved.items[0].expected == ["26 days"] and saved.split_of(saved.items[0]) == "test"
    assert saved.items[0].extra["source"].startswith("conversation ")
    assert task_set.path.parent == window.context.plugin_context("lab").data_dir / "lab" / "sets"

    # the next answer goes into the set just made (the user's sets come first)
    dialog = _add_dialog(window, _show_answer(window, "Where do I book leave?", "On paper."))
    assert dialog.sets.currentData() == str(task_set.path)
    dialog.expected.setPlainText("the Rota app")
    dialog.split.setCurrentIndex(dialog.split.findData("train"))
    dialog.save()
    saved = load_task_set(task_set.path)
    assert [i.expected for i in saved.items] == [["26 days"], ["the Rota app"]]
    assert saved.split_of(saved.items[1]) == "train" and state.library.find("Questions about leave") == task_set.path
