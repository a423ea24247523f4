"""What a plugin gets from Parley: :class:`PluginContext`, one per plugin.

A plugin receives its context in ``app_started(context)`` (and in its panels' factories and
its commands' handlers). Everything a plugin may use of the app goes through it: its own
settings and folders, read access to the conversations, the per-conversation choice helper,
the model (one call at a time, queued like a turn), the tools every plugin registered, and
the window when there is one. Nothing here imports Qt or a plugin.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from desktop_app.core.engine import DoneEvent, ErrorEvent, TokenEvent
from desktop_app.core.errors import EngineError
from desktop_app.core.turn import ChatMessage, GenerationOptions, Turn, TurnResult

if TYPE_CHECKING:  # pragma: no cover
    from desktop_app.core.settings import Settings
    from desktop_app.core.store import Conversation, Message, Store

__all__ = [
    "ConversationChoice",
    "Conversations",
    "ModelAccess",
    "PluginContext",
    "PluginSettings",
    "Registered",
]


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
    """Read access to the stored conversations (plugins keep their own data in their folders)."""

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
        """(the choice that applies to a conversation, whether the conversation remembered it)."""
        choice = self.remembered(conversation_id)
        if choice is not None:
            return choice, True
        if self.selection.get(self.key):
            return dict(self.selection), False
        return dict(self._default() or {}), False

    def for_turn(self, turn: Turn) -> dict[str, Any]:
        """The choice for this turn, remembered with its conversation from now on."""
        own = turn.plugin_options.get(self._context.name) or {}
        if own.get(self.key) is not None:
            choice = {k: v for k, v in own.items() if not self._fields or k in self._fields}
            self.remember(turn.conversation_id, choice)
            return choice
        choice, remembered = self.current(turn.conversation_id)
        if choice.get(self.key) and not remembered:
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

    def render(self, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        """The exact prompt text the model's chat template makes of ``messages``."""
        return self._engine.render(list(messages), tools)

    def count_tokens(self, text: str) -> int:
        """How many tokens the loaded model makes of ``text`` (e.g. a prompt from :meth:`render`).

        Raises EngineError when no model is loaded, AttributeError for a backend that cannot tell.
        """
        return len(self._engine.tokenize(text))

    def load_adapter(self, path: str | Path) -> None:
        """Read a LoRA adapter file into memory for the loaded model (EngineError if it cannot)."""
        self._engine.load_adapter(path)

    def set_adapters(self, adapters: Sequence[Any]) -> bool:
        """Put these LoRA adapters (with their scales) on the model; True when that changed anything."""
        return self._engine.set_adapters(adapters)

    def release_adapter(self, path: str | Path) -> None:
        """Free a LoRA adapter file no answer uses any more."""
        release = getattr(self._engine, "release_adapter", None)
        if release is not None:
            release(path)


#: Runs a function where the engine's turns run (the window's engine worker) and returns its
#: result; the default runs it on the calling thread.
EngineRunner = Callable[[Callable[[], Any]], Any]


class PluginContext:
    """Everything a plugin may use of Parley; handed to ``app_started(context)``.

    One per plugin. Built by the app (and by :class:`desktop_app.testing.PluginHarness`);
    a plugin never builds one.
    """

    def __init__(self, name: str, *, settings: "Settings", store: "Store", engine: Any,
                 data_dir: Path, cache_dir: Path, log_dir: Path,
                 collect: Callable[[str], list[Registered]],
                 tools: Callable[[], dict[str, Any]],
                 default_system_prompt: Callable[[Path | None], str],
                 model_file: Callable[[str | None], Path],
                 engine_runner: "EngineRunnerSlot"):
        self.name = name
        self.settings = PluginSettings(settings, name)
        self.conversations = Conversations(store)
        self.model = ModelAccess(engine)
        #: The window's helpers (:class:`desktop_app.ui.api.WindowApi`) while the window runs.
        self.window: Any = None
        self._app_settings = settings
        self._store = store
        self._engine = engine
        self._folders = {"data": data_dir, "cache": cache_dir, "log": log_dir}
        self._collect = collect
        self._tools = tools
        self._default_system_prompt = default_system_prompt
        self._model_file = model_file
        self._runner = engine_runner

    # -- settings and folders ----------------------------------------------------------------
    def app_setting(self, key: str) -> Any:
        """Read one of Parley's own settings, e.g. ``"chat.system_prompt"`` (read-only)."""
        return self._app_settings.get(key)

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
        meta = dict(self._store.get_conversation(conversation_id).meta)
        meta[self.name] = choice
        self._store.update_conversation_meta(conversation_id, meta)

    def default_system_prompt(self, model_path: Path | None = None) -> str:
        """The system prompt answers get when neither the conversation nor the user set one."""
        return self._default_system_prompt(model_path)

    def model_file(self, name_or_path: str | None = None) -> Path:
        """A model's file from its name in the model library or its path; None: the model
        the settings choose, else the built-in one. KeyError names the known models."""
        return self._model_file(name_or_path)

    # -- what plugins registered -------------------------------------------------------------------
    def collect(self, hook: str) -> list[Registered]:
        """Everything the enabled plugins give through a ``register_*`` hook, with who gave it.

        For example ``context.collect("register_prompt_templates")``. Each plugin's
        implementation is called on its own; a plugin that raises is switched off and left out.
        """
        return self._collect(hook)

    def tools(self) -> dict[str, Any]:
        """The tools every enabled plugin registered (checked), by name."""
        return dict(self._tools())

    # -- the model ------------------------------------------------------------------------------------
    def complete(self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None, *,
                 on_token: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None, adapters: Iterable[Any] = ()) -> TurnResult:
        """Ask the loaded model for one answer to ``messages``; blocks until it is written.

        The call waits for the answer being written, if any, and runs where turns run (the
        window's engine worker), so never call it on the GUI thread: use ``run_task``.
        ``on_token(text)`` receives the answer as it streams; setting ``stop`` ends it early
        (finish_reason "cancelled"). The model answers without LoRA adapters unless
        ``adapters`` are given. Raises EngineError when no model is loaded or it fails.
        """
        messages = list(messages)
        options = options or GenerationOptions()

        def run() -> TurnResult:
            if not self._engine.loaded:
                raise EngineError("No model is loaded.")
            self._engine.set_adapters(list(adapters))
            for event in self._engine.stream_chat(messages, options):
                if stop is not None and stop.is_set():
                    self._engine.cancel()  # the engine ends this answer at its next token
                if isinstance(event, TokenEvent) and on_token is not None:
                    on_token(event.text)
                elif isinstance(event, ErrorEvent):
                    raise EngineError(event.message)
                elif isinstance(event, DoneEvent):
                    return TurnResult(event.text, event.finish_reason, event.stats.as_dict(), event.prompt)
            raise EngineError("The model stopped without finishing the answer.")

        return self._runner.run(run)


class EngineRunnerSlot:
    """Where plugins' model calls run; the window points it at its engine worker.

    Shared by every plugin's context, so one change reaches them all.
    """

    def __init__(self) -> None:
        self.runner: EngineRunner | None = None

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` where the engine's turns run and return what it returns (or raise)."""
        return fn() if self.runner is None else self.runner(fn)
