"""The strategy lab's window: pick a task set and candidates, run them in the background, read
the scorecard, the chart and the answers that split the candidates, open any answer as a
conversation, export the report and apply the winner.

Runs go through :func:`desktop_app.ui.api.run_task`; the runner's progress arrives on a worker
thread and is handed to the GUI thread by a queued signal, so the window never waits on the model.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QFileDialog, QHBoxLayout,
                               QHeaderView, QInputDialog, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QPushButton, QSplitter, QTableWidget, QTableWidgetItem,
                               QTabWidget, QVBoxLayout, QWidget)

from desktop_app.api import ParleyError
from desktop_app.ui.api import add_job_controls, run_task

__all__ = ["LabWindow", "open_lab"]


class _Relay(QObject):
    """Carries the runner's progress from its thread to the window's."""

    progress = Signal(object)


def _cell(text: Any, tip: str = "") -> QTableWidgetItem:
    item = QTableWidgetItem(str(text))
    item.setFlags(item.flags() & ~Qt.ItemIsEditable)
    if tip:
        item.setToolTip(tip)
    return item


class LabWindow(QDialog):
    """The lab, beside the chat (not modal: the user may chat while a run goes on)."""

    def __init__(self, window: Any, context: Any, parent: QWidget | None = None):
        super().__init__(parent)
        from desktop_app_lab import state

        self.window, self.context = window, context
        self.library, self.runs = state.library, state.runs
        self.run: Any = None
        self.summary: Any = None
        self.stop: threading.Event | None = None
        self.job: Any = None
        #: What the last prompt optimisation found (desktop_app_lab.optimise.Optimised), if any.
        self.optimised: Any = None
        self.relay = _Relay()
        self.relay.progress.connect(self._on_progress)
        self.setWindowTitle("Strategy lab")
        self.resize(980, 720)
        layout = QVBoxLayout(self)

        top = QHBoxLayout()
        top.addWidget(QLabel("Task set:"))
        self.sets = QComboBox()
        self.sets.setAccessibleName("Task set")
        self.sets.setMinimumWidth(280)
        # Long names and run ids must not widen the window: the combo boxes elide instead.
        self.sets.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        top.addWidget(self.sets, 1)
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip("Make a task set from a JSONL or CSV file of inputs and answers")
        self.import_button.clicked.connect(self.import_dialog)
        top.addWidget(self.import_button)
        self.documents_button = QPushButton("From documents…")
        self.documents_button.setToolTip("Propose questions and answers from a folder of your documents")
        self.documents_button.clicked.connect(self.documents_dialog)
        top.addWidget(self.documents_button)
        layout.addLayout(top)
        self.set_info = QLabel()
        self.set_info.setWordWrap(True)
        layout.addWidget(self.set_info)

        split = QSplitter(Qt.Horizontal)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(QLabel("Candidates (the first is the baseline):"))
        self.candidates = QListWidget()
        self.candidates.setAccessibleName("Candidates")
        left_layout.addWidget(self.candidates, 1)
        add_row = QHBoxLayout()
        self.candidate_spec = QLineEdit()
        self.candidate_spec.setPlaceholderText("e.g. few:4+chain or lora:Tone@0.5")
        self.candidate_spec.setAccessibleName("Candidate to add")
        self.candidate_spec.returnPressed.connect(self.add_candidate)
        add_row.addWidget(self.candidate_spec, 1)
        add_button = QPushButton("Add")
        add_button.clicked.connect(self.add_candidate)
        add_row.addWidget(add_button)
        left_layout.addLayout(add_row)
        self.paraphrases = QCheckBox("Also measure prompt sensitivity")
        self.paraphrases.setToolTip("Also answer with each of the set's other wordings of its instruction, to see "
                                    "how much the score moves when only the wording changes")
        left_layout.addWidget(self.paraphrases)
        self.batched = QCheckBox("Answer several items at once")
        self.batched.setChecked(True)
        self.batched.setToolTip("Write several answers together in one batch, which is much faster. Answers "
                                "written together can differ from one-at-a-time answers in a rare word; untick "
                                "for a run that is reproducible to the word.")
        left_layout.addWidget(self.batched)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.start_run)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(self.resume_run)
        self.resume_button.setEnabled(False)
        self.optimise_button = QPushButton("Optimise prompt…")
        self.optimise_button.setToolTip("Let the model propose better instructions for the first ticked candidate, "
                                        "scored on the train split, then measured on the held-out split")
        self.optimise_button.clicked.connect(lambda: self.optimise_prompt())
        for button in (self.run_button, self.resume_button, self.optimise_button):
            buttons.addWidget(button)
        left_layout.addLayout(buttons)
        left_layout.addWidget(QLabel("Earlier runs of this set:"))
        self.run_list = QComboBox()
        self.run_list.setAccessibleName("Earlier runs")
        self.run_list.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.run_list.setMinimumContentsLength(24)
        self.run_list.activated.connect(self._on_run_picked)
        left_layout.addWidget(self.run_list)
        split.addWidget(left)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        self.tabs = QTabWidget()
        self.tabs.setUsesScrollButtons(True)  # a narrow window scrolls the tabs rather than growing
        self.scorecard = self._table(["Candidate", "Right", "Accuracy (95% CI)", "p50", "p95", "Tokens",
                                      "vs baseline"])
        self.tabs.addTab(self.scorecard, "Scorecard")
        self.chart = QLabel("Run a task set to see accuracy against time.")
        self.chart.setAlignment(Qt.AlignCenter)
        self.tabs.addTab(self.chart, "Chart")
        self.disagreements = self._table(["Item", "Expected"])
        self.disagreements.cellDoubleClicked.connect(self._open_disagreement)
        self.tabs.addTab(self.disagreements, "Disagreements")
        self.sensitivity = self._table(["Candidate", "Lowest", "Highest", "Spread", "Per instruction"])
        self.sensitivity.setToolTip("Accuracy under each wording of the instruction: tick 'Also measure prompt "
                                    "sensitivity' before a run")
        self.tabs.addTab(self.sensitivity, "Prompt sensitivity")
        self.answers = self._table(["Candidate", "Item", "Verdict", "Answer", "Why"])
        self.answers.cellDoubleClicked.connect(lambda row, _col: self.open_answer(row))
        self.tabs.addTab(self.answers, "Answers")
        right_layout.addWidget(self.tabs, 1)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        right_layout.addWidget(self.verdict)
        actions = QHBoxLayout()
        self.open_button = QPushButton("Open answer as conversation")
        self.open_button.clicked.connect(lambda: self.open_answer(self.answers.currentRow()))
        self.report_button = QPushButton("Export report…")
        self.report_button.clicked.connect(self.export_report)
        self.apply_button = QPushButton("Apply the winner")
        self.apply_button.setToolTip("Save the best candidate as a template new conversations use")
        self.apply_button.clicked.connect(self.apply_winner)
        for button in (self.open_button, self.report_button, self.apply_button):
            button.setEnabled(False)
            actions.addWidget(button)
        right_layout.addLayout(actions)
        split.addWidget(right)
        split.setSizes([320, 660])
        layout.addWidget(split, 1)

        self.progress, self.status, self.stop_button = add_job_controls(layout, "Run progress", "Stop")
        self.stop_button.setToolTip("Stop now (the answer being written is dropped); Resume finishes the run later")
        self.stop_button.clicked.connect(self.stop_run)
        self.stop_button.setEnabled(False)

        self.sets.currentIndexChanged.connect(self._on_set_changed)
        self.refresh_sets()

    @staticmethod
    def _table(headers: list[str]) -> QTableWidget:
        table = QTableWidget(0, len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.setSelectionBehavior(QAbstractItemView.SelectRows)
        table.setSelectionMode(QAbstractItemView.SingleSelection)
        table.verticalHeader().hide()
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        table.setWordWrap(False)
        return table

    # -- sets and candidates -------------------------------------------------------------------
    def refresh_sets(self, select: Path | None = None) -> None:
        """List the task sets again (selecting ``select`` if given)."""
        current = select or (Path(self.sets.currentData()) if self.sets.currentData() else None)
        self.sets.blockSignals(True)
        self.sets.clear()
        for entry in self.library.entries():
            if entry.problem:
                continue
            self.sets.addItem(entry.name + ("" if entry.shipped else " (yours)"), str(entry.path))
        if current is not None:
            index = self.sets.findData(str(current))
            if index >= 0:
                self.sets.setCurrentIndex(index)
        self.sets.blockSignals(False)
        self._on_set_changed()

    def task_set(self) -> Any:
        """The chosen task set."""
        return self.library.load(self.sets.currentData())

    def _on_set_changed(self) -> None:
        from desktop_app_lab.candidates import default_candidates

        if not self.sets.currentData():
            return
        try:
            task_set = self.task_set()
        except ParleyError as exc:
            self.set_info.setText(str(exc))
            return
        try:
            from desktop_app_lab.checks import describe_check

            judged = describe_check(task_set.check)
        except ParleyError:
            judged = task_set.check.get("kind", "")
        documents = f" · documents: {task_set.documents.name}" if task_set.documents is not None else ""
        self.set_info.setText(f"{len(task_set.items)} items: {len(task_set.train)} train, {len(task_set.test)} "
                              f"held out · check: {judged}{documents}. {task_set.description}")
        self.paraphrases.setEnabled(bool(task_set.paraphrases))
        self.candidates.clear()
        for candidate in default_candidates(task_set):
            self._add_candidate_row(candidate)
        self._list_runs(task_set)

    def _add_candidate_row(self, candidate: Any) -> None:
        row = QListWidgetItem(f"{candidate.name} — {candidate.describe()}")
        row.setData(Qt.UserRole, candidate)
        row.setFlags(row.flags() | Qt.ItemIsUserCheckable)
        row.setCheckState(Qt.Checked)
        self.candidates.addItem(row)

    def add_candidate(self) -> None:
        """Add the typed candidate(s); a mistake is explained and the text kept."""
        from desktop_app_lab.candidates import parse_candidates

        text = self.candidate_spec.text().strip()
        if not text:
            return
        try:
            found = parse_candidates([text])
        except ParleyError as exc:
            self.status.setText(str(exc))
            return
        taken = {self.candidates.item(i).data(Qt.UserRole).name for i in range(self.candidates.count())}
        for candidate in found:
            if candidate.name in taken:
                self.status.setText(f"{candidate.name!r} is already a candidate.")
                return
            self._add_candidate_row(candidate)
        self.candidate_spec.clear()
        self.status.setText("")

    def chosen_candidates(self) -> list[Any]:
        """The ticked candidates, in order."""
        return [self.candidates.item(i).data(Qt.UserRole) for i in range(self.candidates.count())
                if self.candidates.item(i).checkState() == Qt.Checked]

    def _list_runs(self, task_set: Any) -> None:
        self.run_list.clear()
        for run in self.runs.list():
            if run.task_set_name == task_set.name:
                self.run_list.addItem(f"{run.id} · {run.status} · {len(run.results)} answers", run.id)
        if self.run_list.count() and self.job is None:
            self._show_run(self.runs.get(self.run_list.itemData(0)))
        elif self.job is None:
            self._show_run(None)

    def _on_run_picked(self, index: int) -> None:
        if self.job is None and index >= 0:
            self._show_run(self.runs.get(self.run_list.itemData(index)))

    # -- running -------------------------------------------------------------------------------
    def model_loaded(self, why: str) -> bool:
        """Whether a model is loaded; if not, the status line asks for one and says ``why``."""
        if self.context.model.path is None:
            self.status.setText(f"Load a model first: {why}")
            return False
        return True

    def start_run(self) -> Any:
        """Start a run of the ticked candidates on the chosen set."""
        candidates = self.chosen_candidates()
        if not candidates:
            self.status.setText("Tick at least one candidate.")
            return None
        if not self.model_loaded("candidates answer with the loaded model."):
            return None
        try:
            task_set = self.task_set()
            run = self.runs.create(task_set, candidates, model=self.context.model.path.name,
                                   paraphrases=self.paraphrases.isChecked() and self.paraphrases.isEnabled(),
                                   batched=self.batched.isChecked())
        except ParleyError as exc:
            self.status.setText(str(exc))
            return None
        return self._go(run)

    def resume_run(self) -> Any:
        """Finish the shown run where it stopped."""
        if self.run is None:
            return None
        if not self.model_loaded("the run goes on with the loaded model."):
            return None
        return self._go(self.runs.get(self.run.id))

    def _go(self, run: Any) -> Any:
        from desktop_app_lab.runner import run_lab

        self.run = run
        self.stop = threading.Event()
        stop = self.stop
        self._running(True)
        self.status.setText(f"Run {run.id}: starting…")

        def work() -> Any:
            return run_lab(self.context, run, on_progress=self.relay.progress.emit, stop=stop)

        self.job = run_task(work, self._on_finished, self._on_failed, owner=self)
        return self.job

    def stop_run(self) -> None:
        """Stop after the answer being written; the run can be resumed."""
        if self.stop is not None:
            self.stop.set()
            self.status.setText("Stopping…")

    def optimise_prompt(self, calls: int | None = None) -> Any:
        """Search for a better instruction for the first ticked candidate (see ui_optimise)."""
        from desktop_app_lab.ui_optimise import optimise_in_window

        return optimise_in_window(self, calls)

    def _running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.optimise_button.setEnabled(not running)
        # The shown results belong to another run while one is written: nothing acts on them.
        for button in (self.open_button, self.report_button, self.apply_button, self.import_button,
                       self.documents_button):
            button.setEnabled(not running and (button in (self.import_button, self.documents_button)
                                               or self.summary is not None))
        self.stop_button.setEnabled(running)
        self.stop_button.setVisible(running)
        self.resume_button.setEnabled(False)
        self.sets.setEnabled(not running)
        self.progress.setVisible(running)
        if running:
            self.progress.setRange(0, 0)

    def _on_progress(self, progress: Any) -> None:
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.done)
        if progress.message:
            self.status.setText(progress.message)

    def _on_finished(self, run: Any) -> None:
        self.job = None
        self._running(False)
        self._show_run(run)
        self.status.setText(run.message if run.status != "stopped" else f"{run.message} (Resume finishes it.)")
        self._list_runs_keep(run)

    def _on_failed(self, message: str) -> None:
        self.job = None
        self._running(False)
        self.status.setText(f"The run failed: {message}")
        if self.run is not None:
            self._show_run(self.runs.get(self.run.id))

    def _list_runs_keep(self, run: Any) -> None:
        try:
            task_set = self.task_set()
        except ParleyError:
            return
        self._list_runs(task_set)
        index = self.run_list.findData(run.id)
        if index >= 0:
            self.run_list.setCurrentIndex(index)
            self._show_run(self.runs.get(run.id))

    # -- results -------------------------------------------------------------------------------
    def _show_run(self, run: Any) -> None:
        from desktop_app_lab.summary import summarise

        self.run = run
        self.summary = None
        for table in (self.scorecard, self.disagreements, self.sensitivity, self.answers):
            table.setRowCount(0)
        self.verdict.setText("")
        has_results = bool(run is not None and run.results)
        self.resume_button.setEnabled(run is not None and run.status in ("stopped", "failed", "running")
                                      and self.job is None)
        for button in (self.open_button, self.report_button):
            button.setEnabled(has_results)
        self.apply_button.setEnabled(has_results and run.status == "finished")
        self.apply_button.setToolTip("Save the best candidate as a template new conversations use" if
                                     self.apply_button.isEnabled() or not has_results else
                                     "Finish the run first (Resume): until then the candidates are not comparable")
        if not has_results:
            self.chart.setPixmap(QPixmap())
            self.chart.setText("Run a task set to see accuracy against time.")
            return
        self.summary = summary = summarise(run)
        self._fill_scorecard(summary)
        self._fill_disagreements(summary)
        self._fill_sensitivity(summary)
        self._fill_answers(summary)
        self._draw_chart(summary)
        if summary.best:
            from desktop_app_lab.stats import describe_sensitivity

            sensitivity = " ".join(describe_sensitivity(n, s) for n, s in summary.sensitivity.items())
            self.verdict.setText(f"Best: {summary.best} (★). ◆ marks the accuracy/time Pareto front. "
                                 f"{summary.disagreement_line()} {sensitivity} {run.judge}".strip())

    def _fill_scorecard(self, summary: Any) -> None:
        from desktop_app_lab.stats import format_percent, format_seconds

        self.scorecard.setRowCount(len(summary.rows))
        for row, r in enumerate(summary.rows):
            marks = (" ★" if r.candidate == summary.best else "") + (" ◆" if r.candidate in summary.front else "")
            if not r.n:
                versus = "not answered yet"
            elif r.diff is None:
                versus = "baseline" if row == 0 else "no items in common with the baseline"
            else:
                plain = "significant" if r.p_value is not None and r.p_value < 0.05 else "could be chance"
                versus = f"{r.diff * 100:+.1f} pts ({r.wins} won, {r.losses} lost; p={r.p_value:.3f}, {plain})"
            values = [r.candidate + marks, f"{r.correct}/{r.n}",
                      f"{format_percent(r.accuracy)} ({format_percent(r.ci_low)}–{format_percent(r.ci_high)})",
                      format_seconds(r.latency_p50), format_seconds(r.latency_p95), "—" if r.tokens_mean is None else f"{r.tokens_mean:.1f}", versus]
            for column, value in enumerate(values):
                self.scorecard.setItem(row, column, _cell(value, value if column == len(values) - 1 else ""))

    def _fill_disagreements(self, summary: Any) -> None:
        names = summary.candidates
        self.disagreements.setColumnCount(2 + len(names))
        self.disagreements.setHorizontalHeaderLabels(["Item", "Expected", *names])
        shown = summary.disagreements[:200]
        self.disagreements.setRowCount(len(shown))
        for row, found in enumerate(shown):
            item = summary.task_set.item(found.item)
            self.disagreements.setItem(row, 0, _cell(item.input[:80], item.input))
            self.disagreements.setItem(row, 1, _cell(_expected(item.expected)))
            for column, name in enumerate(names, 2):
                record = summary.answers.get((name, found.item))
                if record is None:
                    continue
                mark = "✓" if record["passed"] else "✗"
                self.disagreements.setItem(row, column, _cell(f"{mark} {(record['extracted'] or '')[:40]}",
                                                              record["answer"]))

    def _fill_sensitivity(self, summary: Any) -> None:
        from desktop_app_lab.stats import format_percent

        found = summary.sensitivity
        self.sensitivity.setRowCount(len(found))
        for row, (name, s) in enumerate(found.items()):
            wordings = ", ".join(f"{'main' if v is None else f'#{v + 1}'} {format_percent(a)}"
                                 for v, a in zip(s.variants, s.accuracies))
            for column, value in enumerate([name, format_percent(s.low), format_percent(s.high),
                                            f"{s.spread * 100:.1f} pts", wordings]):
                self.sensitivity.setItem(row, column, _cell(value))

    def _fill_answers(self, summary: Any) -> None:
        records = [summary.answers[key] for key in sorted(summary.answers,
                                                           key=lambda k: (summary.candidates.index(k[0])
                                                                          if k[0] in summary.candidates else 99, k[1]))]
        self.answer_records = records
        self.answers.setRowCount(len(records))
        for row, record in enumerate(records):
            values = [record["candidate"], record["item"], "right" if record["passed"] else "wrong",
                      " ".join((record["answer"] or record.get("error") or "").split())[:100], record["detail"]]
            for column, value in enumerate(values):
                self.answers.setItem(row, column, _cell(value, record["answer"] if column == 3 else ""))

    def _draw_chart(self, summary: Any) -> None:
        from desktop_app_lab.charts import pareto_chart_png

        scored = [r for r in summary.rows if r.n]
        png = pareto_chart_png(scored, summary.front, f"{summary.task_set.name}: accuracy against time")
        pixmap = QPixmap()
        pixmap.loadFromData(png, "PNG")
        self.chart.setPixmap(pixmap)

    def _open_disagreement(self, row: int, column: int) -> None:
        if self.summary is None or column < 2:
            return
        found = self.summary.disagreements[row]
        record = self.summary.answers.get((self.summary.candidates[column - 2], found.item))
        if record is not None:
            self._open_record(record)

    def open_answer(self, row: int) -> int | None:
        """Open the answer in row ``row`` of the Answers tab as a conversation in the chat."""
        if self.summary is None or not 0 <= row < len(getattr(self, "answer_records", [])):
            self.status.setText("Choose an answer in the Answers tab first.")
            return None
        return self._open_record(self.answer_records[row])

    def _open_record(self, record: dict[str, Any]) -> int:
        from desktop_app_lab.runs import conversation_export

        conversation = self.context.conversations.import_json(
            conversation_export(self.run, record, self.summary.task_set))
        self.window.open_conversation(conversation.id)
        self.status.setText(f"Opened {record['candidate']} · {record['item']} as a conversation; its Prompt "
                            "button shows exactly what the model was asked.")
        return conversation.id

    def export_report(self, path: str | None = None) -> Path | None:
        """Write the HTML report where the user chooses."""
        from desktop_app_lab.summary import write_run_report

        if self.run is None:
            return None
        if path is None:
            default = str(Path.home() / f"lab-{self.run.id}.html")
            path, _ = QFileDialog.getSaveFileName(self, "Export the report", default, "HTML (*.html)")
            if not path:
                return None
        try:
            written = write_run_report(self.run, Path(path))
        except (ParleyError, OSError) as exc:
            self.status.setText(f"The report could not be written: {exc}")
            return None
        self.status.setText(f"Report written to {written}.")
        return written

    def apply_winner(self) -> Any:
        """Save the best candidate as the default template (and a profile when a template cannot
        carry all of it)."""
        from desktop_app_lab.apply import apply_candidate

        if self.run is None:
            return None
        try:
            applied = apply_candidate(self.context, self.run)
        except ParleyError as exc:
            self.status.setText(str(exc))
            return None
        self.status.setText(applied.describe())
        return applied

    # -- making sets ---------------------------------------------------------------------------
    def import_dialog(self, path: str | None = None) -> Path | None:
        """Import a JSONL or CSV file as a task set of the user's."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import a task set", str(Path.home()),
                                                  "Task sets (*.jsonl *.csv *.tsv *.json)")
            if not path:
                return None
        try:
            made = self.library.import_file(path)
        except ParleyError as exc:
            self.status.setText(str(exc))
            return None
        self.refresh_sets(made)
        self.status.setText(f"Imported {Path(path).name}.")
        return made

    def documents_dialog(self, folder: str | None = None, name: str | None = None, count: int = 10) -> Any:
        """Propose a task set from a folder of documents, in the background."""
        from desktop_app_lab.from_documents import make_documents_set

        if not self.model_loaded("it proposes the questions."):
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "A folder of your documents", str(Path.home()))
            if not folder:
                return None
        if name is None:
            name, ok = QInputDialog.getText(self, "Task set from documents", "Name of the new task set:",
                                            text=Path(folder).name)
            if not ok or not name.strip():
                return None

        def work(tell: Callable[[str], None], stop: threading.Event) -> Any:
            return make_documents_set(self.context, self.library, Path(folder), name.strip(), count=count,
                                      on_progress=tell, stop=stop)

        def done(path: Any) -> None:
            if path is None:
                self.status.setText("Stopped; no task set was made.")
                return
            self.refresh_sets(path)
            self.status.setText(f"Proposed questions from {Path(folder).name} as {name.strip()!r} ({path}). "
                                "Review them in that file before you trust the scores.")

        return self.start_job(work, done)

    def start_job(self, work: Callable[[Callable[[str], None], threading.Event], Any],
                  done: Callable[[Any], None], failed: str = "{}") -> Any:
        """Run ``work(tell, stop)`` in the background with the window's progress line and Stop
        button, then ``done(result)`` on the GUI thread; a failure's message goes to the status
        line (through ``failed``, a format with one ``{}``). Returns the job."""
        from desktop_app_lab.runner import Progress

        self.stop = threading.Event()
        stop = self.stop
        self._running(True)

        def tell(text: str) -> None:
            self.relay.progress.emit(Progress(0, 0, "", "", text))

        def finished(result: Any) -> None:
            self.job = None
            self._running(False)
            done(result)

        def fail(message: str) -> None:
            self.job = None
            self._running(False)
            self.status.setText(failed.format(message))

        self.job = run_task(lambda: work(tell, stop), finished, fail, owner=self)
        return self.job

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Closing stops a run (it can be resumed) rather than leaving it running unseen."""
        if self.stop is not None:
            self.stop.set()
        super().closeEvent(event)

    def reject(self) -> None:
        """Esc hides the window without a close event: it stops a run all the same."""
        if self.stop is not None:
            self.stop.set()
        super().reject()


def _expected(value: Any) -> str:
    if isinstance(value, list):
        return " / ".join(str(v) for v in value)
    if isinstance(value, dict):
        import json

        return json.dumps(value, ensure_ascii=False)
    return str(value)


def open_lab(window: Any) -> LabWindow:
    """The menu action: show the lab (one window, raised if already open)."""
    from desktop_app_lab import state

    from shiboken6 import isValid

    existing = getattr(state, "window", None)
    if existing is not None and isValid(existing):  # one lab window, shown again after it was closed
        existing.show()
        existing.raise_()
        existing.activateWindow()
        return existing
    lab = LabWindow(window, state.require(), window.widget)
    state.window = lab
    lab.show()
    return lab
