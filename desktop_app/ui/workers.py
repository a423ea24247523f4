"""The only place that knows about Qt threads: it bridges the core's blocking calls to signals.

- :class:`EngineWorker` lives on one long-lived QThread and owns every call into the model:
  loading, running turns, and plugins' model calls (``PluginContext.complete``), one after
  the other. Requests arrive as queued signals from :class:`EngineClient`;
  results go back as signals, so widgets are only ever touched on the GUI thread.
  Cancelling calls :meth:`Engine.cancel` directly: it is thread-safe and takes effect
  before the next token.
- :func:`run_task` runs any other slow function (reading model metadata, ...) on the global
  thread pool and reports back through signals.
"""

from __future__ import annotations

import logging
import threading
import traceback
from concurrent.futures import Future
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, Qt, QThread, QThreadPool, Signal, Slot

from desktop_app.core.chat import ToolCallFinished, ToolCallStarted, TurnFailed, TurnFinished, TurnStarted
from desktop_app.core.engine import TokenEvent
from desktop_app.core.errors import EngineError, ParleyError
from desktop_app.core.plugin_context import mark_engine_thread
from desktop_app.ui.tool_approval import ApprovalRequest

__all__ = ["EngineClient", "EngineWorker", "run_task"]

log = logging.getLogger(__name__)

#: Sentinel for "continue from the conversation's current leaf".
CURRENT_LEAF = "current"


class EngineWorker(QObject):
    """Runs model work on its own thread.

    Signals:
        model_load_started(str): a model name or path started loading.
        model_loaded(str, object, list): path, ModelInfo (or None), warnings.
        model_load_failed(str): readable reason; the previous model (if any) is still loaded.
        turn_started(int, int, int): conversation, user message id, answer message id.
        token_received(int, str): conversation, a piece of the answer.
        turn_finished(int, int, object): conversation, answer message id, TurnResult.
        turn_failed(int, str): conversation, readable reason.
        tool_call_started(int, object): conversation, ToolCallStarted.
        tool_call_finished(int, object): conversation, ToolOutcome.
        tool_approval_requested(object): an ApprovalRequest the window must answer.
    """

    model_load_started = Signal(str)
    model_loaded = Signal(str, object, list)
    model_load_failed = Signal(str)
    turn_started = Signal(int, int, int)
    token_received = Signal(int, str)
    turn_finished = Signal(int, int, object)
    turn_failed = Signal(int, str)
    tool_call_started = Signal(int, object)
    tool_call_finished = Signal(int, object)
    tool_approval_requested = Signal(object)

    def __init__(self, context: Any):
        super().__init__()
        self.context = context
        #: Whether this llama.cpp build can use a GPU; known after the first load.
        self.gpu_supported: bool | None = None
        self._warm_up: Callable[[], Any] | None = None
        self._warm_up_lock = threading.Lock()

    def set_warm_up(self, fn: Callable[[], Any]) -> None:
        """Have ``fn`` (imports the window needs soon) run on this thread before the next load.

        Run there, one after the other, rather than on a thread of their own at the same time:
        two threads importing and parsing at once kept the GUI thread from the interpreter for
        up to 90 ms while the model loaded.
        """
        with self._warm_up_lock:
            self._warm_up = fn

    def take_warm_up(self) -> Callable[[], Any] | None:
        """The warm-up not run yet, which the caller now runs (None if it ran or was taken)."""
        with self._warm_up_lock:
            fn, self._warm_up = self._warm_up, None
        return fn

    @Slot(object, object)
    def run_call(self, fn: Callable[[], Any], future: Future) -> None:
        """Run a plugin's model call in turn with everything else the engine does."""
        if future.done() or not future.set_running_or_notify_cancel():
            return  # given up on while it waited (the window is closing)
        try:
            result = fn()
        except BaseException as exc:  # handed to the caller, who waits in another thread
            result, error = None, exc
        else:
            error = None
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    @Slot(str)
    def load_model(self, name_or_path: str) -> None:
        """Load a model (empty string: the configured one) and read its metadata."""
        self.model_load_started.emit(name_or_path)
        warm_up = self.take_warm_up()
        if warm_up is not None:
            try:
                warm_up()
            except Exception:  # only a head start: the window imports it when it needs it
                log.exception("warming up failed")
        try:
            warnings = self._load(name_or_path)
            self.gpu_supported = self.context.engine.gpu_offload_supported()
            path = str(self.context.engine.model_path)
            info = None
            if not self.context.is_backend_model(path):  # a backend's model has no local file to read
                try:
                    info = self.context.models.info(path)
                except ParleyError:
                    pass
            self.model_loaded.emit(path, info, warnings)
        except ParleyError as exc:
            self.model_load_failed.emit(str(exc))
        except Exception as exc:  # never let a worker exception kill the thread silently
            log.exception("model load failed")
            self.model_load_failed.emit(f"Loading the model failed: {exc}")

    def _load(self, name_or_path: str) -> list[str]:
        """Load the model; at start-up, a configured model that fails gives way to the built-in one.

        Without this, a model file that was moved or damaged since the last session would
        leave the user in a window that cannot answer anything.
        """
        configured = self.context.settings.get("model.path")
        if self.context.engine.loaded or not configured or name_or_path not in ("", configured):
            return self.context.load_model(name_or_path or None)
        try:
            return self.context.load_model(None)
        except ParleyError as exc:
            from desktop_app.core.models import default_model_path

            log.warning("the configured model %s failed to load: %s", configured, exc)
            warnings = self.context.load_model(str(default_model_path()))
            if self.context.is_backend_model(configured):  # e.g. a remote engine that is not up
                advice = ("pick it again in the picker once its engine is up (Settings → Engines… checks it), "
                          "or choose another model")
            else:
                advice = ("choose another model in the picker, download one with “Get models…”, or add a file "
                          "with “Add model…”")
            return [f"The model “{configured}” could not be loaded: {exc} Parley is using its built-in "
                    f"model for now; {advice}.", *warnings]

    @Slot(int, str, object, object)
    def send(self, conversation_id: int, text: str, parent_id: object, options: object) -> None:
        """Run one turn for ``text``; ``parent_id`` CURRENT_LEAF continues the current branch."""
        kwargs: dict[str, Any] = {"options": options or None}
        if parent_id != CURRENT_LEAF:
            kwargs["parent_id"] = parent_id
        kwargs["approve_tool"] = self._approver(conversation_id)
        self._run(conversation_id, lambda on_event: self.context.chat.send(conversation_id, text, on_event, **kwargs))

    @Slot(int, object)
    def regenerate(self, conversation_id: int, options: object) -> None:
        """Answer the last user message of the current branch again."""
        self._run(conversation_id,
                  lambda on_event: self.context.chat.regenerate(conversation_id, on_event, options=options or None,
                                                                approve_tool=self._approver(conversation_id)))

    def _approver(self, conversation_id: int) -> Callable[[Any, Any], Any]:
        """Ask the window about a tool call and wait (on this worker thread) for the answer."""

        def approve(call: Any, tool: Any) -> Any:
            request = ApprovalRequest(conversation_id, call, tool)
            self.tool_approval_requested.emit(request)
            return request.wait(self.context.engine.cancel_event)

        return approve

    def _run(self, conversation_id: int, call: Callable[[Callable[[Any], None]], Any]) -> None:
        def on_event(event: Any) -> None:
            if isinstance(event, TokenEvent):
                self.token_received.emit(conversation_id, event.text)
            elif isinstance(event, TurnStarted):
                self.turn_started.emit(conversation_id, event.user_message.id, event.assistant_message_id)
            elif isinstance(event, TurnFinished):
                self.turn_finished.emit(conversation_id, event.message.id, event.result)
            elif isinstance(event, TurnFailed):
                self.turn_failed.emit(conversation_id, event.error)
            elif isinstance(event, ToolCallStarted):
                self.tool_call_started.emit(conversation_id, event)
            elif isinstance(event, ToolCallFinished):
                self.tool_call_finished.emit(conversation_id, event.outcome)

        try:
            call(on_event)
        except Exception as exc:
            log.exception("turn failed")
            self.turn_failed.emit(conversation_id, f"{type(exc).__name__}: {exc}")


class EngineClient(QObject):
    """The GUI thread's handle on the engine worker and its thread.

    Signals (requests, queued to the worker):
        load_requested(str), send_requested(int, str, object, object), regenerate_requested(int, object)
    """

    load_requested = Signal(str)
    send_requested = Signal(int, str, object, object)
    regenerate_requested = Signal(int, object)
    call_requested = Signal(object, object)

    def __init__(self, context: Any, parent: QObject | None = None):
        super().__init__(parent)
        self.context = context
        self.thread = QThread()
        self.thread.setObjectName("parley-engine")
        self.worker = EngineWorker(context)
        self.worker.moveToThread(self.thread)
        self.load_requested.connect(self.worker.load_model)
        self.send_requested.connect(self.worker.send)
        self.regenerate_requested.connect(self.worker.regenerate)
        self.call_requested.connect(self.worker.run_call)
        self._pending: set[Future] = set()
        self._closing = False
        self._lock = threading.Lock()
        # Model calls made by a turn itself (a hook, a tool it runs) then run at once.
        self.thread.started.connect(mark_engine_thread, Qt.DirectConnection)
        self.thread.start()
        # Plugins' model calls queue up behind turns on this worker.
        context.engine_runner.runner = self.run_on_worker

    def run_on_worker(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the engine worker after what is queued there; block until it is done.

        Called from the worker itself (a hook during a turn), it runs at once. It would freeze
        the window on the GUI thread, so there it is refused: use ``run_task``.
        """
        if QThread.currentThread() is self.thread:
            return fn()
        if threading.current_thread() is threading.main_thread():
            raise RuntimeError("A model call would freeze the window: run it with run_task.")
        future: Future = Future()
        with self._lock:  # shutdown either sees this call or refuses it
            if self._closing:
                raise EngineError("Parley is closing.")
            self._pending.add(future)
            self.call_requested.emit(fn, future)
        future.add_done_callback(lambda f: self._pending.discard(f))
        return future.result()

    def cancel(self) -> None:
        """Stop the current answer before its next token (the partial answer is kept)."""
        self.context.engine.cancel()

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel any generation and stop the thread; True if it stopped in time."""
        with self._lock:
            self._closing = True
            pending = list(self._pending)
        self.cancel()
        for future in pending:  # nobody will run them now: free their callers
            if not future.done():
                future.set_exception(EngineError("Parley is closing."))
        self.thread.quit()
        return self.thread.wait(timeout_ms)


class _TaskSignals(QObject):
    finished = Signal(object)
    failed = Signal(str)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], Any]):
        super().__init__()
        self.fn = fn
        self.signals = _TaskSignals()

    def run(self) -> None:
        try:
            result = self.fn()
        except ParleyError as exc:
            self._emit(self.signals.failed, str(exc))
        except Exception as exc:
            log.error("background task failed: %s", traceback.format_exc())
            self._emit(self.signals.failed, f"{type(exc).__name__}: {exc}")
        else:
            self._emit(self.signals.finished, result)

    @staticmethod
    def _emit(signal, value: Any) -> None:
        try:
            signal.emit(value)
        except RuntimeError:
            # The app is shutting down and the receiver is gone: nobody is waiting for this result.
            log.debug("background task finished after its receiver was deleted")


def run_task(fn: Callable[[], Any], on_done: Callable[[Any], None],
             on_error: Callable[[str], None], *, owner: Any = None) -> _TaskSignals:
    """Run ``fn`` on the thread pool; ``on_done(result)`` or ``on_error(message)`` run on the GUI thread.

    Pass the widget the callbacks update as ``owner``: when it is gone by the time the work
    ends (its window was closed), the callbacks are skipped rather than touching deleted widgets.
    """
    task = _Task(fn)
    signals = task.signals
    if owner is not None:
        from shiboken6 import isValid

        on_done = _while_alive(owner, on_done, isValid)
        on_error = _while_alive(owner, on_error, isValid)
    # The signals object lives on the GUI thread, so the callbacks are queued to it.
    _live.add(signals)
    signals.finished.connect(on_done)
    signals.failed.connect(on_error)
    signals.finished.connect(lambda _: _live.discard(signals))
    signals.failed.connect(lambda _: _live.discard(signals))
    QThreadPool.globalInstance().start(task)
    return signals


def _while_alive(owner: Any, callback: Callable[[Any], None], is_valid: Callable[[Any], bool]) -> Callable[[Any], None]:
    def call(value: Any) -> None:
        if is_valid(owner):
            callback(value)

    return call


#: Signal objects of tasks still running (kept alive until they report).
_live: set[_TaskSignals] = set()
