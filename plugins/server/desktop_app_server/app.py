"""The ASGI application: OpenAI's endpoints (and Anthropic's ``/v1/messages``) over Parley.

``create_app(gateway, keys)`` builds it; :class:`desktop_app_server.controller.ServerController`
serves it with uvicorn. Every error is answered in OpenAI's shape, validation errors included
(400, not FastAPI's 422).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import struct
import time
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from desktop_app.api import EngineError, GenerationOptions, ModelLoadError, TurnResult

from desktop_app_server import anthropic
from desktop_app_server.convert import (
    chat_messages,
    chat_tools,
    choice_options,
    generation_options,
    refuse_unsupported,
    response_schema,
)
from desktop_app_server.gateway import Gateway, LogEntry, ProfileResult
from desktop_app_server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, MessagesRequest
from desktop_app_server.security import LOOPBACK_NAMES, HostGuard, KeyGuard, KeyStore
from desktop_app_server.streaming import Bridge, EventStream, wait_or_disconnect
from desktop_app_server.wire import FINISH_REASONS, SSE_DONE, ApiError, new_id, now, sse, usage

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(gateway: Gateway, keys: KeyStore) -> Any:
    """The server's ASGI app, guarded: Host/Origin, then CORS, then the key and body size."""
    config = gateway.config
    api = FastAPI(title="Parley API", version="1", description="OpenAI-compatible API of Parley's local models.",
                  redoc_url=None)
    _add_error_handlers(api)
    _add_routes(api, gateway)
    app: Any = KeyGuard(api, key_required=config.key_required, keys=keys, max_body=config.max_body_bytes)
    if config.cors_origins:
        app = CORSMiddleware(app, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
                             allow_headers=["authorization", "content-type", "x-api-key", "anthropic-version"])
    hosts = set(LOOPBACK_NAMES) | set(config.allowed_hosts)
    if config.host not in ("0.0.0.0", "::", ""):
        hosts.add(config.host)
    return HostGuard(app, allowed_hosts=hosts, allowed_origins=config.cors_origins)


# -- errors ----------------------------------------------------------------------------------------
def _error_response(error: ApiError, request: Request | None = None) -> JSONResponse:
    if request is not None and request.url.path == "/v1/messages":  # Anthropic's clients read their shape
        return anthropic.error_response(error)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc, request)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(_validation_error(exc), request)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        else:
            message = str(exc.detail)
        code = "request_too_large" if exc.status_code == 413 else None
        return _error_response(ApiError(exc.status_code, message, code=code), request)

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("the API server failed on %s %s", request.method, request.url.path)
        return _error_response(ApiError(500, f"The server failed: {type(exc).__name__}: {exc}", type="server_error"),
                               request)

    @api.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return _error_response(ApiError(503 if "No model" in str(exc) else 500, str(exc), type="server_error"),
                               request)


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return ApiError(400, "We could not parse the JSON body of your request: it is not valid JSON "
                        f"({first.get('ctx', {}).get('error', 'malformed')}).", code="invalid_json")
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # A union reports each alternative: name the field, not pydantic's branch names.
    field = ".".join(p for p in loc if not p[:1].isupper() and p not in ("str", "list", "dict", "function-after")
                     and "[" not in p) if loc else None
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{field}'."
    elif first.get("type") == "model_attributes_type" and not loc:
        message = "The request body must be a JSON object."
    else:
        message = f"Invalid value for '{field}': {first.get('msg', 'invalid')}."
    return ApiError(400, message, param=field or None,
                    code="missing_required_parameter" if first.get("type") == "missing" else "invalid_value")


# -- routes ----------------------------------------------------------------------------------------
def _add_routes(api: FastAPI, gateway: Gateway) -> None:
    context = gateway.context

    @api.get("/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model_loaded": context.model.loaded, "waiting": gateway.waiting}

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = await asyncio.to_thread(gateway.model_list)
        return {"object": "list", "data": data}

    @api.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        for entry in await asyncio.to_thread(gateway.model_list):
            if entry["id"] == model_id:
                return entry
        raise ApiError(404, f"The model `{model_id}` does not exist.", param="model", code="model_not_found")

    @api.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        return await _chat(gateway, body, request)

    @api.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await _completion(gateway, body, request)

    @api.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        return await _embeddings(gateway, body, request)

    @api.post("/v1/messages")
    async def messages(body: MessagesRequest, request: Request) -> Any:
        return await anthropic.messages(gateway, body, request, _run)


# -- running one request -------------------------------------------------------------------------
async def _run(gateway: Gateway, request: Request, model: dict[str, Any], entry: LogEntry,
               job: Callable[[Bridge], list[TurnResult]], stream: Callable[[Bridge], AsyncIterator[bytes]] | None,
               answer: Callable[[list[TurnResult]], Any],
               stream_error: Callable[[ApiError], list[bytes]] | None = None) -> Any:
    """Queue ``job`` for ``model``; stream its events with ``stream`` or answer with ``answer``.

    A stream that fails ends with ``stream_error(error)``'s events (default: OpenAI's error
    object, then ``[DONE]``).
    """
    stream_error = stream_error or (lambda exc: [sse(exc.body()), SSE_DONE])
    bridge = Bridge(asyncio.get_running_loop())
    gateway.log.add(entry)
    started = time.monotonic()
    try:
        future = gateway.submit(model, lambda: job(bridge))
    except ApiError as exc:
        entry.status, entry.error = exc.status, exc.message
        raise

    def job_ended(future: Any) -> None:  # on the queue's thread, or here if it never ran
        gateway.active.discard(bridge)
        entry.ended = time.monotonic() - started
        entry.tokens_at_cancel = bridge.pieces_at_cancel
        if future.cancelled() or future.exception() is not None:
            return
        for result in future.result():
            entry.prompt_tokens = int(result.stats.get("prompt_tokens", 0))
            entry.completion_tokens += int(result.stats.get("generated_tokens", 0))
            entry.finish_reason = result.finish_reason

    def finished(status: int, error: str = "") -> None:
        entry.status, entry.error, entry.duration = status, error, time.monotonic() - started

    gateway.active.add(bridge)
    future.add_done_callback(job_ended)
    bridge.attach(future)
    if stream is not None:
        async def events() -> AsyncIterator[bytes]:
            status, error = 200, ""
            try:
                async for chunk in stream(bridge):
                    yield chunk
            except ApiError as exc:
                status, error = exc.status, exc.message
                for event in stream_error(exc):
                    yield event
            except Exception as exc:  # the stream ends with an error event, never cut off
                stopping = isinstance(exc, concurrent.futures.CancelledError)
                failure = ApiError(503, "The server is stopping.", type="server_error", code="server_stopping") \
                    if stopping else ApiError(500, "The answer failed; see Parley's log.", type="server_error")
                if not stopping:
                    log.exception("a streamed answer failed")
                status, error = failure.status, failure.message
                for event in stream_error(failure):
                    yield event
            finally:
                finished(499 if bridge.stop.is_set() else status, error or ("the client went away"
                                                                             if bridge.stop.is_set() else ""))

        return EventStream(events(), bridge.cancel)
    try:
        results = await wait_or_disconnect(request.receive, bridge)
    except ApiError as exc:
        finished(exc.status, exc.message)
        raise
    except asyncio.CancelledError:
        finished(499, "the client went away")
        raise
    except (EngineError, ModelLoadError, KeyError) as exc:
        finished(500, str(exc))
        raise ApiError(500, exc.args[0] if isinstance(exc, KeyError) else str(exc), type="server_error") from None
    finished(200)
    return answer(results)


async def _job_outcome(bridge: Bridge, item: tuple) -> list[TurnResult]:
    """The job's results from its ``end`` item; its error as an ApiError."""
    future = item[1]
    try:
        return future.result()
    except ApiError:
        raise
    except (EngineError, ModelLoadError, KeyError) as exc:
        raise ApiError(500, exc.args[0] if isinstance(exc, KeyError) else str(exc), type="server_error") from None


def _n_answers(gateway: Gateway, messages: list, options: GenerationOptions, n: int, tools: list,
               tool_choice: str, param: str = "messages",
               parallel_tool_calls: bool = True) -> Callable[[Bridge], list[TurnResult]]:
    """The job: ``n`` answers, written together when the model batches, each posted when done."""

    def job(bridge: Bridge) -> list[TurnResult]:
        if n == 1:
            result = gateway.complete(messages, options, tools=tools, tool_choice=tool_choice,
                                      parallel_tool_calls=parallel_tool_calls, on_token=bridge.token(0),
                                      stop=bridge.stop, param=param)
            bridge.post("choice", 0, result)
            return [result]
        tokens = [bridge.token(i) for i in range(n)]
        return gateway.complete_many(messages, [choice_options(options, i) for i in range(n)], tools=tools,
                                     tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
                                     on_token=lambda i, text: tokens[i](text),
                                     on_done=lambda i, result: bridge.post("choice", i, result),
                                     stop=bridge.stop, param=param)

    return job


def _profile_answers(gateway: Gateway, profile: Any, messages: list, overrides: dict[str, Any],
                     n: int) -> Callable[[Bridge], list[TurnResult]]:
    """The job for ``profile:NAME``: ``n`` answers through Parley's whole pipeline, each posted when done."""

    def job(bridge: Bridge) -> list[TurnResult]:
        results: list[TurnResult] = []
        for i in range(n):
            if bridge.stop.is_set():
                break
            seeded = dict(overrides)
            if i and seeded.get("seed", -1) >= 0:
                seeded["seed"] += i  # choices differ, as for a model
            result = gateway.run_profile(profile, messages, seeded, on_token=bridge.token(i),
                                         on_progress=bridge.progress(i), stop=bridge.stop)
            results.append(result)
            bridge.post("choice", i, result)
        return results

    return job


#: Request fields a profile's answer takes from the client; the rest come from the profile (a
#: template's preset, say) and Parley's settings.
_CLIENT_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                   "repeat_penalty": "repeat_penalty", "max_tokens": "max_tokens",
                   "max_completion_tokens": "max_tokens", "stop": "stop", "seed": "seed",
                   "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
                   "logit_bias": "logit_bias"}


def _overrides(req: Any, options: GenerationOptions) -> dict[str, Any]:
    """The generation options the client set itself (as ``options`` reads them)."""
    chosen = {_CLIENT_OPTIONS[f] for f in req.model_fields_set if f in _CLIENT_OPTIONS}
    overrides = {name: getattr(options, name) for name in chosen}
    if options.json_schema is not None:
        overrides["json_schema"] = options.json_schema
    return overrides


def _tool_calls(result: TurnResult) -> list[dict[str, Any]]:
    return [{"id": call.id if call.id.startswith("call") else f"call_{call.id}", "type": "function",
             "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
            for call in result.tool_calls]


def _finish(result: TurnResult) -> str:
    return "tool_calls" if result.tool_calls else FINISH_REASONS.get(result.finish_reason, "stop")


def _usage_of(results: list[TurnResult]) -> dict[str, int]:
    prompt = int(results[0].stats.get("prompt_tokens", 0)) if results else 0
    return usage(prompt, sum(int(r.stats.get("generated_tokens", 0)) for r in results))


# -- /v1/chat/completions ------------------------------------------------------------------------
async def _chat(gateway: Gateway, req: ChatCompletionRequest, request: Request) -> Any:
    context = gateway.context
    refuse_unsupported(req, req.logprobs or req.top_logprobs)
    model = gateway.chat_model(req.model)
    messages = chat_messages(req.messages)
    tools, tool_choice = chat_tools(req)
    options = generation_options(req, context, req.max_completion_tokens)
    schema = response_schema(req)
    if (schema is not None or options.grammar) and tools and tool_choice != "none":
        raise ApiError(400, "response_format (or a grammar) cannot be combined with tools.", param="response_format")
    if schema is not None:
        options.json_schema = schema
    profile = model.get("profile")
    if profile is not None:
        if tools and tool_choice != "none":
            raise ApiError(400, "A profile brings its own tools, which Parley runs under their policies; send "
                           "the request without tools, or ask for a model instead of a profile.", param="tools")
        job = _profile_answers(gateway, profile, messages, _overrides(req, options), req.n)
    else:
        if model["loaded"]:
            await asyncio.to_thread(gateway.check_fits, messages, options.max_tokens, tools=tools,
                                    tool_choice=tool_choice)
        job = _n_answers(gateway, messages, options, req.n, tools, tool_choice,
                         parallel_tool_calls=req.parallel_tool_calls is not False)
    entry = LogEntry(new_id("req"), "POST", "/v1/chat/completions", req.model)
    cid, created = new_id("chatcmpl"), now()

    def answer(results: list[TurnResult]) -> dict[str, Any]:
        choices = []
        for i, result in enumerate(results):
            calls = _tool_calls(result)
            message: dict[str, Any] = {"role": "assistant", "content": result.text if (result.text or not calls)
                                       else None, "refusal": None}
            if calls:
                message["tool_calls"] = calls
            choice = {"index": i, "message": message, "logprobs": None, "finish_reason": _finish(result)}
            if isinstance(result, ProfileResult):
                choice["parley"] = result.parley
            choices.append(choice)
        body = {"id": cid, "object": "chat.completion", "created": created, "model": req.model,
                "system_fingerprint": None, "choices": choices, "usage": _usage_of(results)}
        if results and isinstance(results[0], ProfileResult):
            body["parley"] = results[0].parley  # Parley's additions: the sources, the profile, the trace
        return body

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                    "system_fingerprint": None, "choices": choices, **extra})

    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    extra = {"usage": None} if include_usage else {}

    async def stream(bridge: Bridge) -> AsyncIterator[bytes]:
        opened: set[int] = set()

        def open_choice(i: int) -> bytes:
            opened.add(i)
            return chunk([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": None},
                           "logprobs": None, "finish_reason": None}], **extra)

        yield open_choice(0)
        while True:
            item = await bridge.items.get()
            kind, index = item[0], item[1] if len(item) > 2 else 0
            if kind != "end" and index not in opened:
                yield open_choice(index)
            if kind == "token":
                yield chunk([{"index": index, "delta": {"content": item[2]}, "logprobs": None,
                              "finish_reason": None}], **extra)
            elif kind == "progress":
                # A strategy at work (its samples, "Sample 2 of 5…"): not the answer, so not content;
                # the chunk keeps the stream alive and shows the work to clients that read Parley's field.
                yield chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": None}],
                            **extra, parley={"progress": item[2]})
            elif kind == "choice":
                result: TurnResult = item[2]
                calls = _tool_calls(result)
                if calls:
                    deltas = []
                    for n, call in enumerate(calls):
                        deltas.append({"index": n, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"], "arguments": ""}})
                    yield chunk([{"index": index, "delta": {"tool_calls": deltas}, "logprobs": None,
                                  "finish_reason": None}], **extra)
                    for n, call in enumerate(calls):
                        yield chunk([{"index": index, "delta": {"tool_calls": [
                            {"index": n, "function": {"arguments": call["function"]["arguments"]}}]},
                            "logprobs": None, "finish_reason": None}], **extra)
                more = {"parley": result.parley} if isinstance(result, ProfileResult) else {}
                yield chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": _finish(result)}],
                            **extra, **more)
            elif kind == "end":
                results = await _job_outcome(bridge, item)
                if include_usage:
                    yield chunk([], usage=_usage_of(results))
                yield SSE_DONE
                return

    return await _run(gateway, request, model, entry, job, stream if req.stream else None, answer)


# -- /v1/completions -------------------------------------------------------------------------------
async def _completion(gateway: Gateway, req: CompletionRequest, request: Request) -> Any:
    """A text prompt is answered as one user message, with the model's chat template (Parley's
    engine renders every prompt with it; raw prompt continuation is not offered)."""
    from desktop_app.api import ChatMessage

    refuse_unsupported(req, req.logprobs)
    for name, value, default in (("echo", req.echo, False), ("suffix", req.suffix, None), ("best_of", req.best_of, None)):
        if value not in (default, 1 if name == "best_of" else default):
            raise ApiError(400, f"{name} is not supported by this server.", param=name, code="unsupported_parameter")
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if not prompts:
        raise ApiError(400, "prompt must not be empty.", param="prompt")
    model = gateway.chat_model(req.model)
    if model.get("profile") is not None:  # it would be answered by the bare model, without the profile
        raise ApiError(400, "Profiles are served on /v1/chat/completions, through Parley's whole pipeline; send "
                       "the prompt there as a user message, or ask for a model here.", param="model")
    options = generation_options(req, gateway.context)
    if req.max_tokens is None:
        options.max_tokens = 16  # OpenAI's default for this endpoint
    conversations = [[ChatMessage("user", p)] for p in prompts]
    if model["loaded"]:
        for messages in conversations:
            await asyncio.to_thread(gateway.check_fits, messages, options.max_tokens, "prompt")
    entry = LogEntry(new_id("req"), "POST", "/v1/completions", req.model)
    cid, created = new_id("cmpl"), now()

    def job(bridge: Bridge) -> list[TurnResult]:
        results = []
        for p, messages in enumerate(conversations):
            for i in range(req.n):
                if bridge.stop.is_set():
                    return results
                index = p * req.n + i
                result = gateway.complete(messages, choice_options(options, i), on_token=bridge.token(index),
                                          stop=bridge.stop, param="prompt")
                results.append(result)
                bridge.post("choice", index, result)
        return results

    def answer(results: list[TurnResult]) -> dict[str, Any]:
        return {"id": cid, "object": "text_completion", "created": created, "model": req.model,
                "system_fingerprint": None,
                "choices": [{"text": r.text, "index": i, "logprobs": None, "finish_reason": _finish(r)}
                            for i, r in enumerate(results)],
                "usage": _usage_of(results)}

    def chunk(index: int, text: str, finish: str | None) -> bytes:
        return sse({"id": cid, "object": "text_completion", "created": created, "model": req.model,
                    "system_fingerprint": None,
                    "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish}]})

    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    async def stream(bridge: Bridge) -> AsyncIterator[bytes]:
        while True:
            item = await bridge.items.get()
            if item[0] == "token":
                yield chunk(item[1], item[2], None)
            elif item[0] == "choice":
                yield chunk(item[1], "", _finish(item[2]))
            elif item[0] == "end":
                results = await _job_outcome(bridge, item)
                if include_usage:
                    yield sse({"id": cid, "object": "text_completion", "created": created, "model": req.model,
                               "choices": [], "usage": _usage_of(results)})
                yield SSE_DONE
                return

    return await _run(gateway, request, model, entry, job, stream if req.stream else None, answer)


# -- /v1/embeddings --------------------------------------------------------------------------------
async def _embeddings(gateway: Gateway, req: EmbeddingRequest, request: Request) -> Any:
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "input must be a string or a list of strings (token arrays are not supported).",
                       param="input")
    if any(not t for t in texts):
        raise ApiError(400, "input must not contain empty strings.", param="input")
    if req.dimensions is not None:
        raise ApiError(400, "dimensions is not supported by this server.", param="dimensions",
                       code="unsupported_parameter")
    gateway.embedder(req.model)
    entry = gateway.log.add(LogEntry(new_id("req"), "POST", "/v1/embeddings", req.model))
    started = time.monotonic()
    bridge = Bridge(asyncio.get_running_loop())
    try:
        # Bounded like chat: past the limit a 429 with Retry-After, not an unbounded pile of threads.
        bridge.attach(gateway.submit_embedding(lambda: gateway.embed(req.model, texts)))
    except ApiError as exc:
        entry.status, entry.error = exc.status, exc.message
        raise
    try:
        vectors = await wait_or_disconnect(request.receive, bridge)
    except asyncio.CancelledError:  # the client left; a request still waiting never runs
        entry.status, entry.error = 499, "the client went away"
        raise
    except Exception as exc:
        entry.status, entry.error = 500, str(exc)
        log.exception("embedding failed")
        raise ApiError(500, f"Embedding failed: {exc}", type="server_error") from None
    entry.status, entry.duration = 200, time.monotonic() - started
    # No tokenizer of the embedder is at hand: words are the count (documented as approximate).
    tokens = sum(len(t.split()) for t in texts)
    entry.prompt_tokens = tokens

    def encoded(vector: list[float]) -> Any:
        if req.encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        return vector

    return {"object": "list", "model": req.model,
            "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

