"""What a plugin gets from Parley: :class:`PluginContext`, one per plugin.

A plugin receives its context in ``app_started(context)`` (and in its panels' factories and
its commands' handlers). Everything a plugin may use of the app goes through it: its own
settings and folders, read access to the conversations, the per-conversation choice helper,
the model (one call at a time, queued like a turn), the tools every plugin registered, and
the window when there is one. Nothing here imports Qt or a plugin.
"""

from __future__ import annotations

import logging
import contextvars
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from desktop_app.core.backend import writes_together
from desktop_app.core.client_tools import ToolReply, prepare_tool_reply
from desktop_app.core.engine import DoneEvent, ErrorEvent, TokenEvent
from desktop_app.core.errors import EngineError, ParleyError
from desktop_app.core.turn import ChatMessage, ContextBlock, GenerationOptions, Tool, TraceEntry, Turn, TurnResult

if TYPE_CHECKING:  # pragma: no cover
    from desktop_app.core.settings import Settings
    from desktop_app.core.store import Conversation, Message, Store

__all__ = [
    "AppServices",
    "ConversationChoice",
    "Conversations",
    "ModelAccess",
    "PluginContext",
    "PluginSettings",
    "Registered",
    "TurnRun",
]

log = logging.getLogger(__name__)
#: (plugin, service) pairs already warned about as offered twice.
_WARNED_SERVICES: set[tuple[str, str]] = set()

#: A conversation's meta entry that marks its setup as fixed (see :meth:`ConversationChoice.current`).
FIXED_SETUP = "_fixed_setup"


@dataclass(frozen=True)
class Registered:
    """One thing a plugin registered through a ``register_*`` hook, with the plugin's name.

    ``item`` is the single argument given to ``register(...)``; ``args``/``kwargs`` hold all
    of them for hooks whose ``register`` takes several (panels, actions).
    """

    plugin: str
    item: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class PluginSettings:
    """A plugin's own settings, declared with ``register_settings``: keys without a prefix."""

    def __init__(self, settings: "Settings", plugin: str):
        self._settings = settings
        self._prefix = f"plugins.{plugin}."

    def get(self, key: str) -> Any:
        """The value of one of the plugin's settings (its declared default when unset)."""
        return self._settings.get(self._prefix + key)

    def set(self, key: str, value: Any) -> None:
        """Check and set one of the plugin's settings; :meth:`save` writes it."""
        self._settings.set(self._prefix + key, value)

    def is_changed(self, key: str) -> bool:
        """Whether the user changed the setting from its default."""
        return self._settings.is_changed(self._prefix + key)

    def save(self) -> None:
        """Write the settings file (all settings, atomically)."""
        self._settings.save()


class Conversations:
    """The stored conversations: read them, and add one from an export (plugins keep their own
    data in their folders)."""

    def __init__(self, store: "Store"):
        self._store = store

    def get(self, conversation_id: int) -> "Conversation":
        """One conversation (title, system prompt, meta); KeyError when there is none with that id."""
        return self._store.get_conversation(conversation_id)

    def list(self, limit: int | None = None) -> list["Conversation"]:
        """Conversations, newest first."""
        return self._store.list_conversations(limit)

    def messages(self, conversation_id: int) -> list["Message"]:
        """The messages of the conversation's current branch, oldest first."""
        return self._store.history(conversation_id)

    def message(self, message_id: int) -> "Message":
        """One message by id."""
        return self._store.get_message(message_id)

    def trace(self, message_id: int) -> dict[str, Any] | None:
        """An answer's trace: ``{"prompt": ..., "entries": [...]}``, or None."""
        return self._store.get_trace(message_id)

    def export_json(self, conversation_id: int) -> dict[str, Any]:
        """The whole conversation (every branch, traces included) as JSON-ready data, in the
        format File > Export writes."""
        return self._store.export_json(conversation_id)

    def import_json(self, data: dict[str, Any]) -> "Conversation":
        """Add a conversation from export data (``{"format": "parley-conversation/1", "title",
        "meta", "messages": [{"id", "parent_id", "role", "content", "stats", "trace"}...]}``), with
        fresh ids; e.g. to let the user open an answer a plugin produced off the record. Raises
        desktop_app.api.ParleyError (a StoreError) naming what is malformed."""
        return self._store.import_json(data)


class ConversationChoice:
    """A plugin's choice per conversation (a template, collections, tools...), in one place.

    Which choice a turn uses, in order: the turn's own (``turn.plugin_options[plugin][key]``,
    e.g. from a command-line option), the conversation's remembered one, the
    :attr:`selection` (the panel's pick for a conversation that has none yet), then
    ``default()``. A conversation keeps the choice it started with: whatever a turn uses is
    remembered with the conversation. A choice is a dict holding at least ``key``.
    """

    def __init__(self, context: "PluginContext", key: str,
                 default: Callable[[], dict[str, Any]] | None = None, fields: Sequence[str] = ()):
        self._context = context
        self.key = key
        self._default = default or (lambda: {})
        self._fields = tuple(fields)
        #: The panel's current pick, for conversations without a choice of their own.
        self.selection: dict[str, Any] = {}

    def remembered(self, conversation_id: int | None) -> dict[str, Any] | None:
        """The choice the conversation keeps, or None."""
        if conversation_id is None:
            return None
        try:
            choice = self._context.conversations.get(conversation_id).meta.get(self._context.name)
        except Exception:  # the conversation was deleted meanwhile: there is no choice
            return None
        return dict(choice) if isinstance(choice, dict) and self.key in choice else None

    def current(self, conversation_id: int | None) -> tuple[dict[str, Any], bool]:
        """(the choice that applies to a conversation, whether the conversation remembered it).

        A conversation with a fixed setup (one a program asked for, e.g. an API profile) has
        only what it keeps: neither the panel's pick nor the default applies.
        """
        choice = self.remembered(conversation_id)
        if choice is not None:
            return choice, True
        if conversation_id is not None and self._fixed(conversation_id):
            return {}, False
        if self.selection.get(self.key):
            return dict(self.selection), False
        return dict(self._default() or {}), False

    def _fixed(self, conversation_id: int) -> bool:
        try:
            return bool(self._context.conversations.get(conversation_id).meta.get(FIXED_SETUP))
        except Exception:
            return False

    def for_turn(self, turn: Turn) -> dict[str, Any]:
        """The choice for this turn, remembered with its conversation from now on."""
        own = turn.plugin_options.get(self._context.name) or {}
        if own.get(self.key) is not None:
            choice = {k: v for k, v in own.items() if not self._fields or k in self._fields}
        else:
            choice, remembered = self.current(turn.conversation_id)
            if remembered or not choice.get(self.key):
                return choice
        if turn.conversation_id is not None:  # a turn never changes the panel's pick
            self.remember(turn.conversation_id, choice)
        return choice

    def remember(self, conversation_id: int | None, choice: dict[str, Any]) -> None:
        """Keep ``choice`` with the conversation; without one, it becomes the :attr:`selection`."""
        if conversation_id is None:
            self.selection = dict(choice)
            return
        self._context._remember(conversation_id, dict(choice))


class ModelAccess:
    """The loaded model, as a plugin may use it: what it is, its prompt format, its adapters.

    Generating goes through :meth:`PluginContext.complete`, so it waits its turn.
    """

    def __init__(self, engine: Any):
        self._engine = engine

    @property
    def loaded(self) -> bool:
        """Whether a model is loaded."""
        return bool(self._engine.loaded)

    @property
    def path(self) -> Path | None:
        """The loaded model's file."""
        return self._engine.model_path

    @property
    def context_length(self) -> int:
        """The context window of the loaded model, in tokens."""
        return int(self._engine.context_length)

    @property
    def parallel(self) -> int:
        """How many answers the loaded model writes at once, decoded together (1 for a backend
        that writes one at a time, 0 when no model is loaded). :meth:`PluginContext.complete`
        calls from several threads share its batch; ``complete_many`` uses it for one prompt."""
        if not self._engine.loaded:
            return 0
        return max(1, int(getattr(self._engine, "parallel", 1) or 1))

    @property
    def vocab_size(self) -> int | None:
        """How many tokens the loaded model knows (token ids are 0 to vocab_size - 1); None for
        a backend that cannot tell."""
        size = getattr(self._engine, "vocab_size", None)
        return int(size) if size is not None else None

    def render(self, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        """The exact prompt text the model's chat template makes of ``messages``."""
        return self._engine.render(list(messages), tools)

    def count_tokens(self, text: str) -> int:
        """How many tokens the loaded model makes of ``text`` (e.g. a prompt from :meth:`render`).

        Waits while the model is being loaded or answers. Raises EngineError when no model is
        loaded, AttributeError for a backend that cannot tell.
        """
        count = getattr(self._engine, "count_tokens", None)
        return count(text) if count is not None else len(self._engine.tokenize(text))

    def load_adapter(self, path: str | Path) -> None:
        """Read a LoRA adapter file into memory for the loaded model (EngineError if it cannot)."""
        self._engine.load_adapter(path)

    def adapter_problem(self, path: str | Path) -> str | None:
        """Why the engine cannot use this LoRA adapter file at all, or None when it may (a remote
        engine may apply no adapters, or only those its server loaded; the local engine checks
        the file itself when it reads it)."""
        ask = getattr(self._engine, "adapter_problem", None)
        return ask(path) if callable(ask) else None

    @property
    def runs_here(self) -> bool:
        """Whether the loaded model runs in this process from a local file (not on a remote engine)."""
        path = self.path
        return path is not None and Path(path).is_file()

    def set_adapters(self, adapters: Sequence[Any]) -> bool:
        """Put these LoRA adapters (with their scales) on the model; True when that changed anything."""
        return self._engine.set_adapters(adapters)

    def release_adapter(self, path: str | Path) -> None:
        """Free a LoRA adapter file no answer uses any more."""
        release = getattr(self._engine, "release_adapter", None)
        if release is not None:
            release(path)


@dataclass
class TurnRun:
    """What :meth:`PluginContext.run_turn` produced: the answer, who added what, its sources."""

    text: str
    finish_reason: str
    stats: dict[str, Any] = field(default_factory=dict)
    #: Who added what to the prompt (as the prompt inspector shows it).
    trace: list[TraceEntry] = field(default_factory=list)
    #: The passages the documents plugin (or another) put in front of the model, numbered in order.
    sources: list[ContextBlock] = field(default_factory=list)
    prompt: str = ""
    #: The stored conversation and answer (None when the turn was not kept).
    conversation_id: int | None = None
    message_id: int | None = None
    #: Why the turn failed, or None.
    error: str | None = None
    #: A strategy's words about the answer for people (e.g. how its samples voted), not part of ``text``.
    note: str = ""
    #: Every answer a strategy sampled, in order (empty without a strategy).
    samples: list[str] = field(default_factory=list)


@dataclass
class AppServices:
    """What the app gives every plugin's context (built once by the app context)."""

    settings: "Settings"
    store: "Store"
    engine: Any
    collect: Callable[[str], list[Registered]]
    tools: Callable[[], dict[str, Any]]
    default_system_prompt: Callable[[Path | None], str]
    model_file: Callable[[str | None], Path]
    library: Callable[[], list[dict[str, Any]]]
    load_model: Callable[[str | None], list[str]]
    run_turn: Callable[..., TurnRun]
    generation_options: Callable[[], GenerationOptions]
    engine_runner: "EngineRunnerSlot"
    #: the app's download manager (made on first use); None where there is none
    downloads: Callable[[], Any] | None = None


#: Runs a function where the engine's turns run (the window's engine worker) and returns its
#: result; the default runs it on the calling thread.
EngineRunner = Callable[[Callable[[], Any]], Any]


class PluginContext:
    """Everything a plugin may use of Parley; handed to ``app_started(context)``.

    One per plugin. Built by the app (and by :class:`desktop_app.testing.PluginHarness`);
    a plugin never builds one.
    """

    def __init__(self, name: str, services: AppServices, *, data_dir: Path, cache_dir: Path, log_dir: Path):
        self.name = name
        self.settings = PluginSettings(services.settings, name)
        self.conversations = Conversations(services.store)
        self.model = ModelAccess(services.engine)
        #: The window's helpers (:class:`desktop_app.ui.api.WindowApi`) while the window runs.
        self.window: Any = None
        self._app = services
        self._engine = services.engine
        self._runner = services.engine_runner
        self._folders = {"data": data_dir, "cache": cache_dir, "log": log_dir}

    # -- settings and folders ----------------------------------------------------------------
    def app_setting(self, key: str) -> Any:
        """Read one of Parley's own settings, e.g. ``"chat.system_prompt"`` (read-only)."""
        return self._app.settings.get(key)

    def _folder(self, kind: str) -> Path:
        folder = self._folders[kind]
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def data_dir(self) -> Path:
        """The plugin's own folder for files to keep (created on first use)."""
        return self._folder("data")

    @property
    def cache_dir(self) -> Path:
        """The plugin's folder for files that can be made again (created on first use)."""
        return self._folder("cache")

    @property
    def log_dir(self) -> Path:
        """The folder for the plugin's log files (created on first use)."""
        return self._folder("log")

    # -- conversations --------------------------------------------------------------------------
    def choice(self, key: str, default: Callable[[], dict[str, Any]] | None = None,
               fields: Sequence[str] = ()) -> ConversationChoice:
        """A per-conversation choice helper for this plugin (see :class:`ConversationChoice`).

        ``key`` is the entry a choice must have, ``default()`` the choice of a conversation
        that has none, ``fields`` the entries of a turn's own choice to keep (default: all).
        """
        return ConversationChoice(self, key, default, fields)

    def _remember(self, conversation_id: int, choice: dict[str, Any]) -> None:
        store = self._app.store
        meta = dict(store.get_conversation(conversation_id).meta)
        meta[self.name] = choice
        store.update_conversation_meta(conversation_id, meta)

    def hub(self) -> Any:
        """The model hub (:class:`desktop_app.api.Hub`) the settings point at (``hub.endpoint``, else
        ``HF_ENDPOINT``, else huggingface.co), with the token saved for it. Its calls do network
        I/O: make them off the GUI thread. Raises HubError when the endpoint setting is malformed."""
        from desktop_app.core.hub import Hub

        return Hub.from_settings(self._app.settings)

    @property
    def downloads(self) -> Any:
        """The app's one download manager (:class:`desktop_app.api.DownloadManager`): queue a hub
        download of a kind the plugin installs (``register_download_installers``) with
        ``add(model)``, follow it with ``status(id)``/``wait(id)``, ``cancel(id)`` it. Made on first
        use; the token is read on each download's own thread. Raises ParleyError where there is none."""
        from desktop_app.core.errors import ParleyError

        if self._app.downloads is None:
            raise ParleyError("Downloads are not available here.")
        return self._app.downloads()

    def default_system_prompt(self, model_path: Path | None = None) -> str:
        """The system prompt answers get when neither the conversation nor the user set one."""
        return self._app.default_system_prompt(model_path)

    def model_file(self, name_or_path: str | None = None) -> Path:
        """A model's file from its name in the model library or its path; None: the model
        the settings choose, else the built-in one. KeyError names the known models."""
        return self._app.model_file(name_or_path)

    def generation_options(self) -> GenerationOptions:
        """The options an answer gets when nobody chose any: the user's sampling settings, and
        the loaded model's recommended sampling for the ones the user left alone (as in a chat)."""
        return self._app.generation_options()

    def library(self) -> list[dict[str, Any]]:
        """The model library: ``{"name", "path", "loaded"}`` per model, the loaded one first."""
        return self._app.library()

    def load_model(self, name_or_path: str | None = None) -> list[str]:
        """Load a model (None: the one the settings choose), queued like a turn; returns warnings.

        Blocks until it is loaded; never call it on the GUI thread. Raises ModelFileError naming
        the known models, or ModelLoadError when the file cannot be used (the old model stays).
        """
        return self._runner.run(lambda: self._app.load_model(name_or_path))

    def embedders(self) -> dict[str, Callable[[list[str]], list[list[float]]]]:
        """Text embedding functions plugins offer (``register_embedders``), by name."""
        return {e.args[0]: e.args[1] for e in self.collect("register_embedders")
                if len(e.args) >= 2 and isinstance(e.args[0], str) and callable(e.args[1])}

    def services(self) -> dict[str, Callable[..., Any]]:
        """The functions enabled plugins offer each other (``register_services``), by name; of two
        plugins offering one name, the first loaded wins."""
        found: dict[str, Callable[..., Any]] = {}
        for entry in self.collect("register_services"):
            if len(entry.args) >= 2 and isinstance(entry.args[0], str) and callable(entry.args[1]):
                if entry.args[0] in found:
                    if (entry.plugin, entry.args[0]) not in _WARNED_SERVICES:  # once, not on every call
                        _WARNED_SERVICES.add((entry.plugin, entry.args[0]))
                        log.warning("plugin %s offers the service %r another plugin already offers; the first "
                                    "is used", entry.plugin, entry.args[0])
                    continue
                found[entry.args[0]] = entry.args[1]
        return found

    def service(self, name: str) -> Callable[..., Any]:
        """The function another plugin offers as ``name``; ParleyError naming what is offered when
        no enabled plugin offers it (its plugin may be switched off)."""
        offered = self.services()
        if name not in offered:
            listed = ", ".join(sorted(offered)) or "none"
            raise ParleyError(f"No plugin offers {name!r}; is the plugin that offers it switched on "
                              f"(Settings → Plugins)? Offered: {listed}.")
        return offered[name]

    # -- what plugins registered -------------------------------------------------------------------
    def collect(self, hook: str) -> list[Registered]:
        """Everything the enabled plugins give through a ``register_*`` hook, with who gave it.

        For example ``context.collect("register_prompt_templates")``. Each plugin's
        implementation is called on its own; a plugin that raises is switched off and left out.
        """
        return self._app.collect(hook)

    def tools(self) -> dict[str, Any]:
        """The tools every enabled plugin registered (checked), by name."""
        return dict(self._app.tools())

    # -- the model ------------------------------------------------------------------------------------
    def complete(self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None, *,
                 on_token: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None, adapters: Iterable[Any] = (),
                 tools: Sequence[Tool] | None = None, tool_choice: str = "auto",
                 parallel_tool_calls: bool = True) -> TurnResult:
        """Ask the loaded model for one answer to ``messages``; blocks until it is written.

        When the model writes several answers at once (``model.parallel``), the call runs on
        the calling thread and joins the batch of answers being written; otherwise, in the
        window, it waits its turn on the engine's worker. Either way it blocks, so never call
        it on the GUI thread: use ``run_task``. Called by a turn itself
        (a hook, or a tool the turn runs) it runs at once; on the command line, on the calling
        thread.
        ``on_token(text)`` receives the answer as it streams; setting ``stop`` ends it early
        (finish_reason "cancelled"). The model answers without LoRA adapters unless
        ``adapters`` are given. With ``tools`` the model may ask for calls instead of (or after)
        text: they are returned in ``result.tool_calls`` and never run here; earlier calls and
        their results come as an assistant message with ``tool_calls`` and ``tool`` messages.
        ``tool_choice`` "required" makes the reply a call, "none" offers no tools;
        ``parallel_tool_calls`` False allows one call per reply at most.
        Raises EngineError when no model is loaded or it fails, ValueError for bad tool input.
        """
        reply = self._tool_reply(messages, options or GenerationOptions(), tools, tool_choice, on_token,
                                 parallel_tool_calls)
        messages, options, on_token = reply.messages, reply.options, reply.on_token
        if self._batches():
            # The engine writes answers from several threads in one batch: this one joins it
            # here, with its own Stop and adapters, instead of waiting for the answer being written.
            return self._runner.here(lambda: self._complete_here(reply, stop, adapters))

        def run() -> TurnResult:
            if stop is not None and stop.is_set():  # given up while it waited: nothing to do
                return TurnResult("", "cancelled")
            if not self._engine.loaded:
                raise EngineError("No model is loaded.")
            self._engine.set_adapters(list(adapters))
            template_tools = reply.template_tools
            with StopWatch(self._engine, stop) as watch:
                for event in self._engine.stream_chat(messages, options, template_tools):
                    watch.check()
                    if isinstance(event, TokenEvent) and on_token is not None:
                        on_token(event.text)
                    elif isinstance(event, ErrorEvent):
                        raise EngineError(event.message)
                    elif isinstance(event, DoneEvent):
                        watch.finished(event.finish_reason)
                        result = TurnResult(event.text, event.finish_reason, event.stats.as_dict(), event.prompt)
                        result.text, result.tool_calls = reply.read(event.text, event.finish_reason)
                        return result
            raise EngineError("The model stopped without finishing the answer.")

        return self._runner.run(run)

    def complete_many(self, messages: Sequence[ChatMessage], options: Sequence[GenerationOptions], *,
                      on_token: Callable[[int, str], None] | None = None,
                      on_done: Callable[[int, TurnResult], None] | None = None,
                      stop: threading.Event | None = None, adapters: Iterable[Any] = (),
                      tools: Sequence[Tool] | None = None, tool_choice: str = "auto",
                      parallel_tool_calls: bool = True) -> list[TurnResult]:
        """One answer to ``messages`` for each of ``options`` (e.g. different seeds), as :meth:`complete`.

        When the model batches (``model.parallel`` of at least that many), they are written at
        once and the prompt is evaluated once; otherwise one after another. ``on_token(index,
        text)`` streams them, ``on_done(index, result)`` is called as each ends. Returns the
        results in the order of ``options``.
        """
        options = list(options)
        if not options:
            return []
        if not self._batches() or len(options) > self.model.parallel:
            results = []
            for i, one in enumerate(options):
                streamed = (lambda text, i=i: on_token(i, text)) if on_token else None
                result = self.complete(messages, one, on_token=streamed, stop=stop, adapters=adapters, tools=tools,
                                       tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls)
                results.append(result)
                if on_done is not None:
                    on_done(i, result)
                if result.finish_reason == "cancelled":
                    break
            return results
        replies = [self._tool_reply(messages, one, tools, tool_choice, None, parallel_tool_calls) for one in options]
        first = replies[0]
        if stop is not None and stop.is_set():
            return [TurnResult("", "cancelled") for _ in options]
        request = self._runner.here(lambda: self._engine.answers(
            first.messages, [r.options for r in replies], first.template_tools, cancel=stop, adapters=list(adapters)))
        results: list[TurnResult | None] = [None] * len(options)
        for index, event in request.events():
            if isinstance(event, TokenEvent):
                if on_token is not None:
                    on_token(index, event.text)
            elif isinstance(event, ErrorEvent):
                for other in range(len(options)):
                    request.give_up(other)
                raise EngineError(event.message)
            elif isinstance(event, DoneEvent):
                result = TurnResult(event.text, event.finish_reason, event.stats.as_dict(), event.prompt)
                result.text, result.tool_calls = replies[index].read(event.text, event.finish_reason)
                results[index] = result
                if on_done is not None:
                    on_done(index, result)
        return [r for r in results if r is not None]

    def _batches(self) -> bool:
        """Whether the loaded model writes answers from several threads together."""
        return writes_together(self._engine)

    def _complete_here(self, reply: Any, stop: threading.Event | None, adapters: Iterable[Any]) -> TurnResult:
        """:meth:`complete` on the calling thread, joining the engine's batch."""
        if stop is not None and stop.is_set():  # given up while it waited: nothing to do
            return TurnResult("", "cancelled")
        on_token = reply.on_token
        for event in self._engine.stream_chat(reply.messages, reply.options, reply.template_tools,
                                              cancel=stop, adapters=list(adapters)):
            if isinstance(event, TokenEvent) and on_token is not None:
                on_token(event.text)
            elif isinstance(event, ErrorEvent):
                raise EngineError(event.message)
            elif isinstance(event, DoneEvent):
                result = TurnResult(event.text, event.finish_reason, event.stats.as_dict(), event.prompt)
                result.text, result.tool_calls = reply.read(event.text, event.finish_reason)
                return result
        raise EngineError("The model stopped without finishing the answer.")

    def prompt_for(self, messages: Sequence[ChatMessage], *, tools: Sequence[Tool] | None = None,
                   tool_choice: str = "auto") -> str:
        """The exact prompt text :meth:`complete` would give the model for these arguments:
        the model's chat template over the messages, with the tools in the model's protocol
        (their descriptions in the system prompt, or the template's own tools block).

        Count it with ``context.model.count_tokens`` to know whether a request fits before it
        is queued. Raises EngineError when no model is loaded, ValueError for bad tool input.
        """
        reply = self._tool_reply(messages, GenerationOptions(), tools, tool_choice, None)
        return self.model.render(reply.messages, reply.template_tools)

    def _tool_reply(self, messages: Sequence[ChatMessage], options: GenerationOptions,
                    tools: Sequence[Tool] | None, tool_choice: str,
                    on_token: Callable[[str], None] | None, parallel: bool = True) -> ToolReply:
        """How :meth:`complete` writes the request for the model (one place, so what
        :meth:`prompt_for` counts is what the model gets)."""
        messages = list(messages)
        if not tools and not any(m.role == "tool" or m.tool_calls for m in messages):
            return ToolReply.plain(messages, options, on_token)
        template = getattr(self._engine, "chat_template", None)
        return prepare_tool_reply(messages, options, tools or [], tool_choice,
                                  template.source if template is not None else None, on_token, parallel=parallel)


    def run_turn(self, messages: Sequence[ChatMessage], *, setup: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, on_token: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None, store: bool = False,
                 on_progress: Callable[[str], None] | None = None) -> TurnRun:
        """Answer the last user message with Parley's whole turn pipeline, earlier ones as history.

        ``setup`` is what a conversation keeps: ``{"system_prompt": ..., "plugins": {plugin:
        choice}}`` (a template, document collections, adapters, tools...), so every plugin
        applies its part. Tools that would ask the user are not run (there is no one to ask).
        ``options`` override generation options. With ``store`` the exchange is kept as a
        conversation, once its answer is whole (a turn that fails or is stopped leaves nothing);
        otherwise nothing of it stays. Queued like a turn; never call it on the
        GUI thread. Raises ValueError when the last message is not the user's.

        ``on_token(text)`` receives only the answer. A strategy that owns the turn (e.g.
        self-consistency) streams its samples and its progress lines to ``on_progress`` instead,
        and its answer reaches ``on_token`` in one piece when it has chosen; its words about the
        answer (how the samples voted) are in ``note``, not in ``text``.

        When the model writes several answers at once (``model.parallel``), the turn runs on
        the calling thread and its answer joins the batch being written, so turns asked from
        several threads (the window's chat, the API, the lab) are written together; ``stop``
        then ends this turn alone.
        """
        def turn() -> TurnRun:
            return self._app.run_turn(list(messages), setup or {}, options, on_token, stop, store,
                                      on_progress=on_progress)

        if self._batches():
            return self._runner.here(turn)
        return self._runner.run(turn)


class StopWatch:
    """Ends one generation when ``stop`` is set: asks the engine to stop once, and takes the
    request back if the answer ended on its own first (a Stop left over would end the next
    answer, someone else's)."""

    def __init__(self, engine: Any, stop: threading.Event | None):
        self.engine = engine
        self.stop = stop
        self.asked = False

    def __enter__(self) -> "StopWatch":
        return self

    def check(self) -> None:
        """Call on every event of the stream."""
        if self.stop is not None and self.stop.is_set() and not self.asked:
            self.asked = True
            self.engine.cancel()  # the engine ends this answer at its next token

    def finished(self, finish_reason: str) -> None:
        """The answer ended, with this reason."""
        if finish_reason == "cancelled":
            self.asked = False  # the engine used up the request

    def __exit__(self, *exc: Any) -> None:
        if self.asked:
            self.engine.reset_cancel()


#: True on the thread that runs the engine's turns and on the threads it starts (tools): a model
#: call made there runs at once, as it would wait for itself if it were queued.
_ON_ENGINE: contextvars.ContextVar[bool] = contextvars.ContextVar("parley_on_engine", default=False)


def mark_engine_thread() -> None:
    """Mark the calling thread as the one that runs turns (see :class:`EngineRunnerSlot`)."""
    _ON_ENGINE.set(True)


class EngineRunnerSlot:
    """Where plugins' model calls run; the window points it at its engine worker.

    Shared by every plugin's context, so one change reaches them all. A call made by a turn
    itself (a hook, or a tool the turn runs) runs at once instead.
    """

    def __init__(self) -> None:
        self.runner: EngineRunner | None = None

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` where the engine's turns run and return what it returns (or raise)."""
        if self.runner is None or _ON_ENGINE.get():
            return fn()
        return self.runner(fn)

    def here(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the calling thread (a model call that joins the engine's batch). With a
        window, never on its GUI thread, which it would freeze: RuntimeError there."""
        if self.runner is not None and not _ON_ENGINE.get() and threading.current_thread() is threading.main_thread():
            raise RuntimeError("A model call would freeze the window: run it with run_task.")
        return fn()
