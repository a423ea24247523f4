"""One model reply that may call tools the caller runs itself (e.g. a program using the API).

Parley's own tool loop (``tool_loop.py``) runs the tools and goes on; here the calls are handed
back instead. The caller's earlier calls and their results come in OpenAI's layout (an
assistant message with ``tool_calls``, then one ``tool`` message per result) and are put in the
model's protocol, so a model whose chat template knows no tools reads them the same way it
reads Parley's own (see ``tool_protocol.py``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any, Callable, Sequence

from desktop_app.core.tool_loop import CallHider, call_options
from desktop_app.core.tool_protocol import ToolProtocol, protocol_for
from desktop_app.core.tools import ToolCall, ToolError, ToolOutcome
from desktop_app.core.turn import ChatMessage, GenerationOptions, Tool

__all__ = ["ToolReply", "prepare_tool_reply"]

TOOL_CHOICES = ("auto", "required", "none")


class ToolReply:
    """A reply being prepared: the messages and options to generate with, and how to read it."""

    def __init__(self, protocol: ToolProtocol | None, messages: list[ChatMessage], options: GenerationOptions,
                 required: bool, on_token: Callable[[str], None] | None, may_call: bool = True,
                 parallel: bool = True):
        self.protocol = protocol
        #: Whether the reply may hold several calls (OpenAI's ``parallel_tool_calls``).
        self.parallel = parallel
        self.messages = messages
        self.options = options
        self.may_call = may_call
        # A reply that may be a call is held back from the stream until it is known to be text.
        self.hider = CallHider(on_token, protocol.trigger, required, protocol.calls_after_text) \
            if may_call and protocol is not None else None
        #: What to stream the reply's tokens to.
        self.on_token = self.hider or on_token

    @classmethod
    def plain(cls, messages: list[ChatMessage], options: GenerationOptions,
              on_token: Callable[[str], None] | None) -> "ToolReply":
        """A reply without tools: the messages as they are, the text as the model writes it."""
        return cls(None, messages, options, False, on_token, may_call=False)

    @property
    def template_tools(self) -> list[dict[str, Any]] | None:
        """The ``tools`` the chat template gets (native protocol), else None."""
        return self.protocol.template_tools() if self.may_call and self.protocol is not None else None

    def read(self, text: str, finish_reason: str) -> tuple[str, list[ToolCall]]:
        """(the text of the reply without its calls, the calls in order)."""
        if self.hider is None:
            return text, []
        if finish_reason == "cancelled":
            self.hider.flush()
            return self.hider.shown, []
        try:
            calls = self.protocol.parse_calls(text)
        except ToolError:
            calls = []  # not a usable call: the caller gets what the model wrote
        if not calls:
            self.hider.flush()
            if self.hider.state == "hidden" and self.hider.on_token and text:
                self.hider.on_token(text)  # it looked like a call but was none
            return text, []
        if not self.parallel:
            # The grammar allows one call, but a call after free text is not bound by it.
            calls = calls[:1]
        for call in calls:
            # Unique across a conversation: clients index calls by id.
            call.id = call.id or f"call_{uuid.uuid4().hex[:24]}"
        return self.hider.shown.strip(), calls


def prepare_tool_reply(messages: Sequence[ChatMessage], options: GenerationOptions, tools: Sequence[Tool],
                       tool_choice: str, template_source: str | None,
                       on_token: Callable[[str], None] | None = None, *, parallel: bool = True) -> ToolReply:
    """Set up one reply that may call ``tools``: ``tool_choice`` "auto", "required" or "none"
    (no call now; earlier calls and results are still shown to the model in its protocol).
    Without ``parallel`` the reply holds one call at most.

    Raises ValueError for an unknown ``tool_choice`` and for tool results that answer no call.
    """
    if tool_choice not in TOOL_CHOICES:
        raise ValueError(f"tool_choice must be one of {', '.join(TOOL_CHOICES)}, not {tool_choice!r}.")
    question = next((m.content for m in reversed(messages) if m.role == "user"), "")
    protocol = protocol_for(template_source, list(tools), question)
    prepared = _in_protocol(list(messages), protocol)
    if tool_choice == "none" or not tools:
        return ToolReply(protocol, prepared, options, False, on_token, may_call=False)
    instructions = protocol.system_text()
    if instructions:
        if prepared and prepared[0].role == "system":
            first = prepared[0]
            prepared[0] = replace(first, content=f"{first.content}\n\n{instructions}" if first.content else instructions)
        else:
            prepared.insert(0, ChatMessage("system", instructions))
    required = tool_choice == "required"
    return ToolReply(protocol, prepared, call_options(protocol, options, required, parallel), required, on_token,
                     parallel=parallel)


def _in_protocol(messages: list[ChatMessage], protocol: ToolProtocol) -> list[ChatMessage]:
    """The caller's earlier calls and results, written as this model's protocol writes them."""
    out: list[ChatMessage] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        if message.role == "assistant" and message.tool_calls:
            calls = [_call_from_openai(c) for c in message.tool_calls]
            results: dict[str, str] = {}
            j = i + 1
            while j < len(messages) and messages[j].role == "tool":
                key = messages[j].tool_call_id or messages[j].name or ""
                results[key] = messages[j].content
                j += 1
            outcomes = []
            for n, call in enumerate(calls):
                result = results.get(call.id, results.get(call.name))
                if result is None and len(results) == len(calls):
                    result = list(results.values())[n]  # results without ids, in the calls' order
                outcomes.append(ToolOutcome(call, "allowed", result=result if result is not None else
                                            "(the caller sent no result for this call)"))
            out.extend(protocol.exchange(outcomes, message.content or ""))
            i = j
            continue
        if message.role == "tool":
            raise ValueError("A tool message must follow the assistant message whose tool_calls it answers.")
        out.append(message)
        i += 1
    return out


def _call_from_openai(call: Any) -> ToolCall:
    """A ToolCall from OpenAI's ``{"id", "type": "function", "function": {"name", "arguments"}}``."""
    if not isinstance(call, dict):
        raise ValueError("Each tool call must be an object with an id and a function.")
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            arguments = {"value": arguments}
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("A tool call names no function.")
    return ToolCall(name, arguments if isinstance(arguments, dict) else {"value": arguments}, str(call.get("id") or ""))
