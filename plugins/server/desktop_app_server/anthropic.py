"""Anthropic's ``POST /v1/messages`` over the same queue: text, and tools the caller runs.

The model may answer with ``tool_use`` blocks (``stop_reason: "tool_use"``); the caller runs
them and sends ``tool_result`` blocks back, as with Anthropic's API. Streams use Anthropic's
events: ``message_start``, then per content block ``content_block_start`` /
``content_block_delta`` (``text_delta``, or ``input_json_delta`` for a call's input) /
``content_block_stop``, then ``message_delta`` and ``message_stop``.

Errors keep Anthropic's shape here: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import JSONResponse

from desktop_app.api import EngineError, ModelLoadError, TurnResult

from desktop_app_server.anthropic_convert import content_blocks, conversation, stop_reason, tool_use_id, tools_of
from desktop_app_server.convert import generation_options
from desktop_app_server.gateway import Gateway, LogEntry
from desktop_app_server.schemas import MessagesRequest
from desktop_app_server.streaming import Bridge
from desktop_app_server.wire import ApiError, new_id, sse

__all__ = ["ERROR_TYPES", "error_body", "error_response", "messages"]

#: HTTP status -> Anthropic's error type.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               503: "overloaded_error"}


def error_body(exc: ApiError) -> dict[str, Any]:
    """Anthropic's error object for ``exc``."""
    return {"type": "error", "error": {"type": ERROR_TYPES.get(exc.status, "api_error"), "message": exc.message}}


def error_response(exc: ApiError) -> JSONResponse:
    """An error answered in Anthropic's shape."""
    return JSONResponse(error_body(exc), status_code=exc.status, headers=exc.headers)


async def messages(gateway: Gateway, req: MessagesRequest, request: Request, run: Callable) -> Any:
    """Answer one Anthropic Messages request."""
    try:
        return await _messages(gateway, req, request, run)
    except ApiError as exc:
        return error_response(exc)


def _refuse_unsupported(req: MessagesRequest, model: dict[str, Any]) -> None:
    """What this server cannot do is refused, not answered as if it had been done."""
    thinking = (req.model_extra or {}).get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        raise ApiError(400, "Extended thinking is not supported by the models served here; send the request "
                       "without thinking.", param="thinking")
    if model.get("profile") is not None:
        raise ApiError(400, "Profiles are served on /v1/chat/completions (OpenAI's API), with their sources and "
                       "strategies; ask for a model here.", param="model")


async def _messages(gateway: Gateway, req: MessagesRequest, request: Request, run: Callable) -> Any:
    model = gateway.chat_model(req.model)
    _refuse_unsupported(req, model)
    convo = conversation(req)
    tools, tool_choice, parallel = tools_of(req)
    options = generation_options(req, gateway.context)
    options.max_tokens = req.max_tokens
    options.stop = [s for s in req.stop_sequences or [] if s]
    if req.temperature is not None:
        options.temperature = req.temperature
    prompt_tokens = 0
    if model["loaded"]:
        prompt_tokens = await asyncio.to_thread(gateway.check_fits, convo, options.max_tokens, "messages",
                                                tools=tools, tool_choice=tool_choice) or 0
    entry = LogEntry(new_id("req"), "POST", "/v1/messages", req.model)
    mid = new_id("msg")

    def job(bridge: Bridge) -> list[TurnResult]:
        result = gateway.complete(convo, options, tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel,
                                  on_token=bridge.token(0), stop=bridge.stop)
        bridge.post("choice", 0, result)
        return [result]

    def usage(result: TurnResult) -> dict[str, int]:
        return {"input_tokens": int(result.stats.get("prompt_tokens", 0)),
                "output_tokens": int(result.stats.get("generated_tokens", 0))}

    def answer(results: list[TurnResult]) -> dict[str, Any]:
        result = results[0]
        return {"id": mid, "type": "message", "role": "assistant", "model": req.model,
                "content": content_blocks(result), "stop_reason": stop_reason(result), "stop_sequence": None,
                "usage": usage(result)}

    async def stream(bridge: Bridge) -> AsyncIterator[bytes]:
        yield sse({"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": req.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 0}}}, "message_start")
        blocks = _Blocks()
        while True:
            item = await bridge.items.get()
            if item[0] == "token":
                for event in blocks.text(item[2]):
                    yield event
            elif item[0] == "end":
                try:
                    result = item[1].result()[0]
                except (ApiError, EngineError, ModelLoadError) as exc:
                    failure = exc if isinstance(exc, ApiError) else ApiError(500, str(exc), type="server_error")
                    yield sse(error_body(failure), "error")
                    return
                for event in blocks.finish(result):
                    yield event
                yield sse({"type": "message_delta", "delta": {"stop_reason": stop_reason(result),
                                                              "stop_sequence": None},
                           "usage": {"output_tokens": int(result.stats.get("generated_tokens", 0))}},
                          "message_delta")
                yield sse({"type": "message_stop"}, "message_stop")
                return

    return await run(gateway, request, model, entry, job, stream if req.stream else None, answer,
                     lambda exc: [sse(error_body(exc), "error")])


class _Blocks:
    """The content blocks of one streamed answer, numbered as they open.

    The text block opens with the first piece of text: a reply that turns out to be a call
    streams none (the model's call is held back until it is read), and then its content is
    only its ``tool_use`` blocks, as Anthropic's is.
    """

    def __init__(self) -> None:
        self.index = 0
        self.text_open = False

    def text(self, piece: str) -> list[bytes]:
        events = []
        if not self.text_open:
            self.text_open = True
            events.append(sse({"type": "content_block_start", "index": self.index,
                               "content_block": {"type": "text", "text": ""}}, "content_block_start"))
        events.append(sse({"type": "content_block_delta", "index": self.index,
                           "delta": {"type": "text_delta", "text": piece}}, "content_block_delta"))
        return events

    def _stop(self) -> bytes:
        event = sse({"type": "content_block_stop", "index": self.index}, "content_block_stop")
        self.index += 1
        return event

    def finish(self, result: TurnResult) -> list[bytes]:
        """Close the text block (or give an empty one to an answer with nothing else), then
        one block per call: its start with an empty ``input``, the input as JSON, its stop."""
        events = []
        if not self.text_open and not result.tool_calls:
            events += self.text("")[:1]
            self.text_open = True
        if self.text_open:
            events.append(self._stop())
        for call in result.tool_calls:
            events.append(sse({"type": "content_block_start", "index": self.index, "content_block": {
                "type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": {}}}, "content_block_start"))
            events.append(sse({"type": "content_block_delta", "index": self.index, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(call.arguments, ensure_ascii=False)}},
                "content_block_delta"))
            events.append(self._stop())
        return events
