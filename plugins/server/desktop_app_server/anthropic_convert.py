"""Anthropic's Messages API into Parley's and back: content blocks, tools, tool_choice.

A request's ``tool_use`` blocks (the assistant's earlier calls) and ``tool_result`` blocks (the
caller's results) become OpenAI's layout, an assistant message with ``tool_calls`` and one
``tool`` message per result, which ``context.complete`` puts into the model's tool protocol
(``desktop_app.core.client_tools``), as for ``/v1/chat/completions``. See
https://docs.anthropic.com/en/api/messages for the wire format.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from desktop_app.api import ChatMessage, Tool, TurnResult

from desktop_app_server.convert import client_tool
from desktop_app_server.schemas import AnthropicBlock, MessagesRequest
from desktop_app_server.wire import ApiError

__all__ = ["content_blocks", "conversation", "stop_reason", "tool_use_id", "tools_of"]


def _texts(blocks: Sequence[AnthropicBlock], where: str, allowed: tuple[str, ...] = ("text",)) -> None:
    for i, block in enumerate(blocks):
        if block.type not in allowed:
            raise ApiError(400, f"{where}.content.{i}: content blocks of type {block.type!r} are not supported "
                           f"here (this server reads {', '.join(allowed)}).", param=f"{where}.content.{i}")


def _plain(content: str | list[AnthropicBlock] | None, where: str) -> str:
    """The text of a ``system`` or a ``tool_result``'s content (text blocks only)."""
    if content is None or isinstance(content, str):
        return content or ""
    _texts(content, where)
    return "\n".join(block.text or "" for block in content)


def conversation(req: MessagesRequest) -> list[ChatMessage]:
    """The request's system prompt and messages as Parley's, calls and results included."""
    out = [ChatMessage("system", _plain(req.system, "system"))] if req.system else []
    for n, message in enumerate(req.messages):
        where = f"messages.{n}"
        if isinstance(message.content, str):
            out.append(ChatMessage(message.role, message.content))
        elif message.role == "assistant":
            out.append(_assistant(message.content, where))
        else:
            out.extend(_user(message.content, where))
    return out


def _assistant(blocks: list[AnthropicBlock], where: str) -> ChatMessage:
    _texts(blocks, where, ("text", "tool_use"))
    text = "\n".join(b.text or "" for b in blocks if b.type == "text")
    calls = []
    for i, block in enumerate(blocks):
        if block.type != "tool_use":
            continue
        if not block.id or not block.name:
            raise ApiError(400, f"{where}.content.{i}: a tool_use block needs its id and name.",
                           param=f"{where}.content.{i}")
        calls.append({"id": block.id, "type": "function",
                      "function": {"name": block.name, "arguments": json.dumps(block.input or {})}})
    return ChatMessage("assistant", text, tool_calls=calls or None)


def _user(blocks: list[AnthropicBlock], where: str) -> list[ChatMessage]:
    """A user turn: its tool results first (they answer the calls just before), then its text."""
    _texts(blocks, where, ("text", "tool_result"))
    results, texts = [], []
    for i, block in enumerate(blocks):
        if block.type == "text":
            texts.append(block.text or "")
            continue
        if not block.tool_use_id:
            raise ApiError(400, f"{where}.content.{i}: a tool_result block needs the tool_use_id of the call "
                           "it answers.", param=f"{where}.content.{i}")
        result = _plain(block.content, f"{where}.content.{i}")
        # The model reads an error as such, so it can say so or try otherwise.
        results.append(ChatMessage("tool", f"Error: {result}" if block.is_error else result,
                                   tool_call_id=block.tool_use_id))
    return results + ([ChatMessage("user", "\n".join(texts))] if texts else [])


def tools_of(req: MessagesRequest) -> tuple[list[Tool], str, bool]:
    """(the tools offered, Parley's tool_choice, whether a reply may hold several calls).

    ``tool_choice``: ``auto`` (the default with tools), ``any`` (some call), ``tool`` (that
    one), ``none`` (no call; earlier calls and results still reach the model).
    """
    choice = req.tool_choice
    if not req.tools:
        if choice is not None and choice.type not in ("auto", "none"):
            raise ApiError(400, "tool_choice needs tools.", param="tool_choice")
        return [], "none", True
    for i, tool in enumerate(req.tools):
        if tool.type not in (None, "custom"):
            raise ApiError(400, f"tools.{i}: Anthropic's server tools (type {tool.type!r}) are not available "
                           "here; describe a tool of your own with name, description and input_schema.",
                           param=f"tools.{i}")
    tools = [client_tool(t.name, t.description, t.input_schema) for t in req.tools]
    parallel = not (choice and choice.disable_parallel_tool_use)
    if choice is None or choice.type == "auto":
        return tools, "auto", parallel
    if choice.type == "none":
        return tools, "none", parallel
    if choice.type == "any":
        return tools, "required", parallel
    named = [t for t in tools if t.name == choice.name]
    if not named:
        raise ApiError(400, f"tool_choice names the tool {choice.name!r}, which is not in tools.",
                       param="tool_choice.name")
    return named, "required", parallel


def tool_use_id(call: Any) -> str:
    """An id in Anthropic's style (``toolu_…``) for a call Parley read from the model."""
    return call.id if call.id.startswith("toolu_") else "toolu_" + call.id.removeprefix("call_")


def content_blocks(result: TurnResult) -> list[dict[str, Any]]:
    """The answer's ``content``: its text (when it has some, or nothing else), then a
    ``tool_use`` block per call."""
    blocks: list[dict[str, Any]] = []
    if result.text or not result.tool_calls:
        blocks.append({"type": "text", "text": result.text})
    blocks += [{"type": "tool_use", "id": tool_use_id(c), "name": c.name, "input": c.arguments}
               for c in result.tool_calls]
    return blocks


def stop_reason(result: TurnResult) -> str:
    """``tool_use``, ``max_tokens`` or ``end_turn``.

    The engine does not say which stop sequence ended an answer: those read as ``end_turn``.
    """
    if result.tool_calls:
        return "tool_use"
    return "max_tokens" if result.finish_reason == "length" else "end_turn"
