"""OpenAI's wire format: ids, error objects, usage, and the Server-Sent Events framing.

Field names follow https://platform.openai.com/docs/api-reference exactly, so the official
clients (and everything built on them) read Parley's answers as they read OpenAI's.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

__all__ = ["ApiError", "FINISH_REASONS", "error_body", "new_id", "now", "sse", "SSE_DONE", "usage"]

#: Parley's finish reasons in OpenAI's words. A cancelled answer only happens when the client
#: left, so nobody reads it; "stop" keeps it a valid value.
FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "stop"}

#: The last event of every stream.
SSE_DONE = b"data: [DONE]\n\n"


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def new_id(prefix: str) -> str:
    """A fresh id like OpenAI's: ``chatcmpl-…``, ``cmpl-…``, ``call_…``, ``msg_…``."""
    separator = "_" if prefix in ("call", "msg", "toolu") else "-"
    return f"{prefix}{separator}{secrets.token_hex(12)}"


def now() -> int:
    """``created``: seconds since the epoch."""
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    """One Server-Sent Event: ``data: {...}`` and a blank line (``event:`` for Anthropic's stream)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode("utf-8")
