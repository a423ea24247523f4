"""The LoRA panel: the adapter library, which adapters the open conversation uses and how strongly,
adding, removing, converting, training and finding adapters on the hub, and the active set in the status bar.

Nothing here waits on the model: compatibility is read from the GGUF headers (milliseconds),
adapters reach llama.cpp with the next answer on the engine's own thread, and converting and
training run in the background.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop_app.ui.api import add_button_row, add_job_controls, run_task
from desktop_app_lora import state
from desktop_app_lora.library import MAX_SCALE, Choice
from desktop_app_lora.ui_train import TrainDialog, TrainingJob, progress_text

__all__ = ["AdapterRow", "LoraPanel", "status_text"]

#: Slider steps per 1.0 of scale.
STEPS = 100


def status_text(adapters: list[tuple[str, float]]) -> str:
    """The status bar's words for the adapters in use."""
    if not adapters:
        return ""
    return "LoRA: " + " + ".join(f"{name} ×{scale:.2f}".rstrip("0").rstrip(".") for name, scale in adapters)


class AdapterRow(QWidget):
    """One adapter: a tick to use it, a scale slider (0–2), and its metadata.

    Signals:
        changed(): the tick or the scale changed.
        remove_requested(str): the user asked to remove this adapter (its name).
    """

    changed = Signal()
    remove_requested = Signal(str)

    def __init__(self, name: str, details: str, problem: str | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.name = name
        self.problem = problem
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 3, 4, 3)
        layout.setSpacing(1)
        top = QHBoxLayout()
        self.check = QCheckBox(name)
        self.check.setAccessibleName(f"Use {name}")
        self.scale_label = QLabel()
        self.scale_label.setMinimumWidth(40)
        self.scale_label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.remove_button = QToolButton(text="✕")
        self.remove_button.setAutoRaise(True)
        self.remove_button.setToolTip(f"Remove {name} from the library")
        self.remove_button.setAccessibleName(f"Remove {name}")
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self.name))
        top.addWidget(self.check, 1)
        top.addWidget(self.scale_label)
        top.addWidget(self.remove_button)
        layout.addLayout(top)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, int(MAX_SCALE * STEPS))
        self.slider.setSingleStep(5)
        self.slider.setPageStep(25)
        self.slider.setAccessibleName(f"Scale of {name}")
        self.slider.setToolTip("How strongly the adapter acts: 0 = off, 1 = as trained, 2 = twice as strong.")
        layout.addWidget(self.slider)
        self.details = QLabel(details if problem is None else f"{details}\n⚠ Does not fit the loaded model. {problem}")
        self.details.setWordWrap(True)
        self.details.setStyleSheet("color: palette(mid); font-size: 90%;" if problem is None
                                   else "color: #c0392b; font-size: 90%;")
        layout.addWidget(self.details)
        if problem is not None:
            self.setToolTip(problem)
        self.set_scale(1.0)
        self.check.toggled.connect(self._on_check_toggled)
        self.slider.valueChanged.connect(self._on_slider_value_changed)

    @property
    def scale(self) -> float:
        """The slider's scale."""
        return self.slider.value() / STEPS

    def set_scale(self, scale: float) -> None:
        """Move the slider without announcing a change."""
        self.slider.blockSignals(True)
        self.slider.setValue(round(scale * STEPS))
        self.slider.blockSignals(False)
        self._show_scale()

    def set_checked(self, checked: bool) -> None:
        """Tick or untick without announcing a change."""
        self.check.blockSignals(True)
        self.check.setChecked(checked)
        self.check.blockSignals(False)
        self._show_scale()

    def _show_scale(self) -> None:
        self.scale_label.setText(f"×{self.scale:.2f}")
        self.slider.setEnabled(self.check.isChecked())
        # An adapter that cannot be used has no strength to set.
        self.slider.setVisible(self.problem is None or self.check.isChecked())
        self.scale_label.setVisible(self.problem is None or self.check.isChecked())

    def _on_check_toggled(self, _checked: bool) -> None:
        self._show_scale()
        self.changed.emit()

    def _on_slider_value_changed(self, _value: int) -> None:
        self._show_scale()
        self.changed.emit()


class LoraPanel(QWidget):
    """Choose, scale, add, remove, convert and train adapters without blocking the window."""

    def __init__(self, context: Any, window: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.context = context
        self.window = window
        self.setObjectName("loraPanel")
        self.rows: dict[str, AdapterRow] = {}
        layout = QVBoxLayout(self)
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        layout.addWidget(self.hint)
        # Rows in a scroll area (not a list view) so they follow the panel's width and wrap.
        self.list = QScrollArea()
        self.list.setWidgetResizable(True)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.list.setAccessibleName("LoRA adapters")
        self.rows_box = QWidget()
        self.rows_layout = QVBoxLayout(self.rows_box)
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.setSpacing(0)
        self.rows_layout.addStretch(1)
        self.list.setWidget(self.rows_box)
        layout.addWidget(self.list, 1)
        self.empty = QLabel("No adapters yet. Add a GGUF LoRA file, convert a PEFT adapter, or train one on "
                            "your own examples.")
        self.empty.setWordWrap(True)
        layout.addWidget(self.empty)
        self.add_button = QPushButton("Add…")
        self.convert_button = QPushButton("Convert…")
        self.train_button = QPushButton("Train…")
        self.add_button.setToolTip("Copy a GGUF LoRA adapter into the library.")
        self.convert_button.setToolTip("Convert a PEFT adapter folder (adapter_config.json + "
                                       "adapter_model.safetensors) for the loaded model.")
        self.train_button.setToolTip("Train an adapter on answers of this conversation or on a JSONL file.")
        add_button_row(layout, self.add_button, self.convert_button, self.train_button)
        self.hub_button = QPushButton("Find adapters on the hub…")
        self.hub_button.setToolTip("Search the model hub for LoRA adapters for the loaded model, see whether "
                                   "each fits before downloading, and download one.")
        add_button_row(layout, self.hub_button)
        self.progress, self.status, self.cancel_button = add_job_controls(
            layout, "Training progress", "Cancel training")

        # The active set, where the speed and context figures are.
        self.status_label = QLabel()
        self.status_label.setObjectName("loraStatus")
        self.status_label.hide()
        window.add_status_widget(self.status_label)

        self.job = TrainingJob(self)
        self.job.progressed.connect(self._on_job_progressed)
        self.job.finished.connect(self._on_job_finished)
        self.job.failed.connect(self._on_job_failed)
        self.add_button.clicked.connect(self.add_dialog)
        self.convert_button.clicked.connect(self.convert_dialog)
        self.train_button.clicked.connect(lambda: self.open_train_dialog(from_conversation=False))
        self.hub_button.clicked.connect(self.open_hub_dialog)
        self.cancel_button.clicked.connect(self.job.cancel)
        window.conversation_shown.connect(self._on_window_conversation_shown)
        window.model_ready.connect(self._on_window_model_ready)
        window.answer_finished.connect(self._on_window_answer_finished)
        window.turn_starting.connect(self._on_window_turn_starting)
        # Slider drags change the scale many times a second; it is stored once they settle
        # (or at once when a question is sent meanwhile).
        self._save_timer = QTimer(self, singleShot=True, interval=300)
        self._save_timer.timeout.connect(self.save_choice)
        self.dialog: TrainDialog | None = None
        self.hub_dialog: Any = None
        self._shown: int | None = None
        self.refresh()

    # -- the list -------------------------------------------------------------------------
    def model_path(self) -> Path | None:
        """The loaded model (adapters are checked against it), or None."""
        model = self.context.model
        return model.path if model.loaded else None

    def refresh(self) -> None:
        """Rebuild the list: every adapter, ticked and scaled as the open conversation uses it."""
        conversation = self._shown = self.window.current_conversation
        choices, _ = state.choices_for(conversation)
        chosen = {c.name: c.scale for c in choices}
        model = self.model_path()
        for row in self.rows.values():
            row.deleteLater()
        self.rows = {}
        for entry in state.library.entries():
            info = entry.info or {}
            details = (f"{info.get('architecture', '?')} · rank {info.get('rank', '?')} · alpha "
                       f"{info.get('alpha', 0):g} · {', '.join(info.get('targets', []))} · "
                       f"{info.get('file_size', 0) / 1e6:.1f} MB")
            if info.get("base_model"):
                details += f" · made for {info['base_model']}"
            problem = state.fits(entry.name, model) if model is not None else None
            row = AdapterRow(entry.name, details, problem)
            row.setToolTip(f"{entry.source}\n{state.library.path(entry)}")
            row.set_checked(entry.name in chosen)
            row.set_scale(chosen.get(entry.name, 1.0))
            # A misfit stays tickable only to untick it (a conversation may have chosen it earlier).
            row.check.setEnabled(problem is None or entry.name in chosen)
            row.changed.connect(self._on_row_changed)
            row.remove_requested.connect(self.remove_asking)
            row.remove_button.setVisible(entry.plugin is None)  # a plugin's adapter goes with the plugin
            self.rows_layout.insertWidget(self.rows_layout.count() - 1, row)
            self.rows[entry.name] = row
        self.empty.setVisible(not self.rows)
        self.list.setVisible(bool(self.rows))
        self.hint.setText("Tick the adapters this conversation uses; the slider sets how strongly (0–2)."
                          if conversation is not None else
                          "Tick the adapters new conversations start with; the slider sets how strongly (0–2).")
        self.show_status([(c.name, c.scale) for c in choices if c.scale > 0])

    def choices(self) -> list[Choice]:
        """The ticked adapters with their scales, in list order."""
        return [Choice(name, row.scale) for name, row in self.rows.items() if row.check.isChecked()]

    def _on_row_changed(self) -> None:
        sender = self.sender()
        if isinstance(sender, AdapterRow) and sender.check.isChecked() and sender.problem:
            # Refused before it reaches the model: say why, and leave it unticked.
            sender.set_checked(False)
            self.window.show_error(sender.problem)
            return
        self.show_status([(c.name, c.scale) for c in self.choices() if c.scale > 0])
        self._save_timer.start()

    def save_choice(self) -> None:
        """Store the ticked adapters for the conversation they were set in (or for new ones)."""
        self._save_timer.stop()
        state.remember(self._shown, self.choices())

    def show_status(self, adapters: list[tuple[str, float]]) -> None:
        """Show the adapters in use in the status bar (hidden when there are none)."""
        text = status_text(adapters)
        self.status_label.setText(text)
        self.status_label.setToolTip("LoRA adapters of this conversation, with their scales")
        self.status_label.setVisible(bool(text))

    def _on_window_conversation_shown(self, _conversation_id: Any) -> None:
        if self._save_timer.isActive():
            # A scale still settling belongs to the conversation it was set in: keep it there.
            self.save_choice()
        self.refresh()

    def _on_window_turn_starting(self, _conversation_id: int) -> None:
        if self._save_timer.isActive():
            self.save_choice()  # the question goes with the scale the user sees

    def _on_window_model_ready(self, _path: str) -> None:
        self.refresh()
        if state.notices:
            self.window.show_error("\n".join(state.notices))
            state.notices = []

    def _on_window_answer_finished(self, message_id: int) -> None:
        if self.window.current_conversation != self._shown:
            self.refresh()  # a new chat became a stored conversation with its first answer
        # What the answer really used (an adapter may have been left out, with a note).
        trace = self.context.conversations.trace(message_id) or {}
        used = [(e["content"]["name"], e["content"]["scale"]) for e in trace.get("entries", [])
                if e.get("kind") == "adapter" and isinstance(e.get("content"), dict)]
        self.show_status(used)

    # -- adding and removing --------------------------------------------------------------
    def add_dialog(self) -> None:
        """Pick GGUF LoRA files and add them."""
        paths, _ = QFileDialog.getOpenFileNames(self, "Add LoRA adapters", str(Path.home()),
                                                "GGUF LoRA adapters (*.gguf);;All files (*)")
        for path in paths:
            self.add(path)

    def add(self, path: str, name: str | None = None) -> Any:
        """Add one adapter file (copied in the background); errors are shown, nothing is lost."""
        self.status.setText(f"Adding {Path(path).name}…")

        def done(entry: Any) -> None:
            self.status.setText(f"Added {entry.name}.")
            self.refresh()

        def failed(message: str) -> None:
            self.status.setText("")
            self.window.show_error(message)

        return run_task(lambda: state.library.add(path, name=name), done, failed)

    def remove_asking(self, name: str) -> None:
        """Remove an adapter (its copy is deleted) after asking."""
        if QMessageBox.question(self, "Remove adapter",
                                f"Remove “{name}” from the library? Its copy in Parley's data folder is "
                                "deleted.") != QMessageBox.Yes:
            return
        self.remove(name)

    def remove(self, name: str) -> None:
        """Remove an adapter now; conversations that used it answer without it."""
        from desktop_app_lora.adapters import AdapterError

        try:
            entry = state.library.remove(name)
        except AdapterError as exc:
            self.window.show_error(str(exc))
            return
        path = state.library.path(entry)
        # Free llama.cpp's copy off the GUI thread (the engine may be busy answering).
        run_task(lambda: self.context.model.release_adapter(path), lambda _: None, lambda _: None)
        if name in self.rows and self.rows[name].check.isChecked():
            state.remember(self.window.current_conversation, [c for c in self.choices() if c.name != name])
        self.status.setText(f"Removed {name}.")
        self.refresh()

    # -- converting -----------------------------------------------------------------------
    def convert_dialog(self) -> None:
        """Pick a PEFT adapter folder and convert it for the loaded model."""
        folder = QFileDialog.getExistingDirectory(self, "PEFT adapter folder (adapter_config.json + "
                                                  "adapter_model.safetensors)")
        if not folder:
            return
        name, ok = QInputDialog.getText(self, "Convert adapter", "Adapter name:", text=Path(folder).name)
        if ok and name.strip():
            self.convert(folder, name.strip())

    def convert(self, folder: str, name: str) -> Any:
        """Convert in the background and add the result to the library."""
        import tempfile

        from desktop_app_lora.convert import convert_peft_adapter

        model = self.model_path()
        if model is None:
            self.window.show_error("Load a model first: the adapter is converted for the loaded model.")
            return None
        cache = self.context.cache_dir
        self.status.setText(f"Converting {Path(folder).name}…")

        def work() -> Any:
            with tempfile.TemporaryDirectory(prefix="parley-convert-", dir=cache) as tmp:
                out = Path(tmp) / "adapter.gguf"
                convert_peft_adapter(folder, out, model, name=name)
                return state.library.add(out, name=name, move=True, source=f"converted from {folder}")

        def done(entry: Any) -> None:
            self.status.setText(f"Converted and added {entry.name}.")
            self.refresh()

        def failed(message: str) -> None:
            self.status.setText("")
            self.window.show_error(message)

        return run_task(work, done, failed)

    # -- the hub --------------------------------------------------------------------------
    def open_hub_dialog(self) -> Any:
        """Open “Find adapters on the hub…” for the loaded model (None, with a message, without one)."""
        from desktop_app_lora.ui_hub import HubAdapterDialog

        model = self.model_path()
        if model is None:
            self.window.show_error("Load a model first: adapters are searched for, and checked against, "
                                   "the loaded model.")
            return None
        if self.hub_dialog is not None:
            if self.hub_dialog.model_path == model:
                self.hub_dialog.show()
                self.hub_dialog.raise_()
                return self.hub_dialog
            self.hub_dialog.close()
        self.hub_dialog = HubAdapterDialog(self.context, model, self.window.widget)
        self.hub_dialog.adapter_added.connect(self._on_hub_dialog_adapter_added)
        self.hub_dialog.show()
        return self.hub_dialog

    def _on_hub_dialog_adapter_added(self, entry: Any) -> None:
        self.status.setText(f"Downloaded {entry.name}.")
        self.refresh()

    # -- training -------------------------------------------------------------------------
    def open_train_dialog(self, from_conversation: bool = False) -> TrainDialog:
        """Open the training dialog ("teach it this" starts from the open conversation's answers)."""
        if self.dialog is not None:
            self.dialog.close()
        self.dialog = TrainDialog(self.job, self.window, self.window.current_conversation, self.window.widget)
        if not from_conversation:
            self.dialog.from_file.setChecked(True)
        self.dialog.show()
        return self.dialog

    def _on_job_progressed(self, p: Any) -> None:
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.train_button.setEnabled(False)
        if p.total_steps:
            self.progress.setRange(0, p.total_steps)
            self.progress.setValue(p.step)
        else:
            self.progress.setRange(0, 0)
        self.status.setText(f"{self.job.name}: {progress_text(p)}")

    def _training_ended(self) -> None:
        self.progress.hide()
        self.cancel_button.hide()
        self.train_button.setEnabled(True)

    def _on_job_finished(self, entry: Any, result: Any) -> None:
        self._training_ended()
        self.status.setText(f"Trained {entry.name}: {result.steps} steps in {result.seconds:.0f} s, "
                            f"final loss {result.final_loss:.4f}.")
        if self.job.apply:
            choices, _ = state.choices_for(self.job.conversation_id)
            choices = [c for c in choices if c.name != entry.name] + [Choice(entry.name, 1.0)]
            state.remember(self.job.conversation_id, choices)
        self.refresh()

    def _on_job_failed(self, message: str) -> None:
        self._training_ended()
        if self.job.cancelled:
            self.status.setText(message)
        else:
            self.status.setText("Training failed.")
            self.window.show_error(message)
