"""The data a turn carries through the pipeline, and the trace of who added what.

Plugins receive a :class:`Turn` in ``prepare_turn`` and enrich it only through its
``add_*`` / ``set_option`` methods, so every addition is labelled with the plugin that made
it. The plugin host sets :data:`current_plugin` around each hook call; a plugin never has
to name itself.
"""

from __future__ import annotations

import contextvars
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

__all__ = [
    "Adapter",
    "ChatMessage",
    "ContextBlock",
    "GenerationOptions",
    "Tool",
    "TraceEntry",
    "Turn",
    "TurnResult",
    "current_plugin",
    "trigger_opening",
]

#: Name of the plugin whose hook is running; "core" outside any hook.
current_plugin: contextvars.ContextVar[str] = contextvars.ContextVar("current_plugin", default="core")


@dataclass
class ChatMessage:
    """One message as the model sees it: ``role`` is system, user, assistant or tool."""

    role: str
    content: str
    #: For an assistant message that calls tools (native tool templates only).
    tool_calls: list[dict[str, Any]] | None = None
    #: For a ``tool`` message: the tool's name and the call it answers.
    name: str | None = None
    tool_call_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the ``{"role", "content", ...}`` dict chat templates expect."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        for key in ("tool_calls", "name", "tool_call_id"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass
class GenerationOptions:
    """Sampling and length options for one answer.

    ``temperature`` 0 means greedy decoding. ``seed`` -1 picks a fresh random seed.
    """

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    #: OpenAI's penalties, as llama.cpp applies them (over the last 64 tokens): ``presence``
    #: lowers every token already written by that much, ``frequency`` by that much per use.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: Token id -> a number added to its logit before sampling (-100 bans the token,
    #: 100 all but forces it), as OpenAI's ``logit_bias``.
    logit_bias: dict[int, float] = field(default_factory=dict)
    max_tokens: int = 1024
    stop: list[str] = field(default_factory=list)
    seed: int = -1
    #: GBNF grammar the answer must follow (llama.cpp syntax, root rule "root").
    grammar: str | None = None
    #: JSON schema the answer must match; turned into a grammar by the engine.
    json_schema: dict[str, Any] | None = None
    #: With a grammar: it only binds answers that begin with this text (after blanks). An
    #: answer that begins otherwise drops the grammar at once and runs at full speed; the
    #: grammar must admit such free text itself. Used for "text or a tool call".
    grammar_trigger: str = ""
    #: Tools: "auto" lets the model choose; "required" makes its first reply a tool call.
    tool_choice: str = "auto"
    #: Tools: at most this many rounds of calls before the model must answer.
    max_tool_rounds: int = 4

    def as_dict(self) -> dict[str, Any]:
        """Return the options as plain JSON-ready data."""
        return asdict(self)


def trigger_opening(text: str, trigger: str) -> bool | None:
    """Whether ``text`` (leading blanks ignored) opens with ``trigger``: True when it does,
    False when it no longer can, None while the text so far is still a start of it."""
    opening = text.lstrip()
    if opening.startswith(trigger):
        return True
    if opening and not trigger.startswith(opening):
        return False
    return None


@dataclass
class ContextBlock:
    """Retrieved text put in front of the model, with where it came from (e.g. a file and page)."""

    text: str
    source: str
    score: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tool:
    """A function the model may call. ``parameters`` is a JSON schema of its arguments.

    ``function(**arguments)`` returns the result (text, or anything JSON can show) or raises
    with a message the model can act on. ``requires_approval`` marks tools that touch the
    user's files or other programs: by default the user is asked before each call.
    ``timeout`` bounds one call in seconds. ``source`` is who provides the tool (the plugin,
    or ``mcp:<server>``); the plugin host fills it in when the tool is registered.
    ``always_offered`` offers the tool on every turn, whether or not the user picked it in the
    Tools panel (for a tool that is the point of its plugin); otherwise the user picks it.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    requires_approval: bool = True
    timeout: float = 30.0
    source: str = ""
    always_offered: bool = False


@dataclass
class Adapter:
    """A LoRA adapter file and the scale to apply it at."""

    name: str
    path: str
    scale: float = 1.0


@dataclass
class TraceEntry:
    """One labelled part of the prompt: which plugin added what, of which kind."""

    plugin: str
    kind: str
    content: Any

    def as_dict(self) -> dict[str, Any]:
        """Return JSON-ready data for the store."""
        content = self.content
        if isinstance(content, (ChatMessage, ContextBlock, Adapter)):
            content = asdict(content)
        elif isinstance(content, Tool):
            content = {"name": content.name, "description": content.description,
                       "parameters": content.parameters}
        elif isinstance(content, list):
            content = [asdict(c) if isinstance(c, ChatMessage) else c for c in content]
        return {"plugin": self.plugin, "kind": self.kind, "content": content}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TraceEntry":
        """An entry as the store keeps it (see :meth:`as_dict`); its content stays plain data."""
        return cls(data["plugin"], data["kind"], data.get("content"))


@dataclass
class Turn:
    """A user's message on its way to the model.

    ``history`` is the conversation so far (oldest first, without the new message);
    ``user_message`` is what the user just typed. Plugins add to the rest.
    """

    conversation_id: int | None
    user_message: str
    history: list[ChatMessage] = field(default_factory=list)
    #: The base system prompt: the conversation's own, the settings', or the model's
    #: recommended one. A template replaces it (:meth:`replace_system`); plugins add to it.
    base_system: str = ""
    options: GenerationOptions = field(default_factory=GenerationOptions)
    examples: list[ChatMessage] = field(default_factory=list)
    context_blocks: list[ContextBlock] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    adapters: list[Adapter] = field(default_factory=list)
    plugin_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    trace: list[TraceEntry] = field(default_factory=list)
    #: Tool calls and their results so far in this turn (added by the tool loop).
    tool_exchange: list[ChatMessage] = field(default_factory=list)
    #: The system lines plugins added: (plugin, text), in the order they were added.
    system_parts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def system_prompt(self) -> str:
        """The system prompt as the model sees it (before context sources).

        The base first, then the plugins' lines: plugins in alphabetical order of their
        names, each plugin's lines in the order it added them. So the prompt does not depend
        on the order in which plugins happened to be registered, and replacing the base (a
        template does) never drops a plugin's line.
        """
        ordered = sorted(self.system_parts, key=lambda part: part[0])  # stable: a plugin's own order stays
        return "\n\n".join(text for text in [self.base_system, *(text for _, text in ordered)] if text)

    @system_prompt.setter
    def system_prompt(self, text: str) -> None:
        # Setting the whole prompt makes it the base, with no separate parts.
        self.base_system, self.system_parts = text, []

    def _record(self, kind: str, content: Any) -> None:
        self.trace.append(TraceEntry(current_plugin.get(), kind, content))

    def add_system(self, text: str) -> None:
        """Add a line to the system prompt, labelled with the plugin that adds it.

        It comes after the base system prompt, whatever replaces the base later; see
        :attr:`system_prompt` for the order of several plugins' lines.
        """
        self.system_parts.append((current_plugin.get(), text))
        self._record("system", text)

    def set_base_system(self, text: str) -> None:
        """Set the base system prompt (the pipeline does, from the conversation or the settings)."""
        self.base_system = text
        self._record("system", text)

    def replace_system(self, text: str) -> None:
        """Replace the base system prompt, e.g. with a template's own; other plugins' lines stay."""
        self.base_system = text
        self._record("system_replaced", text)

    def add_example(self, user: str, assistant: str) -> None:
        """Add a few-shot example pair, inserted as real chat turns before the history."""
        pair = [ChatMessage("user", user), ChatMessage("assistant", assistant)]
        self.examples.extend(pair)
        self._record("example", pair)

    def add_context(self, block: ContextBlock) -> None:
        """Add retrieved context with its source; it is shown to the model before the question."""
        self.context_blocks.append(block)
        self._record("context", block)

    def add_tool(self, tool: Tool) -> None:
        """Offer a tool to the model for this turn."""
        self.tools.append(tool)
        self._record("tool", tool)

    def add_adapter(self, adapter: Adapter) -> None:
        """Ask for a LoRA adapter to be active while this turn generates."""
        self.adapters.append(adapter)
        self._record("adapter", adapter)

    def set_user_message(self, text: str) -> None:
        """Replace the user's message as the model sees it (e.g. wrapped by a template)."""
        self.user_message = text
        self._record("user_message", text)

    def add_note(self, text: str) -> None:
        """Record something about this turn in the trace without changing the prompt (e.g. a warning)."""
        self._record("note", text)

    def set_option(self, name: str, value: Any) -> None:
        """Change one generation option (temperature, max_tokens, stop, ...)."""
        if not hasattr(self.options, name):
            raise AttributeError(f"Unknown generation option {name!r}")
        setattr(self.options, name, value)
        self._record("option", {name: value})

    def messages(self) -> list[ChatMessage]:
        """Return the chat messages in the order the model sees them.

        System prompt first (with context blocks appended as numbered sources), then
        few-shot examples, the history, the new user message and this turn's tool calls.
        """
        system = self.system_prompt
        if self.context_blocks:
            sources = "\n\n".join(
                f"[{i}] ({block.source})\n{block.text}" for i, block in enumerate(self.context_blocks, 1)
            )
            system = (system + "\n\n" if system else "") + (
                "Use the following sources to answer, and cite them by number.\n\n" + sources
            )
        out: list[ChatMessage] = []
        if system:
            out.append(ChatMessage("system", system))
        out.extend(self.examples)
        out.extend(self.history)
        out.append(ChatMessage("user", self.user_message))
        out.extend(self.tool_exchange)
        return out


@dataclass
class TurnResult:
    """What a turn produced: the answer text, why it stopped, and its stats."""

    text: str
    finish_reason: str
    stats: dict[str, Any] = field(default_factory=dict)
    prompt: str = ""
    samples: list[str] = field(default_factory=list)
    #: Calls the model asked for that the caller runs (``PluginContext.complete`` with tools).
    tool_calls: list[Any] = field(default_factory=list)
    #: What a strategy says about the answer for people (e.g. how its samples voted). It is
    #: stored and shown under the answer, but it is not the answer: ``text`` stays what the
    #: model answered (the API serves only that as ``content``).
    note: str = ""
