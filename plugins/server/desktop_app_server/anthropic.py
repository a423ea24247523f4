"""Anthropic's ``POST /v1/messages`` (text in, text out, streamed or not) over the same queue.

Errors keep Anthropic's shape here: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import JSONResponse

from desktop_app.api import ChatMessage, TurnResult

from desktop_app_server.convert import generation_options
from desktop_app_server.gateway import Gateway, LogEntry
from desktop_app_server.schemas import MessagesRequest
from desktop_app_server.streaming import Bridge
from desktop_app_server.wire import ApiError, new_id, sse

__all__ = ["messages"]

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if block.type != "text":
            raise ApiError(400, f"Content blocks of type {block.type!r} are not supported: text only.",
                           param="messages")
        parts.append(block.text or "")
    return "\n".join(parts)


def _stop_reason(result: TurnResult, stops: list[str]) -> tuple[str, str | None]:
    # The engine does not say which stop sequence ended an answer: those read as end_turn.
    return ("max_tokens", None) if result.finish_reason == "length" else ("end_turn", None)


async def messages(gateway: Gateway, req: MessagesRequest, request: Request, run: Callable) -> Any:
    """Answer one Anthropic Messages request."""
    try:
        return await _messages(gateway, req, request, run)
    except ApiError as exc:
        return JSONResponse({"type": "error", "error": {"type": _ERROR_TYPES.get(exc.status, "api_error"),
                                                        "message": exc.message}},
                            status_code=exc.status, headers=exc.headers)


async def _messages(gateway: Gateway, req: MessagesRequest, request: Request, run: Callable) -> Any:
    model = gateway.chat_model(req.model)
    convo = [ChatMessage("system", _text(req.system))] if req.system else []
    convo += [ChatMessage(m.role, _text(m.content)) for m in req.messages]
    options = generation_options(req, gateway.context)
    options.max_tokens = req.max_tokens
    options.stop = [s for s in req.stop_sequences or [] if s]
    if req.temperature is not None:
        options.temperature = req.temperature
    if model["loaded"]:
        await asyncio.to_thread(gateway.check_fits, convo, options.max_tokens)
    entry = LogEntry(new_id("req"), "POST", "/v1/messages", req.model)
    mid = new_id("msg")

    def job(bridge: Bridge) -> list[TurnResult]:
        result = gateway.complete(convo, options, on_token=bridge.token(0), stop=bridge.stop)
        bridge.post("choice", 0, result)
        return [result]

    def answer(results: list[TurnResult]) -> dict[str, Any]:
        result = results[0]
        reason, sequence = _stop_reason(result, options.stop)
        return {"id": mid, "type": "message", "role": "assistant", "model": req.model,
                "content": [{"type": "text", "text": result.text}], "stop_reason": reason, "stop_sequence": sequence,
                "usage": {"input_tokens": int(result.stats.get("prompt_tokens", 0)),
                          "output_tokens": int(result.stats.get("generated_tokens", 0))}}

    async def stream(bridge: Bridge) -> AsyncIterator[bytes]:
        yield sse({"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": req.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}},
            "message_start")
        yield sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                  "content_block_start")
        while True:
            item = await bridge.items.get()
            if item[0] == "token":
                yield sse({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": item[2]}}, "content_block_delta")
            elif item[0] == "end":
                try:
                    result = item[1].result()[0]
                except ApiError as exc:
                    yield sse({"type": "error", "error": {"type": _ERROR_TYPES.get(exc.status, "api_error"),
                                                          "message": exc.message}}, "error")
                    return
                reason, sequence = _stop_reason(result, options.stop)
                yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
                yield sse({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                           "usage": {"output_tokens": int(result.stats.get("generated_tokens", 0))}}, "message_delta")
                yield sse({"type": "message_stop"}, "message_stop")
                return

    return await run(gateway, request, model, entry, job, stream if req.stream else None, answer)
