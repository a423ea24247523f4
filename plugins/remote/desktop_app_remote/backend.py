"""The remote backend: a model on another machine's server, used like the local engine.

A model reference ``remote:ENGINE/MODEL`` names a model an engine serves. Loading it asks the
engine what it is (see :mod:`desktop_app_remote.probe`); answering streams from it:

- **llama-server** gets the prompt exactly as the local engine would build it (Parley renders
  it with the server's own chat template, fits it to the context the same way), raw, on its
  ``/completion`` endpoint, with the grammar, stop strings, sampling and LoRA scales of the
  turn. Templates, strategies, documents and the tool protocol behave as on this machine.
- **Any other OpenAI-compatible server** (vLLM, Ollama, LM Studio, another Parley) gets the
  chat messages on ``/v1/chat/completions`` and applies its own template; JSON schemas go as
  ``response_format``. A grammar a template asks for cannot be followed there: the answer
  stops with an error that says so, rather than an answer in the wrong form.

Stop closes the connection, which makes the server stop generating. A connection that breaks
mid-answer ends the answer with an error, the text so far kept; the next turn connects anew.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Sequence

from desktop_app.api import (
    BackendModel,
    ChatMessage,
    ChatTemplate,
    DoneEvent,
    EngineError,
    ErrorEvent,
    GenerationOptions,
    GenerationStats,
    ModelLoadError,
    ParleyError,
    TokenEvent,
    fit_to_context,
)

from desktop_app_remote.client import DONE, Client, RemoteError
from desktop_app_remote.engines import EngineConfig, EngineStore, read_key
from desktop_app_remote.probe import ASSUMED_CONTEXT, LLAMA_SERVER, check_engine

__all__ = ["BACKEND", "RemoteBackend", "model_ref", "parse_ref"]

log = logging.getLogger(__name__)

#: The backend's registered name, and so the prefix of its model references.
BACKEND = "remote"
#: llama-server's stop types in Parley's finish reasons.
_STOP_TYPES = {"eos": "stop", "word": "stop", "limit": "length"}
#: llama.cpp's trigger kind for a regular expression the whole output so far must match.
_PATTERN_FULL = 3


def model_ref(engine: str, model: str) -> str:
    """The reference of ``model`` on ``engine``: ``remote:ENGINE/MODEL``."""
    return f"{BACKEND}:{engine}/{model}"


def parse_ref(ref: str) -> tuple[str, str]:
    """(engine, model) of a reference; ModelLoadError when it is not one."""
    head, _, rest = str(ref).partition(":")
    engine, _, model = rest.partition("/")
    if head != BACKEND or not engine or not model:
        raise ModelLoadError(f"{ref!r} is not a remote model: expected remote:ENGINE/MODEL.")
    return engine, model


@dataclass
class _Loaded:
    ref: str
    config: EngineConfig
    model: str
    template: ChatTemplate
    n_ctx: int
    #: LoRA adapters on the server, by their file's name: id.
    server_adapters: dict[str, int] = field(default_factory=dict)
    #: The BOS text a rendered prompt begins with that the server adds itself (sent without it).
    server_bos: str = ""

    @property
    def raw(self) -> bool:
        return self.config.kind == LLAMA_SERVER


class RemoteBackend:
    """A :class:`desktop_app.api.Backend` for models on remote engines (see the module's text).

    ``stream_chat``, ``load`` and the checks run on the engine's worker thread (or a task's);
    ``models``, ``describe`` and ``cancel`` may come from the GUI thread and never touch the
    network or the keyring.
    """

    def __init__(self, store: Callable[[], EngineStore]):
        self._store = store
        self._loaded: _Loaded | None = None
        self._clients: dict[str, tuple[str, Client]] = {}
        self._lora: list[dict[str, Any]] = []
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        #: The client of the answer being written (Stop shuts its connection).
        self._streaming: Client | None = None
        #: The server's own timings of the last answer (llama-server's ``timings``), for benchmarks.
        self.last_timings: dict[str, Any] = {}

    # -- engines and models ---------------------------------------------------------------------
    def models(self) -> list[BackendModel]:
        """The models the engines served when last checked (no network: the picker asks this)."""
        found = []
        for engine in self._store().all():
            kind = engine.kind or "not checked yet"
            for m in engine.models:
                found.append(BackendModel(
                    model_ref(engine.name, m.id), m.id, engine.name,
                    f"{m.id} on {engine.name} ({kind}) at {engine.url}",
                    {"context_length": m.context_length, **engine.capabilities}))
        return found

    def client(self, name: str) -> Client:
        """The HTTP client for engine ``name`` with its current address and key (reads the keyring:
        not on the GUI thread). A client made for an older address or key is left to the answer
        that may still be reading from it."""
        config = self._store().get(name)
        key = read_key(name) if config.has_key else None
        if config.has_key and not key:
            raise RemoteError(f"{name}'s API key is missing from the system keyring. Set it again in Settings → "
                              f"Engines, or with `parley engines add {name} URL --api-key-env VAR --replace`.")
        signature = f"{config.url}\n{key or ''}"
        with self._lock:
            known = self._clients.get(name)
            if known is not None and known[0] == signature:
                return known[1]
            client = Client(name, config.url, key)
            self._clients[name] = (signature, client)
            return client

    def check(self, name: str) -> EngineConfig:
        """Ask engine ``name`` what it serves now, and remember it (network; not on the GUI thread)."""
        return self._check(name)[0]

    def _check(self, name: str) -> tuple[EngineConfig, dict[str, Any], Client]:
        store = self._store()
        config = store.get(name)
        try:
            client = self.client(name)
            checked, props = check_engine(config, client)
        except RemoteError as exc:
            store.record_check(name, config.url, problem=str(exc))
            raise
        store.record_check(name, config.url, found=checked)
        return checked, props, client

    def describe(self) -> str:
        """Where the loaded model runs."""
        loaded = self._loaded
        if loaded is None:
            return ""
        return f"on {loaded.config.name} ({loaded.config.kind})"

    # -- loading ----------------------------------------------------------------------------
    def load(self, path: Path | str, config: Any = None) -> list[str]:
        """Use model ``remote:ENGINE/MODEL``: checks that the engine is up and serves it."""
        engine, model = parse_ref(str(path))
        try:
            checked, props, client = self._check(engine)
            server_bos = self._server_bos(client, props) if checked.kind == LLAMA_SERVER else ""
        except ParleyError as exc:
            raise ModelLoadError(str(exc)) from None
        served = {m.id: m for m in checked.models}
        if model not in served:
            raise ModelLoadError(f"{engine} does not serve {model!r} now; it serves: "
                                 f"{', '.join(served) or 'nothing'}. Pick one of those in the model picker.")
        warnings = []
        if checked.kind == LLAMA_SERVER:
            template = ChatTemplate(_text(props.get("chat_template")) or None, bos_token=_text(props.get("bos_token")),
                                    eos_token=_text(props.get("eos_token")))
        else:
            template = ChatTemplate(None)  # only to show the prompt: the server applies its own
            warnings.append(f"{engine} is not a llama.cpp server, so Parley sends it chat messages and its own "
                            "template applies. Output grammars and LoRA adapters need llama-server.")
        n_ctx = served[model].context_length or ASSUMED_CONTEXT
        if not served[model].context_length:
            warnings.append(f"{engine} does not say how long {model}'s context is; Parley assumes {n_ctx:,} tokens.")
        adapters = {Path(str(a["path"])).name: a["id"] for a in checked.capabilities.get("lora", [])
                    if a.get("path") and isinstance(a.get("id"), int)}
        self._loaded = _Loaded(str(path), checked, model, template, n_ctx, adapters, server_bos)
        self._lora = [{"id": i, "scale": 0.0} for i in sorted(adapters.values())]
        return warnings

    @staticmethod
    def _server_bos(client: Client, props: dict[str, Any]) -> str:
        """The BOS text, when llama-server adds BOS to every prompt itself (most models): a
        template that writes it too (Llama 3, Mistral, Gemma…) would otherwise give two."""
        bos = _text(props.get("bos_token"))
        if not bos:
            return ""
        counts = [client.post_json("/tokenize", {"content": "a", "add_special": special}).get("tokens", [])
                  for special in (True, False)]
        return bos if len(counts[0]) > len(counts[1]) else ""

    def unload(self) -> None:
        self._loaded = None
        self._lora = []

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    @property
    def model_path(self) -> PurePosixPath | None:
        # A reference, not a file: POSIX-style on every system, so it reads the same everywhere.
        return PurePosixPath(self._loaded.ref) if self._loaded else None

    @property
    def context_length(self) -> int:
        return self._loaded.n_ctx if self._loaded else 0

    @property
    def chat_template(self) -> Any:
        return self._loaded.template if self._loaded else None

    @property
    def cancel_event(self) -> threading.Event:
        return self._cancel

    def gpu_offload_supported(self) -> bool:
        return False  # the server decides where its layers go

    def _require(self) -> _Loaded:
        if self._loaded is None:
            raise EngineError("No model is loaded. Pick a model first.")
        return self._loaded

    # -- prompts and tokens -------------------------------------------------------------------
    def render(self, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt as llama-server gets it (for other servers: a ChatML view of the messages)."""
        return self._require().template.render([m.as_dict() for m in messages], tools=tools)

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``: llama-server counts them; for other servers, a cautious estimate."""
        loaded = self._require()
        if not loaded.raw:
            return _estimate(text)
        return len(self._tokenize(loaded, self.client(loaded.config.name), text))

    def _tokenize(self, loaded: _Loaded, client: Client, text: str) -> list[int]:
        reply = client.post_json("/tokenize", {"content": self._as_sent(loaded, text), "add_special": True,
                                               "parse_special": True})
        tokens = reply.get("tokens") if isinstance(reply, dict) else None
        if not isinstance(tokens, list):
            raise RemoteError(f"{loaded.config.name} answered /tokenize without a list of tokens.")
        return tokens

    @staticmethod
    def _as_sent(loaded: _Loaded, prompt: str) -> str:
        """The prompt as it goes to the server (without the BOS the server adds itself)."""
        if loaded.server_bos and prompt.startswith(loaded.server_bos):
            return prompt[len(loaded.server_bos):]
        return prompt

    def _bounded_tokens(self, loaded: _Loaded, client: Client, budget: int) -> Callable[[str], Sequence[Any]]:
        """A tokenizer for fitting. For llama-server, a prompt of fewer bytes than the budget fits
        whatever its tokens (a token is at least one byte), so only longer prompts cost a round
        trip to count; other servers get a cautious estimate."""

        def tokens(text: str) -> Sequence[Any]:
            if not loaded.raw:
                return range(_estimate(text))
            size = len(text.encode("utf-8")) + 1  # + BOS
            return range(size) if size <= budget else self._tokenize(loaded, client, text)

        return tokens

    # -- adapters -----------------------------------------------------------------------------
    def adapter_problem(self, path: Path | str) -> str | None:
        """Why this engine cannot apply the adapter file ``path``, or None when it can."""
        loaded = self._require()
        if not loaded.raw:
            return (f"{loaded.config.name} ({loaded.config.kind}) cannot apply LoRA adapters: only llama.cpp's "
                    "llama-server can, with adapters given when it starts (--lora FILE).")
        if Path(path).name not in loaded.server_adapters:
            offered = ", ".join(loaded.server_adapters) or "none"
            return (f"{loaded.config.name} has no adapter {Path(path).name} (it has: {offered}). llama-server "
                    f"loads adapters when it starts: add --lora {Path(path).name} there.")
        return None

    def load_adapter(self, path: Path | str) -> None:
        """Check that the server has this adapter (llama-server loads adapters when it starts)."""
        problem = self.adapter_problem(path)
        if problem:
            raise EngineError(problem)

    def set_adapters(self, adapters: Sequence[Any]) -> bool:
        """Scale the server's adapters for the next answers (every other one at 0); EngineError
        when one cannot be applied here (the chat then answers without it, with a note)."""
        loaded = self._require()
        for adapter in adapters:
            if adapter.scale:
                self.load_adapter(adapter.path)
        wanted = {loaded.server_adapters[Path(a.path).name]: float(a.scale) for a in adapters if a.scale}
        # Every adapter named, each at 0 unless wanted: unnamed ones would get the server's own scales.
        lora = [{"id": i, "scale": wanted.get(i, 0.0)} for i in sorted(loaded.server_adapters.values())]
        changed = lora != self._lora
        self._lora = lora
        return changed

    # -- answers ------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the answer being written (from any thread): its connection is shut at once, even
        while the server is still reading the prompt."""
        self._cancel.set()
        streaming = self._streaming
        if streaming is not None:
            streaming.abort()

    def reset_cancel(self) -> None:
        self._cancel.clear()

    def stream_chat(self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None,
                    tools: list[dict[str, Any]] | None = None, keep_last: int = 1) -> Iterator[Any]:
        """Stream one answer from the engine; the last event is a DoneEvent or an ErrorEvent."""
        options = options or GenerationOptions()
        started = time.perf_counter()
        text, prompt = "", ""
        stats = GenerationStats()
        first_at = last_at = 0.0
        pieces = 0
        finish = ""
        try:
            loaded = self._require()
            stats.context_length = loaded.n_ctx
            client = self.client(loaded.config.name)
            reserve = min(options.max_tokens, loaded.n_ctx // 2)
            kept, prompt, tokens, dropped = fit_to_context(
                messages, lambda kept: self.render(kept, tools),
                self._bounded_tokens(loaded, client, loaded.n_ctx - reserve), loaded.n_ctx, reserve, keep_last)
            stats.prompt_tokens, stats.dropped_messages = len(tokens), dropped
            if loaded.raw:
                path, body = "/completion", self._raw_body(self._as_sent(loaded, prompt), options)
            else:
                path, body = "/v1/chat/completions", self._chat_body(loaded, kept, options, len(tokens))
            if self._cancel.is_set():
                finish = "cancelled"
            else:
                self._streaming = client
                stream = client.stream(path, body, cancelled=self._cancel)
                try:
                    for event in stream:
                        piece, end, usage = _read_raw(event) if loaded.raw else _read_chat(event)
                        if piece:
                            last_at = time.perf_counter()
                            first_at = first_at or last_at
                            pieces += 1
                            text += piece
                            yield TokenEvent(piece)
                        if usage:
                            _apply_usage(stats, usage)
                            if isinstance(usage.get("timings"), dict):
                                self.last_timings = usage["timings"]
                        finish = finish if (event is DONE and finish) else (end or finish)
                        if self._cancel.is_set():
                            finish = "cancelled"
                            break
                finally:
                    self._streaming = None
                    stream.close()  # closing the connection stops the server's generation
        except RemoteError as exc:
            if not self._cancel.is_set():
                yield ErrorEvent(str(exc), text)
                return
            finish = "cancelled"  # Stop shut the connection under the reader
        except EngineError as exc:
            yield ErrorEvent(str(exc), text)
            return
        if finish == "cancelled":
            self._cancel.clear()
        elif not finish:
            yield ErrorEvent(f"The answer from {self._loaded.config.name if self._loaded else 'the engine'} ended "
                             "before it was finished (the stream closed without saying why); the answer so far "
                             "is kept.", text)
            return
        stats.generated_tokens = stats.generated_tokens or pieces
        yield DoneEvent(text, finish, _finish_stats(stats, started, first_at, last_at, pieces), prompt)

    def _raw_body(self, prompt: str, options: GenerationOptions) -> dict[str, Any]:
        """llama-server's ``/completion`` request: the exact prompt, and everything the turn asks."""
        body: dict[str, Any] = {
            "prompt": prompt, "stream": True, "n_predict": options.max_tokens, "cache_prompt": True,
            "temperature": options.temperature, "top_p": options.top_p, "top_k": options.top_k,
            "min_p": options.min_p, "repeat_penalty": options.repeat_penalty,
            "presence_penalty": options.presence_penalty, "frequency_penalty": options.frequency_penalty,
            "stop": [s for s in options.stop if s],
        }
        if options.logit_bias:  # llama-server takes [token id, bias] pairs
            body["logit_bias"] = [[int(token), float(bias)] for token, bias in options.logit_bias.items()]
        if options.seed is not None and options.seed >= 0:
            body["seed"] = options.seed
        if options.grammar:
            body["grammar"] = options.grammar
        elif options.json_schema:
            body["json_schema"] = options.json_schema
        if options.grammar_trigger and (options.grammar or options.json_schema):
            # As on the local engine: the grammar binds only an answer that begins with the trigger.
            body["grammar_lazy"] = True
            body["grammar_triggers"] = [{"type": _PATTERN_FULL,
                                         "value": f"[ \\t\\n]*({_regex_escape(options.grammar_trigger)}[\\s\\S]*)"}]
        if self._lora:
            body["lora"] = self._lora
        return body

    def _chat_body(self, loaded: _Loaded, messages: list[ChatMessage], options: GenerationOptions,
                   prompt_tokens: int) -> dict[str, Any]:
        """An OpenAI chat request for servers that apply their own template (``max_tokens`` kept
        within what the context leaves: vLLM refuses a request that asks for more)."""
        if options.grammar and not options.grammar_trigger:
            raise EngineError(f"{loaded.config.name} ({loaded.config.kind}) cannot follow an output grammar: only "
                              "llama.cpp's llama-server can. Pick a template without one, or a model on llama-server.")
        body: dict[str, Any] = {
            "model": loaded.model, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max(1, min(options.max_tokens, loaded.n_ctx - prompt_tokens)),
            "temperature": options.temperature, "top_p": options.top_p,
        }
        if options.presence_penalty or options.frequency_penalty:
            body["presence_penalty"], body["frequency_penalty"] = options.presence_penalty, options.frequency_penalty
        if options.logit_bias:
            # Token ids are the server's model's own; a caller asking for a bias knows them.
            body["logit_bias"] = {str(token): float(bias) for token, bias in options.logit_bias.items()}
        if options.stop:
            # OpenAI allows 4; the last ones are the tool loop's, which matter most.
            body["stop"] = [s for s in options.stop if s][-4:]
        if options.seed is not None and options.seed >= 0:
            body["seed"] = options.seed
        if options.json_schema and not options.grammar_trigger:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": options.json_schema, "strict": True}}
        return body


def _read_raw(event: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(text, finish reason if it ended, usage) of one ``/completion`` event."""
    piece = event.get("content")
    if piece is not None and not isinstance(piece, str):
        raise RemoteError(f"llama-server sent a piece of text that is not a string: {piece!r:.80}")
    if not event.get("stop"):
        return piece or "", "", {}
    timings = event.get("timings")
    usage = {"prompt_tokens": event.get("tokens_evaluated"), "completion_tokens": event.get("tokens_predicted"),
             "timings": timings if isinstance(timings, dict) else {}}
    return piece or "", _STOP_TYPES.get(str(event.get("stop_type")), "stop"), usage


def _read_chat(event: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(text, finish reason if it ended, usage) of one chat completion chunk."""
    if event is DONE:
        return "", "stop", {}  # complete, though no chunk gave a finish reason
    choices = event.get("choices")
    if not isinstance(choices, list):
        raise RemoteError(f"The server sent a chunk without \"choices\": {str(event)[:120]}")
    usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
    if not choices:
        return "", "", usage
    choice = choices[0] if isinstance(choices[0], dict) else {}
    delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
    piece = delta.get("content") or ""
    if not isinstance(piece, str):
        raise RemoteError(f"The server sent a piece of text that is not a string: {piece!r:.80}")
    reason = choice.get("finish_reason") or ""
    return piece, {"length": "length"}.get(reason, "stop" if reason else ""), usage


def _apply_usage(stats: GenerationStats, usage: dict[str, Any]) -> None:
    if isinstance(usage.get("prompt_tokens"), int):
        stats.prompt_tokens = usage["prompt_tokens"]
    if isinstance(usage.get("completion_tokens"), int):
        stats.generated_tokens = usage["completion_tokens"]
    timings = usage.get("timings") if isinstance(usage.get("timings"), dict) else {}
    if isinstance(timings.get("prompt_n"), int):
        stats.prompt_tokens_evaluated = timings["prompt_n"]


def _finish_stats(stats: GenerationStats, started: float, first_at: float, last_at: float,
                  pieces: int) -> GenerationStats:
    """Times from this side of the network: what the user waits for."""
    now = time.perf_counter()
    stats.total_time = now - started
    if first_at:
        stats.time_to_first_token = first_at - started
    if pieces > 1 and last_at > first_at:
        stats.tokens_per_second = (max(stats.generated_tokens, pieces) - 1) / (last_at - first_at)
    return stats


def _estimate(text: str) -> int:
    """Tokens in ``text`` for a server that cannot count them: 2 bytes a token, more than any
    tokenizer needs for English (about 4) and enough for code and most other scripts."""
    return len(text.encode("utf-8")) // 2 + 8


def _text(value: Any) -> str:
    """A string field of a server's reply ("" when it is missing or not a string)."""
    return value if isinstance(value, str) else ""


def _regex_escape(text: str) -> str:
    """``text`` as a literal in an ECMAScript regular expression (llama.cpp's std::regex)."""
    return "".join("\\" + c if c in "\\^$.|?*+()[]{}/" else c for c in text)
