"""The engine: owns one llama.cpp model and streams answers from it.

Loading goes through llama-cpp-python's ``Llama`` (it reads the model and the tokenizer); the
context is Parley's own, made for several sequences at once. Generation drives llama.cpp
directly through the low-level bindings, in :mod:`desktop_app.core.batch`: answers asked for
from any thread are decoded together, one batch per step, each with its own sampler
(:mod:`desktop_app.core.sampling`). Python does a handful of cheap calls per token, so one
answer streams at llama.cpp's own speed, and several share each step's cost.

The cache keeps what earlier answers left in it. A new prompt that starts with the same
tokens (the usual case for a follow-up question) only evaluates what is new.

Loading, unloading and tokenizing take ``_lock``; answers do not hold it while they are
written. :meth:`Engine.cancel` may be called from any thread and stops the answers that watch
the shared Stop before their next token, keeping what was generated.

LoRA adapters are switched and rescaled on the loaded model (:meth:`Engine.set_adapters`),
without reloading it (:mod:`desktop_app.core.adapters`); any change empties the KV cache,
which was computed with the old set.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from desktop_app.core.adapters import (AdapterHandle, AdapterSet, apply_adapters, free_adapters, read_adapter,
                                       same_adapters)
from desktop_app.core.batch import Request, Scheduler
from desktop_app.core.chat_template import ChatTemplate
from desktop_app.core.context_fit import fit_to_context
from desktop_app.core.errors import EngineError, ModelLoadError
from desktop_app.core.events import DoneEvent, ErrorEvent, Event, GenerationStats, TokenEvent
from desktop_app.core.sampling import json_schema_grammar
from desktop_app.core.turn import Adapter, ChatMessage, GenerationOptions

__all__ = [
    "DoneEvent",
    "Engine",
    "EngineError",
    "ErrorEvent",
    "GenerationStats",
    "LoadConfig",
    "ModelLoadError",
    "TokenEvent",
    "json_schema_grammar",
    "physical_cores",
]

log = logging.getLogger(__name__)


def physical_cores() -> int:
    """Return the number of physical CPU cores this process may use (hyper-threads not counted).

    llama.cpp's default of half the logical CPUs undercounts on machines without SMT, and
    running one thread per hyper-thread slows generation; physical cores is the right number.
    """
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            physical = core = ""
            for line in handle:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    physical = value
                elif key == "core id":
                    core = value
                elif not key and core:
                    cores.add((physical, core))
                    physical = core = ""
            if core:
                cores.add((physical, core))
    except OSError:
        pass
    count = len(cores) if cores else (os.cpu_count() or 1)
    return max(1, min(count, allowed))


@dataclass
class LoadConfig:
    """How to load a model. ``gpu_layers`` 0 = CPU only, -1 = all layers; ``threads`` 0 = physical cores.

    ``context_length`` 0 (``memory_fit.AUTO_CONTEXT``) and ``gpu_layers`` -2
    (``memory_fit.AUTO_GPU_LAYERS``) are chosen at load time to fit the free memory
    (:func:`memory_fit.plan_load`); ``adapters`` are LoRA files that will be applied to the
    model after it loads, counted in that choice. ``parallel`` is how many answers can be
    written at once; they share the context's cells, so it costs no memory of its own.
    """

    context_length: int = 4096
    gpu_layers: int = 0
    threads: int = 0
    batch_size: int = 512
    flash_attention: bool = True
    mmap: bool = True
    seed: int = -1
    adapters: tuple[str, ...] = ()
    parallel: int = 8


@dataclass
class _Loaded:
    path: Path
    config: LoadConfig
    llm: Any
    template: ChatTemplate
    vocab: Any
    n_ctx: int
    add_bos: bool
    #: How the context and GPU layers were chosen (None for a model loaded without a plan).
    plan: Any = None
    #: Decodes the answers (made right after the model loads).
    scheduler: Any = None
    pieces: dict[int, bytes] = field(default_factory=dict)
    #: Whether a token ends generation, by token (asked of llama.cpp once per token).
    ends: dict[int, bool] = field(default_factory=dict)
    #: LoRA adapters read into llama.cpp, by resolved file; they belong to this model.
    adapter_handles: dict[Path, AdapterHandle] = field(default_factory=dict)
    #: Handles of adapter files that changed on disk, freed with the model.
    retired_adapters: list[AdapterHandle] = field(default_factory=list)
    #: The adapters answers use unless they ask for others: (file, scale, handle); a scale is never 0.
    active_adapters: AdapterSet = ()


class Engine:
    """Loads one GGUF model at a time and streams chat answers from it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cancel = threading.Event()
        self._loaded: _Loaded | None = None
        self._backend_ready = False

    # -- facts about this build ------------------------------------------------------------
    @staticmethod
    def gpu_offload_supported() -> bool:
        """Whether this build of llama.cpp can offload layers to a GPU at all."""
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())

    # -- loading ---------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """True while a model is loaded."""
        return self._loaded is not None

    @property
    def model_path(self) -> Path | None:
        """The loaded model's file, or None."""
        return self._loaded.path if self._loaded else None

    def recommended_sampling(self) -> dict[str, float]:
        """The sampling the loaded model recommends (see :func:`models.recommended_sampling`)."""
        loaded = self._loaded
        if loaded is None:
            return {}
        from desktop_app.core.models import recommended_sampling

        return recommended_sampling(loaded.llm.metadata or {}, loaded.path)

    @property
    def context_length(self) -> int:
        """The loaded model's context window in tokens (0 when none is loaded)."""
        return self._loaded.n_ctx if self._loaded else 0

    @property
    def vocab_size(self) -> int:
        """How many tokens the loaded model knows (ids 0 to vocab_size - 1; 0 when none is loaded)."""
        import llama_cpp

        with self._lock:  # the vocabulary belongs to the model, which a load may be freeing
            return int(llama_cpp.llama_vocab_n_tokens(self._loaded.vocab)) if self._loaded else 0

    @property
    def config(self) -> LoadConfig | None:
        """The load options of the loaded model (with the context and GPU layers chosen)."""
        return self._loaded.config if self._loaded else None

    @property
    def load_plan(self) -> Any:
        """How the loaded model's context and GPU layers were chosen (a ``memory_fit.LoadPlan``), or None."""
        return self._loaded.plan if self._loaded else None

    @property
    def fit_explanation(self) -> str:
        """Why the loaded model has its context and GPU layers, for the model's info ("" when none is loaded)."""
        plan = self.load_plan
        return plan.explanation if plan is not None else ""

    @property
    def chat_template(self) -> ChatTemplate | None:
        """The chat template in use (the model's own, or the fallback)."""
        return self._loaded.template if self._loaded else None

    def load(self, path: Path | str, config: LoadConfig | None = None) -> list[str]:
        """Load ``path``, replacing (and freeing) the current model.

        The file is checked before the current model is let go. If llama.cpp still refuses
        it, the previous model is loaded again and :class:`ModelLoadError` is raised.
        Returns warnings for the user (e.g. GPU layers asked for on a CPU-only build).
        """
        from desktop_app.core.memory_fit import AUTO_GPU_LAYERS
        from desktop_app.core.models import check_gguf_file

        config = config or LoadConfig()
        path = Path(path)
        info = check_gguf_file(path)  # raises ModelFileError with a clear message
        warnings: list[str] = []
        if config.gpu_layers not in (0, AUTO_GPU_LAYERS) and not self.gpu_offload_supported():
            warnings.append(
                "This build of llama.cpp has no GPU support, so the model runs on the CPU. "
                "Rebuild llama-cpp-python with CUDA, Metal or Vulkan to offload layers."
            )
        with self._lock:
            previous = (self._loaded.path, self._loaded.config, self._loaded.plan) if self._loaded else None
            # Measured with the current model let go of: its memory is free for the new one.
            self.unload()
            plan, config = self._plan(info, config)
            warning = plan.warning(path.name) if plan is not None else None
            if warning:
                warnings.append(warning)
            try:
                self._loaded = self._open(path, config, info.scalars.get("tokenizer.chat_template"))
                self._loaded.plan = plan
            except Exception as exc:
                message = f"llama.cpp could not load {path.name}: {exc}"
                if previous is not None:
                    try:
                        self._loaded = self._open(previous[0], previous[1], None)
                        self._loaded.plan = previous[2]
                        message += f". Still using {previous[0].name}."
                    except Exception:  # the old file vanished meanwhile: nothing to go back to
                        log.exception("could not reload the previous model")
                raise ModelLoadError(message) from exc
        return warnings

    def _plan(self, header: Any, config: LoadConfig) -> tuple[Any, LoadConfig]:
        """Choose the context and GPU layers the settings leave to Parley, and say why.

        Returns the plan (None if it could not be made) and ``config`` with the chosen numbers.
        """
        from desktop_app.core.memory_fit import (AUTO_CONTEXT, AUTO_GPU_LAYERS, adapter_headers, available_memory,
                                                 available_vram, plan_load)

        try:
            plan = plan_load(header, context_length=config.context_length, gpu_layers=config.gpu_layers,
                             available=available_memory(), vram=available_vram(), batch_size=config.batch_size,
                             flash_attention=config.flash_attention, adapters=adapter_headers(config.adapters))
        except Exception:  # an odd header must not cost the user the load: the usual numbers then
            log.exception("could not plan the memory of %s", header.architecture)
            context = 4096 if config.context_length == AUTO_CONTEXT else config.context_length
            layers = 0 if config.gpu_layers == AUTO_GPU_LAYERS else config.gpu_layers
            return None, replace(config, context_length=context, gpu_layers=layers)
        return plan, replace(config, context_length=plan.context_length, gpu_layers=plan.gpu_layers)

    def _open(self, path: Path, config: LoadConfig, template_source: str | None) -> _Loaded:
        import llama_cpp

        if not self._backend_ready:
            llama_cpp.llama_backend_init()
            self._backend_ready = True
        threads = config.threads or physical_cores()
        # Llama makes a context for one sequence; a small one, replaced at once by Parley's.
        small = 64
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=small,
            n_gpu_layers=config.gpu_layers,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=small,
            n_ubatch=small,
            flash_attn=config.flash_attention,
            use_mmap=config.mmap,
            seed=config.seed if config.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED,
            verbose=False,
        )
        try:
            _own_context(llm, config)
        except Exception:
            llm.close()
            raise
        metadata = llm.metadata or {}
        if template_source is None:
            template_source = metadata.get("tokenizer.chat_template")
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        bos = _token_text(llm, llm.token_bos())
        eos = _token_text(llm, llm.token_eos())
        template = ChatTemplate(template_source, bos_token=bos, eos_token=eos)
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        loaded = _Loaded(path, config, llm, template, vocab, llm.n_ctx(), add_bos)
        loaded.scheduler = Scheduler(loaded, self._cancel, lambda target: apply_adapters(llm._ctx.ctx, target),
                                     slots=max(1, config.parallel), batch_size=config.batch_size)
        return loaded

    def unload(self) -> None:
        """Free the loaded model's memory (no-op when none is loaded)."""
        with self._lock:
            if self._loaded is None:
                return
            loaded, self._loaded = self._loaded, None
            # Answers being written end with an error (they keep their text); then the memory goes.
            loaded.scheduler.close()
            free_adapters(loaded)
            # Frees the weights, context and batch in llama.cpp at once. No gc.collect()
            # after it: a full collection holds the GIL for tens of ms, freezing the window.
            loaded.llm.close()

    # -- prompts ---------------------------------------------------------------------------
    def _require(self) -> _Loaded:
        if self._loaded is None:
            raise EngineError("No model is loaded. Pick a model first.")
        return self._loaded

    def render(self, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        """Render chat messages with the model's chat template, ready for the assistant's answer.

        ``tools`` (OpenAI-style descriptions) go to templates that support tools.
        """
        return self._require().template.render([m.as_dict() for m in messages], tools=tools)

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is, safe from any thread: it waits for a load or an answer
        in progress (a model being swapped must not be freed under the tokenizer)."""
        with self._lock:
            return len(self.tokenize(text))

    def tokenize(self, text: str) -> list[int]:
        """Tokenize a rendered prompt the way generation will (special tokens parsed, BOS once)."""
        loaded = self._require()
        add_bos = loaded.add_bos and not (
            loaded.template.bos_token and text.startswith(loaded.template.bos_token)
        )
        return loaded.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def fit_messages(
        self, messages: Sequence[ChatMessage], reserve: int, tools: list[dict[str, Any]] | None = None,
        keep_last: int = 1,
    ) -> tuple[list[ChatMessage], str, list[int], int]:
        """Fit ``messages`` into the context window, leaving ``reserve`` tokens for the answer.

        Keeps the leading system message and the newest ``keep_last`` messages (the question,
        and this turn's tool calls and results, which make no sense apart); drops the oldest
        others first; as a last resort shortens the middle of the longest remaining message.
        Returns (messages kept, rendered prompt, its tokens, how many messages were dropped).
        """
        loaded = self._require()
        return fit_to_context(messages, lambda kept: self.render(kept, tools), self.tokenize, loaded.n_ctx,
                              reserve, keep_last)

    def clear_cache(self) -> None:
        """Forget the KV cache: the next prompt is evaluated from its first token.

        Waits for the answers being written to finish.
        """
        with self._lock:
            scheduler = self._require().scheduler
            with scheduler.exclusive():
                scheduler.forget()

    # -- LoRA adapters ---------------------------------------------------------------------
    @property
    def active_adapters(self) -> list[tuple[Path, float]]:
        """The LoRA adapters applied to the loaded model, as (resolved file, scale); empty when none."""
        return [(path, scale) for path, scale, _ in self._loaded.active_adapters] if self._loaded else []

    def load_adapter(self, path: Path | str) -> None:
        """Read a GGUF LoRA adapter into llama.cpp for the loaded model, without applying it.

        Handles are cached per file (read again when the file changes) and freed with the
        model, so switching back to an adapter costs nothing. Raises :class:`EngineError` when
        llama.cpp refuses the file; the model and the active adapters are untouched.
        """
        with self._lock:
            read_adapter(self._require(), Path(path).resolve())

    def set_adapters(self, adapters: Sequence[Adapter | tuple[Path | str, float]]) -> bool:
        """Make exactly ``adapters`` active on the loaded model, each at its scale.

        Takes :class:`Adapter` objects or (file, scale) pairs; scale 0 means off, and a file
        listed twice counts once (its last scale). Returns True if the active set changed; the
        next answer then starts from an empty KV cache, so nothing computed with the old set
        leaks into it. Answers already being written keep the set they started with. An
        unchanged set is a no-op that keeps the cache. Raises :class:`EngineError` if an
        adapter cannot be read, leaving the previous set active.
        """
        wanted: dict[Path, float] = {}
        for item in adapters:
            path, scale = (item.path, item.scale) if isinstance(item, Adapter) else item
            wanted[Path(path).resolve()] = float(scale)
        with self._lock:
            loaded = self._loaded
            if loaded is None:
                if any(wanted.values()):
                    raise EngineError("No model is loaded. Pick a model first.")
                return False
            target = tuple((path, scale, read_adapter(loaded, path))
                           for path, scale in wanted.items() if scale != 0.0)
            if same_adapters(target, loaded.active_adapters):
                return False
            loaded.active_adapters = target
            # At once when the model is idle; else before the next answer that uses it.
            loaded.scheduler.use_adapters(target)
            return True

    def release_adapter(self, path: Path | str) -> None:
        """Free a cached adapter that is not active (e.g. one removed from the library)."""
        path = Path(path).resolve()
        with self._lock:
            loaded = self._loaded
            if loaded is None or any(p == path for p, _, _ in loaded.active_adapters):
                return
            handle = loaded.adapter_handles.pop(path, None)
            if handle is None:
                return
            scheduler = loaded.scheduler
            if scheduler.answering or any(h is handle for _, _, h in scheduler.applied):
                loaded.retired_adapters.append(handle)  # still on the context, or wanted by an answer
            else:
                handle.free()


    # -- generation ------------------------------------------------------------------------
    @property
    def parallel(self) -> int:
        """How many answers the loaded model can write at once (0 when none is loaded)."""
        return self._loaded.scheduler.parallel if self._loaded else 0

    def cancel(self) -> None:
        """Stop the running generations before their next token, or the next one if none runs yet.

        Safe from any thread. The generation that stops consumes the request, so pressing Stop
        while a turn is still queued (behind a model load, or between the samples of a
        strategy) is not lost. Answers started with a ``cancel`` event of their own ignore it.
        """
        loaded = self._loaded
        if loaded is not None and loaded.scheduler.halt():
            return  # the answers being written took it
        self._cancel.set()

    @property
    def cancel_event(self) -> threading.Event:
        """Set while a Stop waits to be consumed (e.g. for work between generations, like tools)."""
        return self._cancel

    def reset_cancel(self) -> None:
        """Forget a Stop that no generation consumed (call before starting new work)."""
        self._cancel.clear()

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        options: GenerationOptions | None = None,
        tools: list[dict[str, Any]] | None = None,
        keep_last: int = 1,
        *,
        cancel: threading.Event | None = None,
        adapters: Sequence[Adapter | tuple[Path | str, float]] | None = None,
    ) -> Iterator[Event]:
        """Stream an answer to ``messages``; the last event is a DoneEvent or an ErrorEvent.

        ``tools`` (OpenAI-style descriptions) go to chat templates that support tools;
        the newest ``keep_last`` messages are never left out to fit the context. Safe to call
        from several threads at once: the answers are written together. ``cancel``, when
        given, stops this answer alone (instead of :meth:`cancel`); ``adapters`` are the LoRA
        adapters for this answer (instead of those :meth:`set_adapters` made active).
        """
        try:
            request = self.answers(messages, [options or GenerationOptions()], tools, keep_last,
                                   cancel=cancel, adapters=adapters)
        except EngineError as exc:
            yield ErrorEvent(str(exc))
            return
        for _, event in request.events():
            yield event

    def answers(
        self,
        messages: Sequence[ChatMessage],
        options: Sequence[GenerationOptions],
        tools: list[dict[str, Any]] | None = None,
        keep_last: int = 1,
        *,
        cancel: threading.Event | None = None,
        adapters: Sequence[Adapter | tuple[Path | str, float]] | None = None,
    ) -> Request:
        """Start one answer to ``messages`` for each of ``options``, written together.

        The prompt is evaluated once and shared. Read the answers from the returned request's
        ``events()``: ``(index, event)`` pairs, each answer's ending with a DoneEvent or an
        ErrorEvent; ``give_up(index)`` stops one. At most :attr:`parallel` answers at once.
        Raises EngineError when no model is loaded or the adapters cannot be read.
        """
        started = time.perf_counter()
        options = list(options)
        if not options:
            raise EngineError("Ask for at least one answer.")
        with self._lock:
            loaded = self._require()
            reserve = min(max(o.max_tokens for o in options), loaded.n_ctx // 2)
            _, prompt, tokens, dropped = self.fit_messages(messages, reserve, tools, keep_last)
            if adapters is None:
                target = loaded.active_adapters
            else:
                wanted: dict[Path, float] = {}
                for item in adapters:
                    path, scale = (item.path, item.scale) if isinstance(item, Adapter) else item
                    wanted[Path(path).resolve()] = float(scale)
                target = tuple((path, scale, read_adapter(loaded, path)) for path, scale in wanted.items() if scale)
            request = Request(tokens, prompt, options, target, cancel, dropped, started)
            return loaded.scheduler.submit(request)


def _own_context(llm: Any, config: LoadConfig) -> None:
    """Give ``llm`` a context for ``config.parallel`` sequences in place of the one it made.

    The cells are unified: the sequences share the whole context, and a prompt copied to
    several sequences shares its cells.
    """
    import llama_cpp
    from llama_cpp import _internals

    params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
    params.n_ctx = config.context_length or llm._model.n_ctx_train()
    params.n_batch = params.n_ubatch = config.batch_size
    params.n_seq_max = max(1, min(config.parallel, llama_cpp.llama_max_parallel_sequences()))
    params.kv_unified = True
    made = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    previous, llm._ctx = llm._ctx, made
    llm.context_params = params
    previous.close()


def _token_text(llm: Any, token: int) -> str:
    if token < 0:
        return ""
    try:
        return llm._model.token_get_text(token)
    except Exception:
        return ""
