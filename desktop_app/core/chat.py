"""The turn pipeline: history -> plugins -> prompt -> engine -> store.

A turn is data flowing one way:

1. the user's message is committed to the store before anything else (nothing typed is lost);
2. a :class:`Turn` is built from the conversation's history and the settings;
3. ``prepare_turn`` hooks enrich it, each addition labelled with its plugin (the trace);
4. a ``generate_turn`` hook may own generation (e.g. self-consistency); by default one pass
   streams from the engine, which renders the model's chat template and fits the context;
5. when the turn offers tools, the model may call them: each call is approved, run and its
   result given back to the model, for a bounded number of rounds (``tool_loop.py``);
6. the growing answer is saved every fraction of a second with status ``incomplete``, so a
   killed process keeps it; when the answer ends it is saved with its stats and its trace;
7. ``after_turn`` hooks run.

The pipeline is synchronous and reports progress through a callback; the GUI runs it on
its generation worker thread, the CLI on the main thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from desktop_app.core.backend import writes_together
from desktop_app.core.engine import DoneEvent, Engine, ErrorEvent, TokenEvent
from desktop_app.core.errors import EngineError, ModelFileError
from desktop_app.core.model_settings import resolve_model_settings
from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT, default_model_path
from desktop_app.core.settings import DEFAULT_SYSTEM_PROMPT, Settings
from desktop_app.core.store import Message, Store
from desktop_app.core.tool_loop import Approver, ToolCallFinished, ToolCallStarted, ToolLoop
from desktop_app.core.plugin_context import FIXED_SETUP, StopWatch, TurnRun
from desktop_app.core.turn import (
    ChatMessage,
    ContextBlock,
    GenerationOptions,
    Tool,
    TraceEntry,
    Turn,
    TurnResult,
    current_plugin,
)

__all__ = [
    "ChatService",
    "ProgressEvent",
    "TurnFailed",
    "TurnFinished",
    "TurnStarted",
    "ToolCallFinished",
    "ToolCallStarted",
    "options_from_settings",
]

log = logging.getLogger(__name__)

#: How often the growing answer is written to the store while it streams.
PARTIAL_SAVE_INTERVAL = 0.25


@dataclass
class ProgressEvent(TokenEvent):
    """Text a strategy streams while it works, not the answer: its own lines ("Sample 2 of 5…")
    and the passes it generates. A TokenEvent, so whoever shows the stream shows it; whoever
    wants only the answer (a program asking through the API) tells them apart, and gets the
    answer from :class:`TurnFinished`."""


@dataclass
class TurnStarted:
    """The user's message is stored and the answer's placeholder exists."""

    user_message: Message
    assistant_message_id: int


@dataclass
class TurnFinished:
    """The answer is stored. ``message.status`` is incomplete when it was cancelled."""

    message: Message
    result: TurnResult


@dataclass
class TurnFailed:
    """Generation failed; the partial answer (if any) is stored with status ``error``."""

    error: str
    message: Message | None = None


ChatEvent = TurnStarted | TokenEvent | ToolCallStarted | ToolCallFinished | TurnFinished | TurnFailed


def options_from_settings(settings: Settings, recommended: dict[str, float] | None = None,
                          own: dict[str, Any] | None = None) -> GenerationOptions:
    """Build generation options from the user's sampling settings.

    ``own`` is the model's own settings (they win); ``recommended`` what the loaded model
    recommends (its GGUF file, or the measured preset of the built-in model), used for every
    sampling option the user has not changed (see :mod:`desktop_app.core.model_settings`).
    """
    resolved = resolve_model_settings(settings, own, recommended)

    def value(option: str) -> Any:
        return resolved[option].value

    return GenerationOptions(
        temperature=value("temperature"),
        top_p=value("top_p"),
        top_k=value("top_k"),
        min_p=value("min_p"),
        repeat_penalty=value("repeat_penalty"),
        max_tokens=value("max_tokens"),
        seed=settings.get("model.seed"),
    )


class _NoHooks:
    """Stand-in hook relay when no plugin host is given: every hook returns nothing."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        first_result = name in ("generate_turn", "approve_tool_call")
        return lambda **kwargs: None if first_result else []


@dataclass
class _PartialWriter:
    """Saves the growing answer at most every PARTIAL_SAVE_INTERVAL seconds."""

    store: Store
    message_id: int
    text: str = ""
    _last: float = field(default=0.0)

    def add(self, piece: str) -> None:
        self.text += piece
        now = time.monotonic()
        if now - self._last >= PARTIAL_SAVE_INTERVAL:
            self._last = now
            self.store.update_message(self.message_id, content=self.text)


class ChatService:
    """Runs turns for conversations in the store, through the plugins, on the engine."""

    def __init__(self, store: Store, engine: Engine, settings: Settings, hooks: Any = None):
        self.store = store
        self.engine = engine
        self.settings = settings
        self.hooks = hooks if hooks is not None else _NoHooks()
        #: The tools the plugins registered, by name (the app context sets it; none by default).
        self.tools: Callable[[], dict[str, Tool]] = dict
        #: The loaded model's own settings (``ModelEntry.settings``, converted), asked at every
        #: turn so an edit applies to the next one; the app context sets it (none by default).
        self.model_settings: Callable[[], dict[str, Any]] = dict

    def default_system_prompt(self, model_path: Path | None = None) -> str:
        """The system prompt used when neither the conversation nor the user set one.

        The built-in SmolLM2-135M answers far better with the prompt it was trained with.
        ``model_path`` asks about a model that is not loaded (default: the loaded one).
        """
        model_path = model_path or self.engine.model_path
        try:
            if model_path is not None and Path(model_path) == default_model_path():
                return DEFAULT_MODEL_SYSTEM_PROMPT
        except ModelFileError:
            pass
        return DEFAULT_SYSTEM_PROMPT

    def system_prompt(self) -> str:
        """The system prompt of a conversation without its own: the loaded model's own, else the
        user's global one, else the model's recommended one."""
        own = self.model_settings().get("system_prompt")
        return own or self.settings.get("chat.system_prompt") or self.default_system_prompt()

    def send(
        self,
        conversation_id: int,
        text: str,
        on_event: Callable[[ChatEvent], None] = lambda event: None,
        *,
        options: dict[str, Any] | None = None,
        parent_id: int | None | type[...] = ...,
        plugin_options: dict[str, dict[str, Any]] | None = None,
        approve_tool: Approver | None = None,
        stop: threading.Event | None = None,
    ) -> TurnFinished | TurnFailed:
        """Store ``text`` as the user's message and answer it.

        ``parent_id`` defaults to the conversation's current leaf; pass an earlier user
        message's parent to edit and resend (the old branch is kept). ``options`` override
        the generation settings for this turn; ``plugin_options`` (per plugin name) reach the
        plugins as ``turn.plugin_options``. ``approve_tool(call, tool)`` asks the user whether
        a tool call may run (without it, calls that need approval are refused).

        ``stop``, when given and the engine writes several answers at once, stops this turn
        alone, and the turn's answer joins the batch being written with its own adapters (so
        turns from several threads are written together). Otherwise the engine's shared Stop
        (``engine.cancel()``) ends it.
        """
        if not text.strip():
            raise ValueError("The message is empty.")
        user = self.store.add_message(conversation_id, "user", text, parent_id=parent_id)
        return self._run(user, on_event, options, plugin_options, approve_tool, stop=stop)

    def regenerate(
        self,
        conversation_id: int,
        on_event: Callable[[ChatEvent], None] = lambda event: None,
        *,
        options: dict[str, Any] | None = None,
        plugin_options: dict[str, dict[str, Any]] | None = None,
        approve_tool: Approver | None = None,
    ) -> TurnFinished | TurnFailed:
        """Answer the last user message of the current branch again, as a new branch.

        When the answer would be greedy only because the model recommends it (the built-in
        model does), the new answer is sampled with the general sampling settings instead:
        asked again, the same greedy answer would come back word for word.
        """
        history = self.store.history(conversation_id)
        users = [m for m in history if m.role == "user"]
        if not users:
            raise ValueError("There is no message to answer again.")
        return self._run(users[-1], on_event, options, plugin_options, approve_tool, another=True)

    def default_options(self) -> GenerationOptions:
        """The settings' generation options, with the loaded model's recommended sampling for the
        sampling settings the user left alone."""
        recommend = getattr(self.engine, "recommended_sampling", None)  # a backend may not know
        return options_from_settings(self.settings, recommend() if recommend else None, self.model_settings())

    def answer_messages(self, messages: list[ChatMessage], setup: dict[str, Any],
                        overrides: dict[str, Any] | None = None, on_token: Callable[[str], None] | None = None,
                        stop: threading.Event | None = None, keep: bool = False, *,
                        on_progress: Callable[[str], None] | None = None) -> TurnRun:
        """Answer the last of ``messages`` (the user's) through the whole pipeline, the others as
        history, with a conversation's ``setup`` (``system_prompt``, ``plugins``: each plugin's
        choice). The exchange is stored as a conversation, and deleted afterwards unless ``keep``.
        Tool calls that would ask the user are refused: there is no one to ask.

        ``on_token`` gets only the answer; what a strategy streams while it works (its samples,
        its own lines) goes to ``on_progress``. A strategy's answer is known when it returns,
        so it reaches ``on_token`` then, in one piece.

        With ``keep``, only a whole exchange stays: a turn that fails, raises or is stopped
        leaves nothing behind (no question without its answer, no half-written answer). The
        window keeps such answers for the user to see and retry; a program that asked gets
        the error instead, and nobody would ever look at the remains.
        """
        if not messages or messages[-1].role != "user" or not messages[-1].content.strip():
            raise ValueError("The last message must be the user's, with some text.")
        if stop is not None and stop.is_set():  # given up while it waited
            return TurnRun("", "cancelled")
        # The setup's system prompt first, then the caller's own (both apply).
        systems = [setup.get("system_prompt")] + [m.content for m in messages if m.role == "system"]
        system = "\n\n".join(s for s in systems if s) or None
        plugins = setup.get("plugins") or {}
        meta: dict[str, Any] = {k: dict(v) for k, v in plugins.items() if isinstance(v, dict)}
        meta[FIXED_SETUP] = True  # only the setup applies, not what the window's panels have picked
        conversation = self.store.create_conversation(
            str(setup.get("title") or messages[-1].content[:60]), system_prompt=system, meta=meta)
        whole = False  # set once the answer is complete: anything less is not kept
        try:
            for message in messages[:-1]:
                if message.role in ("user", "assistant") and message.content:
                    self.store.add_message(conversation.id, message.role, message.content)

            # With a batching engine the turn has a Stop of its own; otherwise the shared one is used.
            batched = self.batches()
            with StopWatch(self.engine, None if batched else stop) as watch:
                streamed: list[str] = []

                def on_event(event: ChatEvent) -> None:
                    watch.check()
                    if isinstance(event, ProgressEvent):
                        if on_progress is not None:
                            on_progress(event.text)
                    elif isinstance(event, TokenEvent):
                        streamed.append(event.text)
                        if on_token is not None:
                            on_token(event.text)
                    elif isinstance(event, TurnFinished):
                        watch.finished(event.result.finish_reason)
                        said, text = "".join(streamed), event.result.text
                        # The part of the answer not streamed yet (all of it, after a strategy).
                        if on_token is not None and len(text) > len(said) and text.startswith(said):
                            on_token(text[len(said):])

                outcome = self.send(conversation.id, messages[-1].content, on_event, options=overrides,
                                    stop=stop if batched else None)
            message = outcome.message
            stored = self.store.get_trace(message.id) if message is not None else None
            trace = [TraceEntry.from_dict(e) for e in (stored or {}).get("entries", [])]
            sources = [ContextBlock(**e.content) for e in trace if e.kind == "context" and isinstance(e.content, dict)]
            if isinstance(outcome, TurnFailed):
                log.warning("an answer to a program failed (not kept): %s", outcome.error)
                return TurnRun("", "error", {}, trace, sources, error=outcome.error)
            whole = outcome.result.finish_reason != "cancelled"
            kept = keep and whole
            return TurnRun(outcome.result.text, outcome.result.finish_reason, dict(outcome.result.stats), trace,
                           sources, outcome.result.prompt, conversation.id if kept else None,
                           message.id if kept else None, note=outcome.result.note,
                           samples=list(outcome.result.samples))
        finally:
            if not (keep and whole):
                self.store.delete_conversation(conversation.id)

    def _run(
        self,
        user: Message,
        on_event: Callable[[ChatEvent], None],
        overrides: dict[str, Any] | None,
        plugin_options: dict[str, dict[str, Any]] | None = None,
        approve_tool: Approver | None = None,
        another: bool = False,
        stop: threading.Event | None = None,
    ) -> TurnFinished | TurnFailed:
        # A turn with a Stop of its own joins the engine's batch; one without uses the shared Stop.
        own_stop = stop if stop is not None and self.batches() else None
        generate_once = partial(self._generate_once, cancel=own_stop)
        conversation = self.store.get_conversation(user.conversation_id)
        earlier = self.store.history(user.conversation_id, user.parent_id) if user.parent_id else []
        options = self.default_options()
        own = self.model_settings()
        if another and options.temperature <= 0 and not self.settings.is_changed("generation.temperature") \
                and "temperature" not in (overrides or {}) and "temperature" not in own:
            options = options_from_settings(self.settings, own=own)
        for key, value in (overrides or {}).items():
            setattr(options, key, value)
        turn = Turn(
            conversation_id=conversation.id,
            user_message=user.content,
            history=[ChatMessage(m.role, m.content) for m in earlier if m.role in ("user", "assistant") and m.content],
            options=options,
            plugin_options={k: dict(v) for k, v in (plugin_options or {}).items()},
        )
        system = conversation.system_prompt
        if system is None:
            system = self.system_prompt()
        if system:
            turn.set_base_system(system)

        # The answer's place exists before plugins run, so the window shows "writing…" at once
        # even when a plugin takes a moment (e.g. searching documents).
        model_name = self.engine.model_path.name if self.engine.model_path else None
        answer = self.store.add_message(
            conversation.id, "assistant", "", parent_id=user.id, status="incomplete", model=model_name,
        )
        on_event(TurnStarted(user, answer.id))
        self.hooks.prepare_turn(turn=turn)
        self._offer_plugin_tools(turn)
        self.store.update_message(answer.id, options=turn.options.as_dict())
        writer = _PartialWriter(self.store, answer.id)
        # While a strategy owns the turn, what streams is its progress: the answer is what it returns.
        strategy = {"running": False}

        def on_token(piece: str) -> None:
            writer.add(piece)
            on_event(ProgressEvent(piece) if strategy["running"] else TokenEvent(piece))

        def on_progress(piece: str) -> None:
            writer.add(piece)
            on_event(ProgressEvent(piece))

        def generate(t: Turn, options: GenerationOptions | None = None,
                     on_token: Callable[[str], None] | None = on_token) -> TurnResult:
            if t.tools:
                template = self.engine.chat_template
                loop = ToolLoop(generate_once, template.source if template else None, self.hooks,
                                approve_tool, on_event, own_stop or self.engine.cancel_event,
                                consume=own_stop is None)
                return loop.run(t, options or t.options, on_token)
            return generate_once(t, options, on_token)

        def many(t: Turn, options: Sequence[GenerationOptions],
                 on_result: Callable[[int, TurnResult], bool] | None = None,
                 show: int | None = 0) -> list[TurnResult]:
            if t.tools or len(options) > getattr(self.engine, "parallel", 0) or len(options) < 2:
                return self._generate_serially(generate, t, options, on_result)
            return self._generate_together(t, options, on_result, show, on_token, own_stop)

        # Strategies show progress (e.g. "sample 2 of 5") through the same stream as tokens.
        generate.emit = on_progress  # type: ignore[attr-defined]
        generate.many = many  # type: ignore[attr-defined]

        try:
            strategy["running"] = True
            try:
                result = self.hooks.generate_turn(turn=turn, generate=generate)
            finally:
                strategy["running"] = False
            if result is None:
                result = generate(turn)
        except Exception as exc:
            # Whatever went wrong, the partial answer is kept and marked, never left "being written".
            message = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, EngineError):
                log.exception("turn failed")
            kept = getattr(exc, "partial", "") or writer.text
            self.store.update_message(answer.id, content=kept, status="error", stats={"error": message})
            # What the plugins added is kept, so the prompt inspector can show why it failed.
            self.store.save_trace(answer.id, "", [e.as_dict() for e in turn.trace])
            failed = TurnFailed(message, self.store.get_message(answer.id))
            on_event(failed)
            return failed

        status = "incomplete" if result.finish_reason == "cancelled" else "complete"
        stats = dict(result.stats, finish_reason=result.finish_reason)
        if result.samples:
            stats["samples"] = result.samples
        self.store.update_message(answer.id, content=result.text + result.note, status=status, stats=stats)
        self.store.save_trace(answer.id, result.prompt, [e.as_dict() for e in turn.trace])
        finished = TurnFinished(self.store.get_message(answer.id), result)
        self.hooks.after_turn(turn=turn, result=result)
        on_event(finished)
        return finished

    def _offer_plugin_tools(self, turn: Turn) -> None:
        """Offer the tools plugins mark ``always_offered``, labelled with their plugin.

        Core does it, so such a tool works whether or not the tools plugin is on.
        """
        offered = {t.name for t in turn.tools}
        for tool in self.tools().values():
            if tool.always_offered and tool.name not in offered:
                token = current_plugin.set(tool.source or "core")
                try:
                    turn.add_tool(tool)
                finally:
                    current_plugin.reset(token)

    def batches(self) -> bool:
        """Whether the engine writes answers from several threads in one batch (each with its
        own Stop and adapters)."""
        return writes_together(self.engine)

    def _apply_adapters(self, turn: Turn) -> None:
        """Make the turn's adapters the engine's active ones (see :meth:`_usable_adapters`)."""
        try:
            self.engine.set_adapters(turn.adapters)
            return
        except EngineError as exc:
            first_error = str(exc)
        self.engine.set_adapters(self._usable_adapters(turn, first_error))

    def _usable_adapters(self, turn: Turn, error: str | None = None) -> list[Any]:
        """The turn's adapters that can be read. One that cannot (e.g. deleted meanwhile) is left
        out with a note in the trace, and the answer goes on without it. ``error`` is a failure
        already seen with all of them; it is raised (EngineError) when each reads on its own, as
        the failure was then not about reading one."""
        if error is None:
            try:
                for adapter in turn.adapters:
                    self.engine.load_adapter(adapter.path)  # cached: a no-op once read
                return list(turn.adapters)
            except EngineError as exc:
                error = str(exc)
        usable = []
        for adapter in turn.adapters:
            try:
                self.engine.load_adapter(adapter.path)
                usable.append(adapter)
            except EngineError as exc:
                turn.trace.append(TraceEntry("core", "note", f"Answered without the LoRA adapter "
                                                             f"{adapter.name}: {exc}"))
        if len(usable) == len(turn.adapters):
            raise EngineError(error)
        return usable

    def _engine_request(self, turn: Turn, cancel: threading.Event | None) -> dict[str, Any]:
        """How this turn's answer asks the engine for its Stop and adapters: its own (it joins
        the batch), or, without ``cancel``, the shared Stop and the active adapters."""
        if cancel is None:
            # The turn's LoRA adapters (none unless a plugin added some); a no-op when unchanged.
            self._apply_adapters(turn)
            return {}
        return {"cancel": cancel, "adapters": self._usable_adapters(turn)}

    @staticmethod
    def _generate_serially(generate: Callable[..., TurnResult], turn: Turn, options: Sequence[GenerationOptions],
                           on_result: Callable[[int, TurnResult], bool] | None) -> list[TurnResult]:
        """The answers of ``generate.many`` one after another (tools, or a backend that writes one at a time)."""
        results: list[TurnResult] = []
        for i, one in enumerate(options):
            result = generate(turn, options=one)
            results.append(result)
            if result.finish_reason == "cancelled" or (on_result is not None and on_result(i, result)):
                break
        return results

    def _generate_together(self, turn: Turn, options: Sequence[GenerationOptions],
                           on_result: Callable[[int, TurnResult], bool] | None, show: int | None,
                           on_token: Callable[[str], None] | None,
                           cancel: threading.Event | None = None) -> list[TurnResult]:
        """The answers of ``generate.many`` written in one batch, the prompt evaluated once;
        answer ``show`` streams to ``on_token`` as it is written."""
        own = self._engine_request(turn, cancel)
        keep = 1 + len(turn.tool_exchange)
        request = self.engine.answers(turn.messages(), list(options), None, keep, **own)
        results: list[TurnResult | None] = [None] * len(options)
        failure: EngineError | None = None
        for index, event in request.events():
            if isinstance(event, TokenEvent):
                if index == show and on_token is not None:
                    on_token(event.text)
            elif isinstance(event, DoneEvent):
                result = results[index] = TurnResult(event.text, event.finish_reason, event.stats.as_dict(),
                                                     event.prompt)
                if on_result is not None and event.finish_reason != "cancelled" and on_result(index, result):
                    for other in range(len(options)):
                        if results[other] is None:
                            request.give_up(other)
            elif isinstance(event, ErrorEvent) and failure is None:
                failure = EngineError(event.message)
                failure.partial = event.text  # type: ignore[attr-defined]
                for other in range(len(options)):
                    request.give_up(other)
        if failure is not None:
            raise failure
        return [r for r in results if r is not None]

    def _generate_once(self, turn: Turn, options: GenerationOptions | None,
                       on_token: Callable[[str], None] | None,
                       tools: list[dict[str, Any]] | None = None, *,
                       cancel: threading.Event | None = None) -> TurnResult:
        """One streamed pass through the engine; raises EngineError (with ``partial``) on failure.
        ``cancel``: the turn's own Stop (see :meth:`send`)."""
        own = self._engine_request(turn, cancel)
        # The question and this turn's tool exchange stay together when history is left out.
        keep = 1 + len(turn.tool_exchange)
        for event in self.engine.stream_chat(turn.messages(), options or turn.options, tools, keep, **own):
            if isinstance(event, TokenEvent):
                if on_token is not None:
                    on_token(event.text)
            elif isinstance(event, DoneEvent):
                return TurnResult(event.text, event.finish_reason, event.stats.as_dict(), event.prompt)
            elif isinstance(event, ErrorEvent):
                error = EngineError(event.message)
                error.partial = event.text  # type: ignore[attr-defined]
                raise error
        raise EngineError("The engine stopped without finishing the answer.")
