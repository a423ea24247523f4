"""OpenAI request fields into Parley's: messages, generation options and the caller's tools."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Sequence

from desktop_app.api import ChatMessage, GenerationOptions, PluginContext, Tool

from desktop_app_server.schemas import ChatCompletionRequest, ChatMessageIn, ContentPart, _Sampling
from desktop_app_server.wire import ApiError

__all__ = ["chat_messages", "chat_tools", "client_tool", "generation_options", "logit_bias", "refuse_unsupported"]


def _text(content: str | list[ContentPart] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for i, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise ApiError(400, f"Content parts of type {part.type!r} are not supported: this server "
                           "reads text only.", param=f"{where}.content[{i}]", code="unsupported_content")
        parts.append(part.text)
    return "\n".join(parts)


def chat_messages(messages: Sequence[ChatMessageIn]) -> list[ChatMessage]:
    """The request's messages as Parley's (``developer`` is OpenAI's new name for ``system``)."""
    out = []
    for i, m in enumerate(messages):
        text = _text(m.content, f"messages[{i}]")
        role = "system" if m.role == "developer" else m.role
        calls = None
        if m.tool_calls:
            if role != "assistant":
                raise ApiError(400, "Only assistant messages can have tool_calls.", param=f"messages[{i}].tool_calls")
            calls = [{"id": c.id, "type": "function",
                      "function": {"name": c.function.name, "arguments": c.function.arguments
                                   if isinstance(c.function.arguments, str) else json.dumps(c.function.arguments)}}
                     for c in m.tool_calls]
        if role == "tool" and not m.tool_call_id:
            raise ApiError(400, "A tool message needs the tool_call_id of the call it answers.",
                           param=f"messages[{i}].tool_call_id")
        out.append(ChatMessage(role, text, tool_calls=calls, name=m.name, tool_call_id=m.tool_call_id))
    return out


def _unused(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("A client's tool runs in the client: the server returns its calls.")


def client_tool(name: str, description: str, parameters: dict[str, Any] | None) -> Tool:
    """A tool the caller runs: offered to the model, never run here (its calls go back)."""
    return Tool(name, description, parameters or {"type": "object", "properties": {}}, _unused,
                requires_approval=False, source="client")


def chat_tools(req: ChatCompletionRequest) -> tuple[list[Tool], str]:
    """The caller's tools as Parley's (never run here: calls go back to the caller) and the
    tool choice ("auto", "required" or "none"); a named function becomes "required" with only
    that function offered."""
    if not req.tools:
        if req.tool_choice not in (None, "none", "auto"):
            raise ApiError(400, "tool_choice needs tools.", param="tool_choice")
        return [], "none"
    tools = [client_tool(t.function.name, t.function.description, t.function.parameters) for t in req.tools]
    choice = req.tool_choice or "auto"
    if not isinstance(choice, str):
        named = [t for t in tools if t.name == choice.function.name]
        if not named:
            raise ApiError(400, f"tool_choice names the function {choice.function.name!r}, which is not in tools.",
                           param="tool_choice")
        return named, "required"
    return tools, choice


#: OpenAI fields that would change the answer and that this server cannot honour, with what
#: to do instead. Refused, rather than answered as if they had been applied; fields that change
#: nothing about the answer (``store``, ``metadata``, ``user``, ``service_tier`` ...) are accepted.
_UNSUPPORTED = {
    "functions": "functions and function_call are OpenAI's old way of offering tools: send them as tools "
                 "(with tool_choice) instead.",
    "function_call": "functions and function_call are OpenAI's old way of offering tools: send them as tools "
                     "(with tool_choice) instead.",
    "audio": "Audio output is not supported: this server writes text only.",
    "web_search_options": "Web search is not supported: the models here answer from the request alone.",
    "reasoning_effort": "reasoning_effort is not supported: the models served here have no reasoning setting.",
    "verbosity": "verbosity is not supported by this server: ask for the length you want in the messages, "
                 "or set max_tokens.",
}


def _unsupported(name: str, message: str) -> ApiError:
    return ApiError(400, message, param=name, code="unsupported_parameter")


def refuse_unsupported(req: _Sampling, logprobs: Any = None) -> None:
    """Refuse what this server cannot do, rather than answer as if it had."""
    if logprobs:
        raise _unsupported("logprobs", "logprobs (and top_logprobs) are not supported by this server: it does not "
                           "report token probabilities. Send the request without them.")
    stop = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if len(stop) > 4:
        raise ApiError(400, "At most 4 stop sequences are allowed.", param="stop")
    extra = req.model_extra or {}
    for name, message in _UNSUPPORTED.items():
        if extra.get(name) is not None:
            raise _unsupported(name, message)
    modalities = extra.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or set(modalities) - {"text"}):
        raise _unsupported("modalities", 'Only the "text" modality is supported: this server writes text only.')


def logit_bias(req: Any, vocab_size: int | None = None) -> dict[int, float]:
    """The request's ``logit_bias`` with integer token ids, checked (-100 to 100; ids the model has)."""
    given = getattr(req, "logit_bias", None) or {}
    bias: dict[int, float] = {}
    for key, value in given.items():
        try:
            token = int(key)
        except ValueError:
            raise ApiError(400, f"Invalid logit_bias key {key!r}: keys are token ids (integers, as strings).",
                           param="logit_bias") from None
        if token < 0 or (vocab_size and token >= vocab_size):
            top = f"0 to {vocab_size - 1}" if vocab_size else "0 or more"
            raise ApiError(400, f"Invalid logit_bias key {key!r}: this model's token ids are {top}.",
                           param="logit_bias")
        if not -100 <= value <= 100:
            raise ApiError(400, f"Invalid logit_bias value {value} for token {key}: biases are from -100 to 100.",
                           param="logit_bias")
        bias[token] = float(value)
    return bias


def generation_options(req: Any, context: PluginContext, max_tokens: int | None = None) -> GenerationOptions:
    """The request's sampling fields; for the ones it leaves out, what a chat in Parley would
    use (the user's settings, and the loaded model's recommended sampling where they left it)."""
    defaults = context.generation_options()

    def given(name: str, default: str | None = None) -> Any:
        value = getattr(req, name, None)
        return getattr(defaults, default) if value is None and default else value

    stop = given("stop")
    stop = [stop] if isinstance(stop, str) else list(stop or [])
    seed = given("seed")
    return GenerationOptions(
        temperature=given("temperature", "temperature"),
        top_p=given("top_p", "top_p"),
        top_k=given("top_k", "top_k"),
        min_p=given("min_p", "min_p"),
        repeat_penalty=given("repeat_penalty", "repeat_penalty"),
        max_tokens=max_tokens or given("max_tokens", "max_tokens"),
        stop=[s for s in stop if s],
        seed=-1 if seed is None else seed,
        grammar=given("grammar") or None,
        presence_penalty=given("presence_penalty") or 0.0,
        frequency_penalty=given("frequency_penalty") or 0.0,
        logit_bias=logit_bias(req, context.model.vocab_size if context.model.loaded else None),
    )


def response_schema(req: ChatCompletionRequest) -> dict[str, Any] | None:
    """The JSON schema ``response_format`` asks the answer to follow (grammar-enforced), or None."""
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None or not isinstance(fmt.json_schema.schema_, dict):
        raise ApiError(400, "response_format of type json_schema needs json_schema.schema.",
                       param="response_format.json_schema")
    return fmt.json_schema.schema_


def choice_options(options: GenerationOptions, index: int) -> GenerationOptions:
    """Options of the ``index``-th of ``n`` choices: a fixed seed moves on, so choices differ."""
    return options if index == 0 or options.seed < 0 else replace(options, seed=options.seed + index)
