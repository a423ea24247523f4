"""Helpers for testing Parley and its plugins without loading a model.

:class:`PluginHarness` builds a real Parley around chosen plugins with a scripted model: send a
message, then check the answer, the exact prompt and the trace.

:class:`FakeEngine` stands in for :class:`desktop_app.core.engine.Engine` in the turn
pipeline: queue the replies it should give with :meth:`FakeEngine.enqueue`, run turns, then
look at what it was asked in :attr:`FakeEngine.history`. Use the real model for anything
about what a model actually writes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from desktop_app.core.chat_template import ChatTemplate
from desktop_app.core.engine import DoneEvent, ErrorEvent, GenerationStats, TokenEvent
from desktop_app.core.turn import ChatMessage, GenerationOptions, TraceEntry

__all__ = ["FakeEngine", "FakeRequest", "HarnessReply", "PluginHarness"]


@dataclass
class FakeRequest:
    """One call to :meth:`FakeEngine.stream_chat`: what the pipeline asked for."""

    messages: list[ChatMessage]
    options: GenerationOptions
    tools: list[dict[str, Any]] | None
    prompt: str = ""


@dataclass
class FakeEngine:
    """A scripted engine: each generation streams the next queued reply word by word.

    A queued reply may also be a callable ``reply(request) -> str`` (to answer from what was
    asked) or an exception instance (the generation fails with it). Stop strings end a reply
    as in the real engine. ``stop_after`` (a number of words) presses Stop in the middle of
    the next reply, as a user would.
    """

    template_source: str | None = None
    replies: list[Any] = field(default_factory=list)
    history: list[FakeRequest] = field(default_factory=list)
    model_path: Path | None = None
    stop_after: int | None = None

    def __post_init__(self) -> None:
        self._cancel = threading.Event()
        self.chat_template = ChatTemplate(self.template_source)

    def enqueue(self, *replies: str | Callable[[FakeRequest], str] | BaseException) -> "FakeEngine":
        """Queue replies for the next generations, in order."""
        self.replies.extend(replies)
        return self

    # The Engine interface the app uses (so it can also stand in as a backend).
    @property
    def loaded(self) -> bool:
        """Always True: the fake model is always there."""
        return True

    @staticmethod
    def gpu_offload_supported() -> bool:
        """The fake model needs no GPU."""
        return False

    def load(self, path: Path | str, config: Any = None) -> list[str]:
        """Remember the path; nothing is read."""
        self.model_path = Path(path)
        return []

    def unload(self) -> None:
        """Nothing to free."""

    def load_adapter(self, path: Path | str) -> None:
        """Accept any adapter file that exists."""
        if not Path(path).exists():
            from desktop_app.core.errors import EngineError

            raise EngineError(f"The LoRA adapter {path} does not exist.")

    def set_adapters(self, adapters: Sequence[Any]) -> bool:
        """Remember the LoRA adapters asked for (the fake model has no weights to change)."""
        wanted = [(a.path, a.scale) if hasattr(a, "path") else tuple(a) for a in adapters]
        for path, _ in wanted:
            self.load_adapter(path)
        changed = wanted != getattr(self, "adapters", [])
        self.adapters = wanted
        return changed

    @property
    def context_length(self) -> int:
        """A generous context window."""
        return 8192

    @property
    def cancel_event(self) -> threading.Event:
        """Set by :meth:`cancel` until a generation consumes it."""
        return self._cancel

    def cancel(self) -> None:
        """Stop the current or next generation."""
        self._cancel.set()

    def reset_cancel(self) -> None:
        """Forget a Stop nothing consumed."""
        self._cancel.clear()

    def render(self, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        """Render with the chat template given at construction (ChatML when none)."""
        return self.chat_template.render([m.as_dict() for m in messages], tools=tools)

    def stream_chat(self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None,
                    tools: list[dict[str, Any]] | None = None, keep_last: int = 1) -> Iterator[Any]:
        """Stream the next queued reply; fails clearly when the script has run out."""
        options = options or GenerationOptions()
        request = FakeRequest(list(messages), options, tools, self.render(messages, tools))
        self.history.append(request)
        if not self.replies:
            yield ErrorEvent("FakeEngine has no reply queued for this generation.")
            return
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            yield ErrorEvent(str(reply))
            return
        text = reply(request) if callable(reply) else reply
        ends = [i for i in (text.find(s) for s in options.stop if s) if i != -1]
        if ends:
            text = text[:min(ends)]
        stats = GenerationStats(prompt_tokens=len(request.prompt.split()))
        sent = ""
        stop_after, self.stop_after = self.stop_after, None
        for i, word in enumerate(text.split(" ")):
            if i == stop_after:
                self._cancel.set()
            if self._cancel.is_set():
                self._cancel.clear()
                yield DoneEvent(sent, "cancelled", stats, request.prompt)
                return
            piece = word if i == 0 else " " + word
            sent += piece
            stats.generated_tokens += 1
            yield TokenEvent(piece)
        yield DoneEvent(sent, "stop", stats, request.prompt)


@dataclass
class HarnessReply:
    """What one :meth:`PluginHarness.send` produced and what the model was asked."""

    #: The stored answer (what the user would read), or the partial answer of a failed turn.
    answer: str
    #: The exact prompt text of the last model call, after the chat template.
    prompt: str
    #: The messages of the last model call (system first), as the template got them.
    messages: list[ChatMessage]
    #: Who added what to the prompt: ``entry.plugin``, ``entry.kind``, ``entry.content``.
    trace: list[TraceEntry]
    #: Every model call of the turn (more than one with tools or a strategy).
    requests: list[FakeRequest]
    #: The answer's id in the store, and the conversation's.
    message_id: int | None = None
    conversation_id: int | None = None
    #: Why the turn failed, or None.
    error: str | None = None

    @property
    def system(self) -> str:
        """The system message the model got ("" when there was none)."""
        return next((m.content for m in self.messages if m.role == "system"), "")


class PluginHarness:
    """A real Parley built around the plugins you choose, with a scripted model: for plugin tests.

    Example::

        from desktop_app.testing import PluginHarness
        import my_plugin

        def test_it_answers_in_french():
            with PluginHarness(plugins=[my_plugin], replies=["Bonjour !"]) as harness:
                reply = harness.send("Hello")
                assert reply.answer == "Bonjour !"
                assert "Always answer in French." in reply.system

    ``plugins`` are modules or objects with hook functions (a dict ``{name: plugin}`` names
    them; otherwise the name is the module's last dotted part). ``builtins`` adds Parley's own
    plugins by name (e.g. ``["prompt_templates"]``). ``settings`` sets settings before the
    plugins start: a key without a dot is a setting of the first plugin, others are full keys
    (``"chat.system_prompt"``, ``"plugins.tools.max_rounds"``). ``replies`` are what the
    scripted model answers, in order (see :class:`FakeEngine`; more with :meth:`reply`).
    Everything lives in a temporary folder that is removed on :meth:`close`; the user's
    own settings and conversations are never touched.
    """

    def __init__(self, plugins: Sequence[Any] | dict[str, Any] = (), replies: Sequence[Any] = (), *,
                 settings: dict[str, Any] | None = None, builtins: Sequence[str] = (),
                 chat_template: str | None = None):
        import tempfile

        import tomli_w

        from desktop_app.context import build_context
        from desktop_app.core.paths import AppPaths
        from desktop_app.plugins import PluginHost

        named = dict(plugins) if isinstance(plugins, dict) else {_plugin_name(p): p for p in plugins}
        self._folder = tempfile.TemporaryDirectory(prefix="parley-plugin-test-")
        root = Path(self._folder.name)
        paths = AppPaths(root / "config", root / "data", root / "cache", root / "logs").ensure()
        first = next(iter(named), None)
        values: dict[str, Any] = {}
        for key, value in (settings or {}).items():
            full = key if "." in key else f"plugins.{first}.{key}"
            table = values
            *sections, leaf = full.split(".")
            for section in sections:
                table = table.setdefault(section, {})
            table[leaf] = value
        paths.settings_file.write_text(tomli_w.dumps(values), encoding="utf-8")
        host = PluginHost(default_plugins=[f"desktop_app_{b}" for b in builtins], entry_points=lambda: [])
        host.load_all()
        for name, plugin in named.items():
            if host.register(plugin, name=name) is None:
                self._folder.cleanup()
                raise ValueError(f"The plugin {name} could not be registered: {host.records[name].error}")
        self.engine = FakeEngine(template_source=chat_template).enqueue(*replies)
        self.app = build_context(paths, host=host, engine=self.engine)
        self.engine.model_path = root / "scripted-model.gguf"
        problems = [f"{r.name}: {r.error}" for r in host.failed()]
        if problems:
            self.close()
            raise ValueError("A plugin failed when Parley started: " + "; ".join(problems))
        self.conversation_id: int | None = None

    # -- using it ---------------------------------------------------------------------------
    def reply(self, *replies: Any) -> "PluginHarness":
        """Queue more answers for the scripted model."""
        self.engine.enqueue(*replies)
        return self

    def context(self, plugin: str | None = None) -> Any:
        """The :class:`desktop_app.api.PluginContext` a plugin got (default: the first one)."""
        names = [n for n, r in self.app.plugins.records.items() if r.source == "registered"]
        return self.app.plugin_context(plugin or (names[0] if names else "core"))

    def new_conversation(self, system_prompt: str | None = None) -> int:
        """Start a new conversation; the next :meth:`send` goes to it."""
        self.conversation_id = self.app.store.create_conversation(system_prompt=system_prompt).id
        return self.conversation_id

    def send(self, text: str, *, plugin_options: dict[str, dict[str, Any]] | None = None,
             options: dict[str, Any] | None = None, approve_tools: bool | None = None) -> HarnessReply:
        """Send a message in the current conversation (a new one the first time) and answer it.

        ``plugin_options`` reach plugins as ``turn.plugin_options`` (per plugin name);
        ``options`` override generation options for this turn. A tool call that needs the
        user's approval is refused unless ``approve_tools`` is true.
        """
        if self.conversation_id is None:
            self.new_conversation()
        before = len(self.engine.history)
        approve = None if approve_tools is None else (lambda call, tool: bool(approve_tools))
        outcome = self.app.chat.send(self.conversation_id, text, options=options,
                                     plugin_options=plugin_options, approve_tool=approve)
        requests = self.engine.history[before:]
        message = outcome.message
        stored = self.app.store.get_trace(message.id) if message is not None else None
        trace = [TraceEntry.from_dict(e) for e in (stored or {}).get("entries", [])]
        last = requests[-1] if requests else None
        return HarnessReply(
            answer=message.content if message is not None else "",
            prompt=last.prompt if last else "", messages=list(last.messages) if last else [],
            trace=trace, requests=list(requests), message_id=message.id if message is not None else None,
            conversation_id=self.conversation_id, error=getattr(outcome, "error", None))

    def tools(self) -> dict[str, Any]:
        """The tools the plugins registered (checked), by name."""
        return dict(self.app.tools().tools)

    def close(self) -> None:
        """Let the plugins stop and remove the temporary folder."""
        app = getattr(self, "app", None)
        if app is not None:
            app.close()
            self.app = None
        self._folder.cleanup()

    def __enter__(self) -> "PluginHarness":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _plugin_name(plugin: Any) -> str:
    """A plugin's name from its module, as the host names it: ``my_package.hello`` is "hello"."""
    from desktop_app.plugins import plugin_name

    return plugin_name(getattr(plugin, "__name__", None) or type(plugin).__name__)
