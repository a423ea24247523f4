"""The window side of prompt templates: the picker above the message box, the variables form,
the template editor with a live preview, and "Improve this prompt"."""

from __future__ import annotations

import difflib
import html
import threading
import tomllib
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.api import ChatMessage, GenerationOptions
from desktop_app.ui.api import run_task

from desktop_app_prompt_templates import state
from desktop_app_prompt_templates.templates import PromptTemplate, TemplateError, dump_template, template_from_dict

__all__ = ["TemplateBar", "TemplateEditor", "ImproveDialog", "improve_prompt"]

NO_TEMPLATE = "No template"
IMPROVE_SYSTEM = (
    "You rewrite prompts for a language model so they are clear, specific and complete. "
    "Keep the user's intent and language. Reply with the improved prompt only, no comments."
)


class TemplateBar(QWidget):
    """Template picker and variable fields for the open conversation."""

    def __init__(self, window: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.window = window
        self.setObjectName("templateBar")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 2)
        layout.setSpacing(4)
        layout.addWidget(QLabel("Template:"))
        self.combo = QComboBox()
        self.combo.setObjectName("templatePicker")
        self.combo.setAccessibleName("Prompt template")
        # Long template names must not force a wide window.
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(14)
        layout.addWidget(self.combo)
        self.fields_layout = QHBoxLayout()
        layout.addLayout(self.fields_layout)
        self.problems = QLabel()
        self.problems.setObjectName("templateProblems")
        layout.addWidget(self.problems)
        layout.addStretch(1)
        self.edit_button = QToolButton(text="Edit…", toolTip="Create, edit, import and export templates")
        self.edit_button.setAccessibleName("Edit templates")
        self.edit_button.clicked.connect(self.open_editor)
        layout.addWidget(self.edit_button)
        self.improve_button = QToolButton(text="Improve", toolTip="Improve this prompt: ask the model to rewrite your message (Ctrl+I)")
        self.improve_button.setAccessibleName("Improve this prompt")
        self.improve_button.clicked.connect(lambda: improve_prompt(self.window))
        layout.addWidget(self.improve_button)
        self.fields: dict[str, QLineEdit] = {}
        self.fill()
        self.combo.currentIndexChanged.connect(self._on_combo_changed)
        window.conversation_shown.connect(self.show_selection)
        self.show_selection(window.current_conversation)

    def fill(self) -> None:
        """List the library's templates (keeping the current choice)."""
        current = self.combo.currentData()
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItem(NO_TEMPLATE, "")
        library = state.library
        for name, template in (library.templates.items() if library else []):
            self.combo.addItem(name, name)
            self.combo.setItemData(self.combo.count() - 1, f"{template.origin} — {template.description}", Qt.ToolTipRole)
        index = self.combo.findData(current)
        self.combo.setCurrentIndex(max(index, 0))
        self.combo.blockSignals(False)
        errors = library.errors if library else []
        self.problems.setText(f"⚠ {len(errors)} skipped" if errors else "")
        self.problems.setToolTip("Template files that could not be used:\n" + "\n".join(errors) if errors else "")
        self.problems.setAccessibleName("Templates that could not be used" if errors else "")

    def show_selection(self, conversation_id: Any) -> None:
        """Show the template and values that apply to this conversation."""
        selection = state.selection_for(conversation_id)
        self.combo.blockSignals(True)
        self.combo.setCurrentIndex(max(self.combo.findData(selection.get("template", "")), 0))
        self.combo.blockSignals(False)
        self._build_fields(selection.get("variables") or {})

    def selection(self) -> dict[str, Any]:
        """The picker's current choice."""
        return {"template": self.combo.currentData() or "",
                "variables": {k: f.text() for k, f in self.fields.items()}}

    def _on_combo_changed(self, index: int) -> None:
        self._build_fields({})
        self._store()

    def _build_fields(self, values: dict[str, str]) -> None:
        while self.fields_layout.count():
            widget = self.fields_layout.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        self.fields = {}
        name = self.combo.currentData()
        if not name or state.library is None or name not in state.library.templates:
            return
        template = state.library.get(name)
        for variable in template.variable_names:
            label = QLabel(variable.replace("_", " ") + ":")
            field = QLineEdit(values.get(variable, template.variables.get(variable, "")))
            field.setAccessibleName(f"Template variable {variable}")
            field.setMinimumWidth(120)
            field.editingFinished.connect(self._store)
            self.fields_layout.addWidget(label)
            self.fields_layout.addWidget(field)
            self.fields[variable] = field

    def _store(self) -> None:
        selection = self.selection()
        state.choice.selection = selection
        state.choice.remember(self.window.current_conversation, selection)

    def open_editor(self) -> "TemplateEditor":
        """Open the template editor (non-blocking)."""
        editor = TemplateEditor(self.window, self.combo.currentData() or None, self)
        editor.finished.connect(lambda _=0: self.fill())
        editor.open()
        return editor


class TemplateEditor(QDialog):
    """Create, edit, duplicate, delete, import and export templates, with a live preview.

    Signals:
        preview_shown(str): the preview shows a newly rendered text.
    """

    preview_shown = Signal(str)

    def __init__(self, window: Any, select: str | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.window = window
        self.setWindowTitle("Prompt templates")
        self.setObjectName("templateEditor")
        self.resize(1000, 720)
        outer = QHBoxLayout(self)
        splitter = QSplitter(Qt.Horizontal)
        outer.addWidget(splitter)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        self.list = QListWidget()
        self.list.setAccessibleName("Templates")
        left_layout.addWidget(self.list)
        for text, slot in (("New", self.new_template), ("Duplicate", self.duplicate), ("Delete", self.delete),
                           ("Import…", self.import_file), ("Export…", self.export_file)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            left_layout.addWidget(button)
        splitter.addWidget(left)

        right = QWidget()
        form_layout = QVBoxLayout(right)
        form = QFormLayout()
        self.name = QLineEdit()
        self.origin = QLabel()
        self.description = QLineEdit()
        self.system = QPlainTextEdit()
        self.user = QPlainTextEdit()
        self.user.setPlaceholderText("Optional. {{ message }} is what the user types, e.g.: Translate into {{ language }}: {{ message }}")
        self.variables = QTableWidget(0, 2)
        self.variables.setHorizontalHeaderLabels(["Variable", "Default"])
        self.examples = QTableWidget(0, 2)
        self.examples.setHorizontalHeaderLabels(["User", "Assistant"])
        self.advanced = QPlainTextEdit()
        self.advanced.setPlaceholderText('answer_pattern = "..."\n[preset]\ntemperature = 0.2\n[output.json_schema]\n...')
        mono = QFontDatabase.systemFont(QFontDatabase.FixedFont)
        for widget, height in ((self.system, 64), (self.user, 56), (self.variables, 72), (self.examples, 80),
                               (self.advanced, 64)):
            widget.setMaximumHeight(height)
        self.advanced.setFont(mono)
        for label, widget in (("Name", self.name), ("Origin", self.origin), ("Description", self.description),
                              ("System prompt", self.system), ("Message wrapper", self.user),
                              ("Variables", self.variables), ("Few-shot examples", self.examples),
                              ("Preset, output, strategy (TOML)", self.advanced)):
            widget.setAccessibleName(label)
            form.addRow(label, widget)
        row_buttons = QHBoxLayout()
        for text, table in (("+ variable", self.variables), ("+ example", self.examples)):
            button = QToolButton(text=text)
            button.clicked.connect(lambda _=False, t=table: t.insertRow(t.rowCount()))
            row_buttons.addWidget(button)
        row_buttons.addStretch(1)
        form.addRow("", _wrap(row_buttons))
        form_layout.addLayout(form)
        preview_row = QHBoxLayout()
        preview_row.addWidget(QLabel("Preview with message:"))
        self.sample = QLineEdit("What is the capital of France?")
        self.sample.setAccessibleName("Preview message")
        preview_row.addWidget(self.sample)
        form_layout.addLayout(preview_row)
        self.preview = QPlainTextEdit()
        self.preview.setObjectName("templatePreview")
        self.preview.setAccessibleName("Prompt preview")
        self.preview.setReadOnly(True)
        self.preview.setFont(mono)
        self.preview.setMinimumHeight(180)
        form_layout.addWidget(self.preview, 1)
        buttons = QDialogButtonBox()
        self.save_button = buttons.addButton("Save", QDialogButtonBox.AcceptRole)
        buttons.addButton(QDialogButtonBox.Close)
        self.save_button.clicked.connect(self.save)
        buttons.rejected.connect(self.reject)
        form_layout.addWidget(buttons)
        splitter.addWidget(right)
        splitter.setSizes([230, 770])

        self._timer = QTimer(self, singleShot=True, interval=250)
        self._timer.timeout.connect(self.update_preview)
        for widget in (self.name, self.description, self.sample):
            widget.textChanged.connect(lambda *_: self._timer.start())
        for widget in (self.system, self.user, self.advanced):
            widget.textChanged.connect(self._timer.start)
        for table in (self.variables, self.examples):
            table.itemChanged.connect(lambda *_: self._timer.start())
        self.list.currentItemChanged.connect(lambda current, _: self.load(current.data(Qt.UserRole) if current else None))
        self.editing: str | None = None
        self._preview_running = False  # a render is on the thread pool
        self._preview_again = False  # the form changed while it ran
        self.refresh(select)

    # -- list -----------------------------------------------------------------------------
    def refresh(self, select: str | None = None) -> None:
        """Reload the list of templates and select one."""
        self.list.blockSignals(True)
        self.list.clear()
        for name, template in state.library.templates.items():
            item = QListWidgetItem(f"{name}\n{template.origin}")
            item.setData(Qt.UserRole, name)
            self.list.addItem(item)
        self.list.blockSignals(False)
        names = [self.list.item(i).data(Qt.UserRole) for i in range(self.list.count())]
        row = names.index(select) if select in names else 0
        if names:
            self.list.setCurrentRow(row)
            self.load(names[row])

    def load(self, name: str | None) -> None:
        """Show a template in the form."""
        if name is None:
            return
        template = state.library.get(name)
        self.editing = name
        self.name.setText(template.name)
        self.origin.setText(template.origin + ("" if template.origin == "user" else " — save makes your own copy"))
        self.description.setText(template.description)
        self.system.setPlainText(template.system)
        self.user.setPlainText(template.user)
        _fill_table(self.variables, list(template.variables.items()))
        _fill_table(self.examples, template.examples)
        rest = {k: v for k, v in tomllib.loads(dump_template(template)).items()
                if k in ("answer_pattern", "preset", "output", "strategy")}
        import tomli_w

        self.advanced.setPlainText(tomli_w.dumps(rest) if rest else "")
        self.update_preview()

    # -- editing --------------------------------------------------------------------------
    def template(self) -> PromptTemplate:
        """The template as entered; raises TemplateError with what is wrong."""
        try:
            data = tomllib.loads(self.advanced.toPlainText()) if self.advanced.toPlainText().strip() else {}
        except tomllib.TOMLDecodeError as exc:
            raise TemplateError(f"Preset, output, strategy: not valid TOML ({exc}).") from None
        data.update(
            name=self.name.text().strip(), description=self.description.text().strip(),
            system=self.system.toPlainText(), user=self.user.toPlainText(),
            variables={k: v for k, v in _table_rows(self.variables) if k},
            examples=[{"user": q, "assistant": a} for q, a in _table_rows(self.examples) if q or a],
        )
        return template_from_dict(data, origin="user")

    def update_preview(self) -> None:
        """Render the prompt as the model will see it, through its own chat template.

        The form is read here; the rendering runs on the thread pool, since a template's
        loops may take a while before its step budget stops them. One render runs at a time:
        edits made meanwhile are rendered once it is done, so typing never queues up work
        that would hold up the pool's other tasks.
        """
        if self._preview_running:
            self._preview_again = True
            return
        try:
            template = self.template()
        except TemplateError as exc:
            self.preview.setPlainText(f"⚠ {exc}")
            return
        context = state.context
        sample = self.sample.text()
        system = context.app_setting("chat.system_prompt") or context.default_system_prompt()
        self._preview_running, self._preview_again = True, False

        def show(text: str) -> None:
            self._preview_running = False
            if self._preview_again:
                self.update_preview()  # the form changed while this one rendered
                return
            self.preview.setPlainText(text)
            self.preview_shown.emit(text)

        run_task(lambda: _render_preview(template, context.model, sample, system), show,
                 lambda message: show(f"⚠ {message}"))

    def save(self) -> None:
        """Save the form as a user template (a copy when the original is not the user's)."""
        try:
            template = self.template()
            original = state.library.templates.get(self.editing) if self.editing else None
            replacing = self.editing if original is not None and original.origin == "user" else None
            if replacing is None and template.name in state.library.templates:
                # Saving a built-in (or a plugin's) template makes the user's own copy of it.
                base, n = f"{template.name} copy", 2
                template.name = base
                while template.name in state.library.templates:
                    template.name, n = f"{base} {n}", n + 1
            saved = state.library.save(template, replacing=replacing)
        except TemplateError as exc:
            QMessageBox.warning(self, "Template", str(exc))
            return
        self.refresh(saved.name)

    def new_template(self) -> None:
        """Start a new template from a blank form."""
        name, n = "New template", 2
        while name in state.library.templates:
            name, n = f"New template {n}", n + 1
        saved = state.library.save(PromptTemplate(name, system="You are a helpful assistant."))
        self.refresh(saved.name)

    def duplicate(self) -> None:
        """Copy the selected template into a new user template."""
        if self.editing:
            self.refresh(state.library.duplicate(self.editing).name)

    def delete(self) -> None:
        """Delete the selected user template after confirmation."""
        if not self.editing:
            return
        try:
            if QMessageBox.question(self, "Delete template", f"Delete “{self.editing}”?") != QMessageBox.Yes:
                return
            state.library.delete(self.editing)
        except TemplateError as exc:
            QMessageBox.warning(self, "Template", str(exc))
            return
        self.refresh()

    def import_file(self) -> None:
        """Add a template from a TOML file."""
        path, _ = QFileDialog.getOpenFileName(self, "Import template", "", "Templates (*.toml)")
        if path:
            try:
                self.refresh(state.library.import_file(path).name)
            except TemplateError as exc:
                QMessageBox.warning(self, "Import template", str(exc))

    def export_file(self) -> None:
        """Write the selected template to a TOML file."""
        if not self.editing:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export template", f"{self.editing}.toml", "Templates (*.toml)")
        if path:
            state.library.export(self.editing, path)


def _render_preview(template: PromptTemplate, model: Any, sample: str, system: str) -> str:
    """The preview's text: the same steps a real turn takes, so it is the prompt the model will see."""
    from desktop_app.api import Turn

    from desktop_app_prompt_templates import apply_template

    turn = Turn(None, sample, base_system=system)
    try:
        apply_template(turn, template, None)
        if model.loaded:
            text = model.render(turn.messages())
        else:
            text = "\n\n".join(f"[{m.role}]\n{m.content}" for m in turn.messages()) + \
                "\n\n(no model loaded: shown without its chat template)"
    except TemplateError as exc:
        return f"⚠ {exc}"
    extras = []
    if template.preset:
        extras.append("preset: " + ", ".join(f"{k}={v}" for k, v in template.preset.items()))
    if template.json_schema:
        extras.append("answers are forced to match the JSON schema")
    if template.strategy.get("name"):
        extras.append(f"strategy: {template.strategy['name']}")
    return text + ("\n\n# " + "\n# ".join(extras) if extras else "")


class ImproveDialog(QDialog):
    """Shows the model's rewrite of a prompt as a diff; Accept puts it in the message box."""

    def __init__(self, original: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Improve this prompt")
        self.setObjectName("improveDialog")
        self.resize(720, 460)
        self.original = original
        self.suggestion = ""
        layout = QVBoxLayout(self)
        self.status = QLabel("Asking the model for a better prompt…")
        layout.addWidget(self.status)
        self.diff = QTextBrowser()
        self.diff.setAccessibleName("Suggested changes")
        layout.addWidget(self.diff, 1)
        self.buttons = QDialogButtonBox()
        self.accept_button = self.buttons.addButton("Use suggestion", QDialogButtonBox.AcceptRole)
        self.accept_button.setEnabled(False)
        self.buttons.addButton("Discard", QDialogButtonBox.RejectRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

    def show_suggestion(self, suggestion: str) -> None:
        """Show the word-level differences between the original and the suggestion."""
        self.suggestion = suggestion.strip()
        if not self.suggestion:
            self.show_error("The model gave no suggestion.")
            return
        self.status.setText("Red was removed, green was added.")
        self.diff.setHtml(word_diff_html(self.original, self.suggestion))
        self.accept_button.setEnabled(True)

    def show_error(self, message: str) -> None:
        """Say why there is no suggestion."""
        self.status.setText(message)


def word_diff_html(old: str, new: str) -> str:
    """HTML showing ``new`` with removed words struck out in red and added words in green."""
    a, b = old.split(), new.split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append(f"<span style='color:#b3261e; text-decoration:line-through'>{html.escape(' '.join(a[i1:i2]))}</span>")
        if op in ("insert", "replace"):
            out.append(f"<span style='color:#146c2e; font-weight:bold'>{html.escape(' '.join(b[j1:j2]))}</span>")
        if op == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
    return "<p>" + " ".join(out) + "</p>"


def improve_prompt(window: Any) -> ImproveDialog | None:
    """Ask the loaded model to rewrite the message box's text; show the result as a diff."""
    text = window.composer_text().strip()
    if not text:
        window.show_error("Write a message first; “Improve prompt” rewrites what is in the message box.")
        return None
    dialog = ImproveDialog(text, window.widget)
    stop = threading.Event()

    def ask() -> str:
        messages = [ChatMessage("system", IMPROVE_SYSTEM),
                    ChatMessage("user", f"Improve this prompt:\n\n{text}")]
        # Waits for an answer being written; the plain model rewrites (no LoRA adapters).
        return state.context.complete(messages, GenerationOptions(temperature=0.3, max_tokens=256), stop=stop).text

    def accepted() -> None:
        window.set_composer_text(dialog.suggestion)

    def discarded() -> None:
        stop.set()  # ends our suggestion only, never someone else's answer

    dialog.accepted.connect(accepted)
    dialog.rejected.connect(discarded)
    run_task(ask, dialog.show_suggestion, dialog.show_error)
    return window.open_dialog(dialog)


def _fill_table(table: QTableWidget, rows: list[tuple[str, str]]) -> None:
    table.blockSignals(True)
    table.setRowCount(0)
    for left, right in rows:
        row = table.rowCount()
        table.insertRow(row)
        table.setItem(row, 0, QTableWidgetItem(left))
        table.setItem(row, 1, QTableWidgetItem(right))
    table.resizeColumnsToContents()
    table.blockSignals(False)


def _table_rows(table: QTableWidget) -> list[tuple[str, str]]:
    rows = []
    for row in range(table.rowCount()):
        cells = [table.item(row, c) for c in (0, 1)]
        rows.append(tuple((c.text() if c else "") for c in cells))
    return rows


def _wrap(layout) -> QWidget:
    widget = QWidget()
    widget.setLayout(layout)
    return widget
