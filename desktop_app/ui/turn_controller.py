"""The turn controller: sends questions, regenerates and stops answers, and shows the worker's
turns, tokens, tool calls and approval requests in the window."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import QWidget

from desktop_app.ui.workers import CURRENT_LEAF

if TYPE_CHECKING:
    from desktop_app.ui.main_window import MainWindow

__all__ = ["TurnController", "answer_trace"]


def answer_trace(store: Any, message_id: int) -> list[dict[str, Any]]:
    """An answer's stored trace entries (its sources and tool calls are shown with it)."""
    trace = store.get_trace(message_id) or {}
    return list(trace.get("entries", []))


class TurnController(QObject):
    """Runs the turns of the window's conversations, one at a time.

    It sends the worker the questions typed in the composer, streams the answer into the
    chat view and puts the window back to rest when the turn ends. Its slots run on the GUI
    thread; the model runs on the worker's thread.

    Signals:
        turn_starting(int): a question is about to go to the model (the conversation's id).
        answer_finished(int): an answer was stored (its message id).
    """

    turn_starting = Signal(int)
    answer_finished = Signal(int)

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self._window = window
        #: The conversation whose answer is being written, if any (one turn at a time).
        self.generating_conversation: int | None = None
        #: What the model has written so far in this turn (redrawn if its conversation is reopened).
        self.stream_text = ""
        self._incremental = False
        #: The open "allow this tool call?" dialog, if any (Stop refuses it).
        self.approval_dialog: QWidget | None = None
        w = window.client.worker
        w.turn_started.connect(self._on_worker_turn_started)
        w.token_received.connect(self._on_worker_token_received)
        w.turn_finished.connect(self._on_worker_turn_finished)
        w.turn_failed.connect(self._on_worker_turn_failed)
        w.tool_call_started.connect(self._on_worker_tool_call_started)
        w.tool_call_finished.connect(self._on_worker_tool_call_finished)
        w.tool_approval_requested.connect(self._on_worker_tool_approval_requested)

    def send(self, text: str, editing=None) -> None:
        """Send ``text``; when ``editing`` an earlier message, the answer starts a new branch."""
        window = self._window
        if self.generating_conversation is not None:
            return
        window.error_banner.hide()
        if window.current_conversation is None:
            engine = window.context.engine
            model = engine.model_path.name if engine.model_path else None
            window.current_conversation = window.context.store.create_conversation(model=model).id
            window.save_state()  # a crash from now on still reopens this new conversation
        parent = editing.parent_id if editing is not None else CURRENT_LEAF
        # A plain follow-up only adds to the view; an edit changes the branch, so it is redrawn.
        self._start_turn(window.current_conversation, incremental=editing is None)
        window.client.send_requested.emit(window.current_conversation, text, parent, None)

    def regenerate(self) -> None:
        """Answer the last question of the open conversation again (a new branch)."""
        window = self._window
        if self.generating_conversation is not None or window.current_conversation is None:
            return
        if not any(m.role == "user" for m in window.context.store.history(window.current_conversation)):
            return
        window.error_banner.hide()
        self._start_turn(window.current_conversation, incremental=False)
        window.client.regenerate_requested.emit(window.current_conversation, None)

    def stop(self) -> None:
        """Stop the answer being written (the partial answer is kept)."""
        if self.generating_conversation is not None:
            self._window.client.cancel()
        if self.approval_dialog is not None:
            self.approval_dialog.reject()  # a pending tool call is refused

    def _start_turn(self, conversation_id: int, *, incremental: bool) -> None:
        window = self._window
        self.turn_starting.emit(conversation_id)
        window.context.engine.reset_cancel()  # a Stop from before this turn must not end it
        self.generating_conversation = conversation_id
        window.sidebar.busy_conversation = conversation_id
        self.stream_text = ""
        self._incremental = incremental
        window.composer.set_busy(True)

    @Slot(int, int, int)
    def _on_worker_turn_started(self, conversation_id: int, user_id: int, answer_id: int) -> None:
        window = self._window
        window.sidebar.refresh(select=window.current_conversation)
        if conversation_id != window.current_conversation:
            return
        if not self._incremental:
            window.show_conversation(conversation_id)
            return
        # Redrawing a long conversation would freeze the window: add just the new messages.
        store = window.context.store
        view = window.chat_view
        if view.widgets and view.widgets[-1].message.role == "assistant":
            previous = view.widgets[-1]
            view.replace_message(previous, previous.message,
                                 [m.id for m in store.siblings(previous.message)], last=False)
        view.add_message(store.get_message(user_id))
        view.begin_stream(store.get_message(answer_id))

    @Slot(int, str)
    def _on_worker_token_received(self, conversation_id: int, text: str) -> None:
        self.stream_text += text
        if conversation_id == self._window.current_conversation:
            self._window.chat_view.append_text(text)

    @Slot(int, int, object)
    def _on_worker_turn_finished(self, conversation_id: int, message_id: int, result: Any) -> None:
        window = self._window
        self._end_turn(conversation_id, message_id)
        s = result.stats
        window.speed_label.setText(
            f"{s.get('tokens_per_second', 0):.1f} tokens/s · first token {s.get('time_to_first_token', 0):.2f} s"
        )
        used = s.get("prompt_tokens", 0) + s.get("generated_tokens", 0)
        dropped = s.get("dropped_messages", 0)
        window.context_label.setText(
            f"· context {used:,} / {s.get('context_length', 0):,}"
            + (f" · {dropped} oldest messages left out" if dropped else "")
        )
        window.plugin_ui.report_failures()
        # Plugins' notes about this turn (e.g. a template that could not be applied) are shown.
        notes = [f"{e['plugin']}: {e['content']}" for e in answer_trace(window.context.store, message_id)
                 if e.get("kind") == "note"]
        if notes:
            window.show_error("\n".join(notes))
        self.answer_finished.emit(message_id)

    @Slot(int, object)
    def _on_worker_tool_call_started(self, conversation_id: int, event: Any) -> None:
        if conversation_id == self._window.current_conversation:
            self._window.chat_view.show_activity(f"calling {event.call.name}…")

    @Slot(int, object)
    def _on_worker_tool_call_finished(self, conversation_id: int, outcome: Any) -> None:
        if conversation_id == self._window.current_conversation:
            state = "failed" if outcome.error else "done"
            self._window.chat_view.show_activity(f"{outcome.call.name}: {state} — writing…")

    @Slot(object)
    def _on_worker_tool_approval_requested(self, request: Any) -> None:
        from desktop_app.ui.tool_approval import ToolApprovalDialog

        window = self._window
        if request.conversation_id == window.current_conversation:
            window.chat_view.show_activity(f"waiting for your approval of {request.call.name}…")
        dialog = ToolApprovalDialog(request, window)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        self.approval_dialog = dialog
        dialog.finished.connect(lambda _=0: setattr(self, "approval_dialog", None))
        # Not modal: the window (its Stop button, other conversations) stays usable meanwhile.
        dialog.show()

    @Slot(int, str)
    def _on_worker_turn_failed(self, conversation_id: int, error: str) -> None:
        self._end_turn(conversation_id, None)
        self._window.show_error(error)

    def _end_turn(self, conversation_id: int, message_id: int | None) -> None:
        window = self._window
        self.generating_conversation = None
        window.sidebar.busy_conversation = None
        window.composer.set_busy(False)
        if conversation_id == window.current_conversation:
            streamed = window.chat_view.end_stream()
            if self._incremental and streamed is not None and message_id is not None:
                store = window.context.store
                answer = store.get_message(message_id)
                window.chat_view.replace_message(streamed, answer, [m.id for m in store.siblings(answer)], last=True,
                                                 trace=answer_trace(store, message_id))
            else:
                window.show_conversation(conversation_id)
        window.sidebar.refresh(select=window.current_conversation)
