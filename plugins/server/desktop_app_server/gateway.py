"""Between HTTP and the model: which models exist, the queue, and one model call.

Everything that reaches the model goes through :meth:`Gateway.submit` (the server's FIFO
queue) and then ``context.complete`` (which in the window waits on the engine worker behind
the user's own chats). The request log keeps the recent requests for the window's status.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from desktop_app.api import ChatMessage, GenerationOptions, PluginContext, Tool, TurnResult

from desktop_app_server.dispatch import QueueFull, RequestQueue
from desktop_app_server.profiles import PROFILE_PREFIX, Profile, ProfileError, ProfileStore
from desktop_app_server.wire import ApiError

__all__ = ["Gateway", "LogEntry", "ProfileResult", "RequestLog", "ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """The server's settings for one run (read when it starts)."""

    host: str = "127.0.0.1"
    port: int = 8080
    key_required: bool = False
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 4_000_000
    queue_limit: int = 8
    load_models: bool = True


@dataclass
class LogEntry:
    """One request, as the status shows it."""

    id: str
    method: str
    path: str
    model: str = ""
    started: float = field(default_factory=time.time)
    status: int = 0
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration: float = 0.0
    #: Pieces of text streamed when the client went away (cancel checks compare this with
    #: ``completion_tokens``).
    tokens_at_cancel: int | None = None
    error: str = ""
    #: Seconds from arrival until the model call ended (0 while it runs or waits).
    ended: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RequestLog:
    """The last requests, newest last; thread-safe."""

    def __init__(self, size: int = 200):
        self._entries: collections.deque[LogEntry] = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self.served = 0

    def add(self, entry: LogEntry) -> LogEntry:
        with self._lock:
            self._entries.append(entry)
            self.served += 1
        return entry

    def entries(self) -> list[LogEntry]:
        with self._lock:
            return list(self._entries)


@dataclass
class ProfileResult(TurnResult):
    """A profile's answer: Parley's additions to OpenAI's fields (the ``parley`` object)."""

    parley: dict[str, Any] = field(default_factory=dict)


class Gateway:
    """The models the server offers and the queue every model call goes through."""

    def __init__(self, context: PluginContext, config: ServerConfig):
        self.context = context
        self.config = config
        self.profiles = ProfileStore.of(context)
        # As many requests run at once as the model writes answers together (its batch).
        self.queue = RequestQueue(lambda: self.config.queue_limit, workers=lambda: max(1, context.model.parallel))
        #: Embedding requests wait in a queue of their own, bounded the same way: they need no
        #: chat model, so they never wait behind an answer being written, but they are CPU-heavy
        #: and one runs at a time.
        self.embed_queue = RequestQueue(lambda: self.config.queue_limit, name="parley-api-embeddings")
        self.log = RequestLog()
        #: The stop switches of the requests being answered or waiting (see ``stop_all``).
        self.active: set[Any] = set()

    @property
    def waiting(self) -> int:
        """Requests accepted that have not started (chat and embeddings)."""
        return self.queue.waiting + self.embed_queue.waiting

    @property
    def busy(self) -> bool:
        """Whether a request is being answered."""
        return self.queue.busy or self.embed_queue.busy

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, drop the waiting ones, wait up to ``timeout`` for the running ones."""
        self.queue.close(timeout=0)
        self.embed_queue.close(timeout=0)
        if timeout:
            self.queue.close(timeout)
            self.embed_queue.close(timeout)

    def stop_all(self) -> None:
        """Stop every answer being written and drop the waiting ones (the server is stopping)."""
        for bridge in list(self.active):
            bridge.cancel()

    # -- models -------------------------------------------------------------------------------
    def chat_models(self) -> list[dict[str, Any]]:
        """The model library (``{"name", "path", "loaded"}``), the loaded model first."""
        return list(self.context.library())

    def embedders(self) -> dict[str, Callable[[list[str]], list[list[float]]]]:
        """The embedding functions plugins offer, by name."""
        return self.context.embedders()

    def model_list(self) -> list[dict[str, Any]]:
        """``GET /v1/models``'s ``data``."""
        created = int(time.time())
        names = [m["name"] for m in self.chat_models()] + [p.model_id for p in self.profiles.all()]
        names += sorted(self.embedders())
        seen: list[str] = []
        for name in names:
            if name not in seen:
                seen.append(name)
        return [{"id": name, "object": "model", "created": created, "owned_by": "parley"} for name in seen]

    def chat_model(self, name: str) -> dict[str, Any]:
        """The library entry a request names (with ``"profile"`` for ``profile:NAME``); 404
        ``model_not_found`` when there is none."""
        if name.startswith(PROFILE_PREFIX):
            try:
                profile = self.profiles.get(name)
            except ProfileError as exc:
                raise ApiError(404, str(exc), param="model", code="model_not_found") from None
            loaded = next((m for m in self.chat_models() if m["loaded"]), None)
            wanted = profile.model or (loaded["name"] if loaded else None)
            if wanted is None:
                raise ApiError(503, "No model is loaded.", type="server_error", code="model_not_loaded")
            return {**self._servable(wanted), "profile": profile}
        return self._servable(name)

    def _servable(self, name: str) -> dict[str, Any]:
        for entry in self.chat_models():
            if entry["name"] == name:
                if not entry["loaded"] and self.context.window is not None:
                    # The user chats in the window with the model they chose: a request never swaps it.
                    raise ApiError(409, f"The model `{name}` is not loaded: Parley's window uses another one. "
                                   "Ask for the loaded model (GET /v1/models lists it first), or load this "
                                   "one in the window.", param="model", code="model_not_loaded",
                                   headers={"x-should-retry": "false"})  # clients must not ask again
                if not entry["loaded"] and not self.config.load_models:
                    raise ApiError(404, f"The model `{name}` is not loaded, and this server only serves the "
                                   "loaded model.", param="model", code="model_not_found")
                return entry
        known = ", ".join(m["name"] for m in self.chat_models()) or "none"
        raise ApiError(404, f"The model `{name}` does not exist. Models: {known} (GET /v1/models).",
                       param="model", code="model_not_found")

    def embedder(self, name: str) -> Callable[[list[str]], list[list[float]]]:
        """The embedding function a request names; 404 when there is none."""
        embedders = self.embedders()
        if name not in embedders:
            known = ", ".join(sorted(embedders)) or "none (the documents plugin offers one)"
            raise ApiError(404, f"The embedding model `{name}` does not exist. Embedding models: {known}.",
                           param="model", code="model_not_found")
        return embedders[name]

    def embed(self, name: str, texts: list[str]) -> list[list[float]]:
        """Embed ``texts`` (runs inside a job of :meth:`submit_embedding`)."""
        embed = self.embedder(name)
        return [list(map(float, vector)) for vector in embed(texts)]

    def submit_embedding(self, work: Callable[[], Any]) -> Future:
        """Queue ``work`` (which calls :meth:`embed`) behind the embedding requests before it.
        Raises ApiError 429 when the queue is full, as for chat."""
        return self._enqueue(self.embed_queue, work, "The embedding model")

    # -- model calls ---------------------------------------------------------------------------
    def submit(self, model: dict[str, Any], work: Callable[[], Any]) -> Future:
        """Queue ``work`` (which calls :meth:`complete`) behind the requests before it; the model
        the request named is loaded first if it is not. Raises ApiError 429 when the queue is full."""

        def job() -> Any:
            if not model["loaded"] and not self._is_loaded(model["name"]):
                self.context.load_model(model["name"])
            return work()

        # Loading a model ends the answers being written, so such a request runs alone.
        return self._enqueue(self.queue, job, "The model", exclusive=not model["loaded"])

    @staticmethod
    def _enqueue(queue: RequestQueue, job: Callable[[], Any], what: str, exclusive: bool = False) -> Future:
        try:
            return queue.submit(job, exclusive=exclusive)
        except QueueFull as exc:
            raise ApiError(429, f"{what} is busy: {exc.waiting} requests are already waiting (the server's "
                           "queue limit, setting queue_limit). Try again shortly.", type="requests",
                           code="rate_limit_exceeded", headers={"Retry-After": str(exc.retry_after)}) from None
        except RuntimeError as exc:
            raise ApiError(503, str(exc), type="server_error", code="server_stopping") from None

    def _is_loaded(self, name: str) -> bool:
        return any(m["name"] == name and m["loaded"] for m in self.chat_models())

    def check_fits(self, messages: Sequence[ChatMessage], max_tokens: int, param: str = "messages", *,
                   tools: Sequence[Tool] | None = None, tool_choice: str = "auto") -> int | None:
        """400 ``context_length_exceeded`` when the prompt leaves the answer no room (Parley would
        otherwise shorten the conversation to fit; an API client asked for exactly this prompt).

        The prompt is counted as the model gets it: with the tools' descriptions and the
        calling convention of the model's tool protocol, which can be longer than the messages.
        Returns its length in tokens (None when no model is loaded or it cannot be counted).
        """
        model = self.context.model
        if not model.loaded:
            return None
        try:
            text = self.context.prompt_for(list(messages), tools=list(tools) if tools else None,
                                           tool_choice=tool_choice)
            prompt = model.count_tokens(text)
        except ValueError as exc:  # tool messages that answer no call, a bad tool_choice
            raise ApiError(400, str(exc), param=param) from None
        except AttributeError:  # a backend that cannot count: checked after the answer (see complete)
            return None
        n_ctx = model.context_length
        if prompt > n_ctx - min(max_tokens, n_ctx // 2):
            raise _too_long(prompt, n_ctx, max_tokens, param)
        return prompt

    def complete(self, messages: Sequence[ChatMessage], options: GenerationOptions, *,
                 tools: Sequence[Tool] | None = None, tool_choice: str = "auto", parallel_tool_calls: bool = True,
                 on_token: Callable[[str], None] | None = None, stop: threading.Event | None = None,
                 param: str = "messages") -> TurnResult:
        """One answer from the loaded model (runs inside a queued job)."""
        # Checked again here: the model may have been loaded for this request (or swapped).
        size = self.context.model.vocab_size if options.logit_bias else None
        if size and max(options.logit_bias) >= size:
            raise ApiError(400, f"Invalid logit_bias key '{max(options.logit_bias)}': this model's token ids are "
                           f"0 to {size - 1}.", param="logit_bias")
        try:
            result = self.context.complete(messages, options, on_token=on_token, stop=stop,
                                           tools=list(tools) if tools else None, tool_choice=tool_choice,
                                           parallel_tool_calls=parallel_tool_calls)
        except ValueError as exc:  # tool messages that answer no call, a bad tool_choice
            raise ApiError(400, str(exc), param=param) from None
        if result.stats.get("dropped_messages"):
            raise _too_long(result.stats.get("prompt_tokens", 0), result.stats.get("context_length", 0),
                            options.max_tokens, param)
        return result


    def complete_many(self, messages: Sequence[ChatMessage], options: list[GenerationOptions], *,
                      tools: Sequence[Tool] | None = None, tool_choice: str = "auto", parallel_tool_calls: bool = True,
                      on_token: Callable[[int, str], None] | None = None,
                      on_done: Callable[[int, TurnResult], None] | None = None,
                      stop: threading.Event | None = None, param: str = "messages") -> list[TurnResult]:
        """The ``n`` answers of one request (runs inside a queued job): written together in one
        batch, the prompt evaluated once, when the model can."""
        size = self.context.model.vocab_size if options[0].logit_bias else None
        if size and max(options[0].logit_bias) >= size:
            raise ApiError(400, f"Invalid logit_bias key '{max(options[0].logit_bias)}': this model's token ids "
                           f"are 0 to {size - 1}.", param="logit_bias")
        try:
            results = self.context.complete_many(messages, options, on_token=on_token, on_done=on_done, stop=stop,
                                                 tools=list(tools) if tools else None, tool_choice=tool_choice,
                                                 parallel_tool_calls=parallel_tool_calls)
        except ValueError as exc:  # tool messages that answer no call, a bad tool_choice
            raise ApiError(400, str(exc), param=param) from None
        for result in results:
            if result.stats.get("dropped_messages"):
                raise _too_long(result.stats.get("prompt_tokens", 0), result.stats.get("context_length", 0),
                                options[0].max_tokens, param)
        return results

    def run_profile(self, profile: Profile, messages: Sequence[ChatMessage], overrides: dict[str, Any], *,
                    on_token: Callable[[str], None] | None = None,
                    on_progress: Callable[[str], None] | None = None,
                    stop: threading.Event | None = None) -> ProfileResult:
        """One answer through Parley's whole pipeline with a profile's setup (runs inside a queued job).

        ``on_token`` gets only the answer; a strategy's samples and progress lines go to
        ``on_progress``, and what it says about the answer to ``parley["strategy"]``.
        """
        try:
            run = self.context.run_turn(messages, setup=profile.setup(), options=overrides, on_token=on_token,
                                        on_progress=on_progress, stop=stop, store=profile.store_conversations)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="messages") from None
        if run.error:
            raise ApiError(500, run.error, type="server_error")
        sources = [{"index": i, "source": b.source, "text": b.text, "score": b.score, **b.metadata}
                   for i, b in enumerate(run.sources, 1)]
        parts = sorted({e.plugin for e in run.trace})
        parley: dict[str, Any] = {"profile": profile.name, "sources": sources, "plugins": parts,
                                  "conversation_id": run.conversation_id, "message_id": run.message_id}
        if run.samples or run.note:
            # A strategy chose the answer: how (the samples, the votes) is Parley's addition, not content.
            parley["strategy"] = {"name": run.stats.get("strategy"), "note": run.note.strip(),
                                  "samples": run.samples, "votes": run.stats.get("votes")}
        return ProfileResult(run.text, run.finish_reason, run.stats, run.prompt, parley=parley)


def _too_long(prompt: int, n_ctx: int, max_tokens: int, param: str) -> ApiError:
    return ApiError(400, f"This model's maximum context length is {n_ctx} tokens. However, your request "
                    f"needs more than that ({prompt} tokens for the prompt, with room for up to "
                    f"{min(max_tokens, n_ctx // 2)} in the answer). Shorten the messages or lower max_tokens.",
                    param=param, code="context_length_exceeded")
