"""“Add to task set…” on an answer: the question, the model's answer and the right one, kept
for the strategy lab. A person collects their task set while they chat, correcting answers the
model got wrong."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit,
                               QPlainTextEdit, QVBoxLayout, QWidget)

from desktop_app.api import ParleyError

__all__ = ["AddToSetDialog", "add_to_task_set"]

NEW_SET = "New task set…"
CHECKS = [("normalised", "the same words (case and punctuation ignored)"), ("exact", "exactly the same text"),
          ("number", "the same number"), ("contains_any", "contains one of the phrases (one per line)"),
          ("contains_all", "contains all the phrases (one per line)"), ("json", "the same JSON fields"),
          ("judge", "the model judges it against the right answer")]


class AddToSetDialog(QDialog):
    """Add one question, with its right answer, to a task set (or start a new set with it)."""

    def __init__(self, library: Any, question: str, answer: str, parent: QWidget | None = None, *,
                 source: str = ""):
        super().__init__(parent)
        self.library = library
        self.source = source
        self.added: tuple[Any, Any] | None = None
        self.setWindowTitle("Add to task set")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        intro = QLabel("Keep this question for the strategy lab, with the answer that is right. "
                       "Correct the answer below if the model got it wrong.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.sets = QComboBox()
        self.sets.setAccessibleName("Task set")
        entries = [e for e in library.entries() if not e.problem]
        # The user's own sets first: those are what a person grows from conversations.
        for entry in sorted(entries, key=lambda e: e.shipped):
            self.sets.addItem(entry.name + (" (shipped: a copy is made)" if entry.shipped else ""), str(entry.path))
        self.sets.addItem(NEW_SET, "")
        if not [e for e in entries if not e.shipped]:
            self.sets.setCurrentIndex(self.sets.count() - 1)
        form.addRow("Task set:", self.sets)
        self.new_name = QLineEdit()
        self.new_name.setAccessibleName("New task set's name")
        self.new_name.setPlaceholderText("e.g. Support questions")
        form.addRow("Name:", self.new_name)
        self.check = QComboBox()
        self.check.setAccessibleName("How answers are judged")
        for kind, text in CHECKS:
            self.check.addItem(text, kind)
        form.addRow("Right when:", self.check)
        self.question = QPlainTextEdit(question)
        self.question.setAccessibleName("Question")
        self.question.setFixedHeight(70)
        form.addRow("Question:", self.question)
        self.model_answer = QLabel(_short(answer))
        self.model_answer.setWordWrap(True)
        self.model_answer.setAccessibleName("The model's answer")
        form.addRow("Model said:", self.model_answer)
        self.expected = QPlainTextEdit(answer.strip())
        self.expected.setAccessibleName("Right answer")
        self.expected.setFixedHeight(70)
        form.addRow("Right answer:", self.expected)
        self.split = QComboBox()
        self.split.setAccessibleName("Split")
        self.split.addItem("held out (scores come from it)", "test")
        self.split.addItem("train (examples and training may use it)", "train")
        form.addRow("Use as:", self.split)
        layout.addLayout(form)
        self.error = QLabel()
        self.error.setObjectName("errorText")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b00020;")
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.sets.currentIndexChanged.connect(self._on_set_changed)
        self._on_set_changed()

    def _on_set_changed(self) -> None:
        new = self.sets.currentData() == ""
        self.new_name.setEnabled(new)
        self.check.setEnabled(new)

    def save(self) -> None:
        """Add the item; a problem is shown in the dialog and nothing typed is lost."""
        question = self.question.toPlainText().strip()
        typed = self.expected.toPlainText().strip()
        if not question or not typed:
            self.error.setText("Both the question and the right answer are needed.")
            return
        extra = {"source": self.source} if self.source else {}
        split = self.split.currentData()
        try:
            if self.sets.currentData() == "":
                from desktop_app_lab.tasks import TaskItem, TaskSet

                kind = self.check.currentData()
                expected = self.library.expected_from_text(TaskSet("new", check={"kind": kind}), typed)
                name = self.new_name.text().strip()
                if not name:
                    raise ParleyError("Give the new task set a name.")
                path = self.library.create(name, [TaskItem("item-1", question, expected, split, extra=extra)],
                                           check={"kind": kind})
                task_set = self.library.load(path)
                self.added = (task_set, task_set.items[0])
            else:
                task_set = self.library.load(self.sets.currentData())
                expected = self.library.expected_from_text(task_set, typed)
                self.added = self.library.add_item(self.sets.currentData(), question, expected, split=split,
                                                   **extra)
        except (ParleyError, OSError) as exc:
            self.error.setText(str(exc))
            return
        self.accept()


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def add_to_task_set(window: Any, message: Any) -> AddToSetDialog | None:
    """The message action: open the dialog for an answer and the question it replies to."""
    from desktop_app_lab import state

    context = state.require()
    if message.role != "assistant" or message.parent_id is None:
        window.show_error("Choose an answer: it is added with the question it replies to.")
        return None
    question = context.conversations.message(message.parent_id).content
    dialog = AddToSetDialog(state.library, question, message.content, window.widget,
                            source=f"conversation {message.conversation_id}, message {message.id}")
    window.open_dialog(dialog)
    return dialog
