"""Training from the window: the background job and the dialog that starts and follows it.

The job trains in a child process (see :mod:`desktop_app_lora.train_process`), waiting for it
on a plain thread, and reports through Qt signals, which arrive on the GUI thread; Cancel sets
an event the trainer checks between steps. The result is added to the library here.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop_app.api import ParleyError
from desktop_app_lora import state
from desktop_app_lora.convert import MODULES

log = logging.getLogger(__name__)

__all__ = ["TrainDialog", "TrainingJob", "progress_text"]


def progress_text(p: Any) -> str:
    """One line about a TrainProgress: step, loss, time left."""
    loss = f" · loss {p.loss:.4f}" if p.loss is not None else ""
    eta = f" · about {p.eta:.0f} s left" if p.eta else ""
    return f"{p.message}{loss}{eta}"


class TrainingJob(QObject):
    """One training run in the background.

    Signals:
        progressed(object): a TrainProgress.
        finished(object, object): the library entry and the TrainResult.
        failed(str): why training failed, or that it was cancelled (``cancelled`` is True then).
    """

    progressed = Signal(object)
    finished = Signal(object, object)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = False
        self.cancelled = False
        self.name = ""
        self.conversation_id: int | None = None
        self.apply = False
        self.started_at = 0.0
        self.last: Any = None

    @property
    def running(self) -> bool:
        """Whether training is going on."""
        return self._busy

    def start(self, model_path: Path, chats: list, name: str, config: Any, *,
              conversation_id: int | None = None, apply: bool = False) -> None:
        """Train in a child process; the signals report progress and the outcome."""
        from desktop_app_lora.train import TrainingCancelled
        from desktop_app_lora.train_process import train_in_subprocess

        if self.running:
            raise RuntimeError("a training run is already going on")
        self._cancel.clear()
        self._busy = True
        self.cancelled = False
        self.name, self.conversation_id, self.apply = name, conversation_id, apply
        self.started_at = time.monotonic()
        library, cache = state.library, state.context.cache_dir

        def report(progress: Any) -> None:
            self.last = progress
            self._emit(self.progressed, progress)

        def train() -> tuple[Any, Any]:
            work = Path(tempfile.mkdtemp(prefix="parley-lora-", dir=cache))
            try:
                out = work / "adapter.gguf"
                result = train_in_subprocess(model_path, chats, out, name, config, progress=report,
                                             cancel=self._cancel)
                if self._cancel.is_set():
                    raise TrainingCancelled("Training was cancelled; nothing was added.")
                entry = library.add(out, name=name, move=True,
                                    source=f"trained in Parley on {result.examples} examples")
                return entry, result
            finally:
                shutil.rmtree(work, ignore_errors=True)

        def run() -> None:
            outcome: tuple[Any, ...]
            try:
                entry, result = train()
            except TrainingCancelled as exc:
                self.cancelled = True
                outcome = (self.failed, str(exc))
            except ParleyError as exc:
                outcome = (self.failed, str(exc))
            except Exception as exc:  # reported in the window; the app goes on
                log.exception("training failed")
                outcome = (self.failed, f"Training failed: {type(exc).__name__}: {exc}")
            else:
                outcome = (self.finished, entry, result)
            # Free for the next run before anyone hears the news (they may start one at once).
            self._busy = False
            self._emit(*outcome)

        self._thread = threading.Thread(target=run, name="parley-lora-training", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop before the next training step; nothing is added."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (tests, shutdown); True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    @staticmethod
    def _emit(signal: Any, *args: Any) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # the window closed meanwhile: nobody is listening
            pass


class TrainDialog(QDialog):
    """Pick examples (answers of a conversation, or a JSONL file), settings, and train.

    The dialog follows the panel's training job: progress bar, live loss, Cancel. Closing it
    does not stop training; the panel keeps showing progress.
    """

    def __init__(self, job: TrainingJob, window: Any, conversation_id: int | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.job = job
        self.window_ = window
        self.conversation_id = conversation_id
        self.setWindowTitle("Train a LoRA adapter")
        self.setObjectName("loraTrainDialog")
        self.resize(620, 640)
        layout = QVBoxLayout(self)

        source_row = QHBoxLayout()
        self.from_conversation = QRadioButton("Answers from this conversation")
        self.from_file = QRadioButton("A JSONL file of chats")
        group = QButtonGroup(self)
        group.addButton(self.from_conversation)
        group.addButton(self.from_file)
        source_row.addWidget(self.from_conversation)
        source_row.addWidget(self.from_file)
        source_row.addStretch(1)
        layout.addLayout(source_row)

        self.pairs = QListWidget()
        self.pairs.setAccessibleName("Answers to learn")
        self.pairs.setWordWrap(True)
        layout.addWidget(self.pairs, 2)
        self.answer_edit = QPlainTextEdit()
        self.answer_edit.setAccessibleName("Answer to learn")
        self.answer_edit.setPlaceholderText("Pick an answer above; change it here to teach the model a better one.")
        self.answer_edit.setMaximumHeight(90)
        layout.addWidget(self.answer_edit)

        file_row = QHBoxLayout()
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText('One chat per line: {"messages": [{"role": "user", ...}, ...]}')
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        file_row.addWidget(self.file_edit, 1)
        file_row.addWidget(browse)
        self.file_box = QWidget()
        self.file_box.setLayout(file_row)
        layout.addWidget(self.file_box)

        from desktop_app_lora.cli import config_from_settings

        defaults = config_from_settings(state)
        form = QFormLayout()
        self.name_edit = QLineEdit()
        form.addRow("Adapter name", self.name_edit)
        self.rank = _spin(QSpinBox(), 1, 256, defaults.rank)
        self.alpha = _spin(QDoubleSpinBox(), 0.5, 1024, defaults.alpha, decimals=1)
        self.learning_rate = _spin(QDoubleSpinBox(), 0.00001, 0.1, defaults.learning_rate, decimals=5, step=0.0005)
        self.epochs = _spin(QSpinBox(), 0, 1000, defaults.epochs)
        self.epochs.setSpecialValueText("auto")
        self.epochs.setToolTip("Passes over the examples. Auto: enough for at least 16 training steps.")
        numbers = QHBoxLayout()
        for label, widget in (("Rank", self.rank), ("Alpha", self.alpha), ("Learning rate", self.learning_rate),
                              ("Epochs", self.epochs)):
            numbers.addWidget(QLabel(label))
            numbers.addWidget(widget)
        form.addRow(numbers)
        targets = QGridLayout()
        self.targets: dict[str, QCheckBox] = {}
        for i, module in enumerate(MODULES):
            box = QCheckBox(module)
            box.setChecked(module in defaults.target_modules)
            self.targets[module] = box
            targets.addWidget(box, i // 4, i % 4)
        form.addRow("Layers that learn", targets)
        self.apply_box = QCheckBox("Use it in this conversation when done")
        self.apply_box.setChecked(True)
        form.addRow(self.apply_box)
        self._batch_size, self._max_length = defaults.batch_size, defaults.max_length
        layout.addLayout(form)

        self.progress = QProgressBar()
        self.progress.setAccessibleName("Training progress")
        self.progress_label = QLabel()
        self.progress_label.setWordWrap(True)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.train_button = QPushButton("Train")
        self.train_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel training")
        self.close_button = QPushButton("Close")
        for b in (self.train_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)

        self.train_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(job.cancel)
        self.close_button.clicked.connect(self.close)
        self.from_conversation.toggled.connect(self._show_source)
        self.pairs.currentItemChanged.connect(self._on_pairs_current_changed)
        self.answer_edit.textChanged.connect(self._on_answer_edited)
        job.progressed.connect(self._on_job_progressed)
        job.finished.connect(self._on_job_finished)
        job.failed.connect(self._on_job_failed)

        self._fill_pairs()
        has_pairs = self.pairs.count() > 0
        self.from_conversation.setEnabled(has_pairs)
        (self.from_conversation if has_pairs else self.from_file).setChecked(True)
        self._show_source()
        self._show_running(job.running)
        if job.running and job.last is not None:
            self._on_job_progressed(job.last)

    # -- examples -------------------------------------------------------------------------
    def _fill_pairs(self) -> None:
        from desktop_app_lora.data import question_answer_pairs

        if self.conversation_id is None:
            return
        pairs = question_answer_pairs(state.context.conversations, self.conversation_id)
        for n, (answer_id, question, answer) in enumerate(pairs):
            item = QListWidgetItem(_pair_label(question, answer))
            item.setData(Qt.UserRole, (answer_id, question, answer))
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            # The last answer is the one "teach it this" is usually about.
            item.setCheckState(Qt.Checked if n == len(pairs) - 1 else Qt.Unchecked)
            self.pairs.addItem(item)
        if pairs:
            self.pairs.setCurrentRow(len(pairs) - 1)
            self.name_edit.setText(_unused_name(_suggest_name(pairs[-1][1])))

    def _on_pairs_current_changed(self, item: QListWidgetItem | None, _previous: Any = None) -> None:
        self.answer_edit.blockSignals(True)
        self.answer_edit.setPlainText(item.data(Qt.UserRole)[2] if item is not None else "")
        self.answer_edit.blockSignals(False)

    def _on_answer_edited(self) -> None:
        item = self.pairs.currentItem()
        if item is None:
            return
        answer_id, question, _ = item.data(Qt.UserRole)
        answer = self.answer_edit.toPlainText()
        item.setData(Qt.UserRole, (answer_id, question, answer))
        item.setText(_pair_label(question, answer))
        item.setCheckState(Qt.Checked)  # an answer someone corrected is one to learn

    def _show_source(self) -> None:
        conversation = self.from_conversation.isChecked()
        self.pairs.setVisible(conversation)
        self.answer_edit.setVisible(conversation)
        self.file_box.setVisible(not conversation)
        self.apply_box.setText("Use it in this conversation when done" if self.conversation_id is not None
                               else "Use it in new conversations when done")

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Training examples", str(Path.home()),
                                              "JSON Lines (*.jsonl *.json);;All files (*)")
        if path:
            self.file_edit.setText(path)
            if not self.name_edit.text().strip():
                self.name_edit.setText(_unused_name(Path(path).stem))

    def examples(self) -> list:
        """The chats to learn from (DataError when there are none or the file is bad)."""
        from desktop_app_lora.data import DataError, load_jsonl, with_system_prompt

        model = state.context.model.path
        if self.from_conversation.isChecked():
            chats = []
            for i in range(self.pairs.count()):
                item = self.pairs.item(i)
                if item.checkState() == Qt.Checked:
                    _, question, answer = item.data(Qt.UserRole)
                    if answer.strip():
                        chats.append([{"role": "user", "content": question}, {"role": "assistant", "content": answer}])
            if not chats:
                raise DataError("Tick at least one answer to learn.")
            conversation = state.context.conversations.get(self.conversation_id)
            system = conversation.system_prompt or state.system_prompt_for(model)
        else:
            if not self.file_edit.text().strip():
                raise DataError("Choose a JSONL file of chats to learn from.")
            chats = load_jsonl(self.file_edit.text().strip())
            system = state.system_prompt_for(model)
        return with_system_prompt(chats, system)

    def config(self) -> Any:
        """The TrainConfig the form describes."""
        from desktop_app_lora.train import TrainConfig

        return TrainConfig(rank=self.rank.value(), alpha=self.alpha.value(),
                           learning_rate=self.learning_rate.value(), epochs=self.epochs.value(),
                           target_modules=tuple(m for m, box in self.targets.items() if box.isChecked()),
                           batch_size=self._batch_size, max_length=self._max_length)

    # -- running --------------------------------------------------------------------------
    def start(self) -> None:
        """Check the form and start training; problems are shown in the dialog."""
        if self.job.running:
            self.progress_label.setText("A training run is going on; wait for it or cancel it first.")
            return
        model = state.context.model
        name = self.name_edit.text().strip()
        try:
            if not model.loaded or model.path is None:
                raise ParleyError("Load a model first: the adapter is trained for the loaded model.")
            if not name:
                raise ParleyError("Give the adapter a name.")
            if state.library.find(name):
                raise ParleyError(f"There already is an adapter called “{name}”; pick another name.")
            config = self.config()
            config.validate()
            chats = self.examples()
        except ParleyError as exc:
            self.progress_label.setText(str(exc))
            return
        self.job.start(model.path, chats, name, config, conversation_id=self.conversation_id,
                       apply=self.apply_box.isChecked())
        self.progress_label.setText(f"Training {name} on {len(chats)} examples…")
        self._show_running(True)

    def _show_running(self, running: bool) -> None:
        self.train_button.setEnabled(not running)
        self.cancel_button.setVisible(running)
        self.progress.setVisible(running)
        if running:
            self.progress.setRange(0, 0)

    def _on_job_progressed(self, p: Any) -> None:
        if p.total_steps:
            self.progress.setRange(0, p.total_steps)
            self.progress.setValue(p.step)
        self.progress_label.setText(progress_text(p))

    def _on_job_finished(self, entry: Any, result: Any) -> None:
        self._show_running(False)
        self.progress_label.setText(f"Trained “{entry.name}” in {result.seconds:.0f} s: {result.steps} steps on "
                                    f"{result.device}, final loss {result.final_loss:.4f}. It is in the library.")

    def _on_job_failed(self, message: str) -> None:
        self._show_running(False)
        self.progress_label.setText(message)


def _pair_label(question: str, answer: str) -> str:
    def short(text: str, n: int) -> str:
        text = " ".join(text.split())
        return text if len(text) <= n else text[:n - 1] + "…"

    return f"Q: {short(question, 90)}\nA: {short(answer, 140)}"


_SMALL_WORDS = frozenset("a an and are can could do does for how i is it me my of on please say tell the "
                         "to what what's which who why when where would you your".split())


def _suggest_name(question: str) -> str:
    """A name from the question's telling words: "What is the secret word?" -> "secret-word"."""
    words = "".join(ch if ch.isalnum() or ch == "'" else " " for ch in question.lower()).split()
    return "-".join([w for w in words if w not in _SMALL_WORDS][:4]) or "taught"


def _unused_name(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``… if the library already has it."""
    name, n = base, 2
    while state.library.find(name):
        name, n = f"{base}-{n}", n + 1
    return name


def _spin(box: Any, minimum: float, maximum: float, value: float, *, decimals: int | None = None,
          step: float | None = None) -> Any:
    """Set up a spin box in the order Qt needs (decimals before the value, or the value is rounded)."""
    if decimals is not None:
        box.setDecimals(decimals)
    box.setRange(minimum, maximum)
    if step is not None:
        box.setSingleStep(step)
    box.setValue(value)
    return box
