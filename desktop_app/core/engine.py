"""The engine: owns one llama.cpp model and streams answers from it.

Loading goes through llama-cpp-python's ``Llama`` (it sets up the model, context and
tokenizer), but generation drives llama.cpp directly through the low-level bindings: the
prompt is decoded in batches, and each token is picked by llama.cpp's native sampler chain
(penalties, top-k, top-p, min-p, temperature, seeded distribution, optional grammar). Python
does a handful of cheap calls per token, so streaming runs at llama.cpp's own speed.

The engine remembers which tokens sit in the KV cache. A new prompt that starts with the
same tokens (the usual case for a follow-up question) only evaluates what is new.

One model call runs at a time (``_lock``); :meth:`Engine.cancel` may be called from any
thread and stops generation before the next token, keeping what was generated.

LoRA adapters are switched and rescaled on the loaded model (:meth:`Engine.set_adapters`),
without reloading it; any change empties the KV cache, which was computed with the old set.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from desktop_app.core.chat_template import ChatTemplate
from desktop_app.core.context_fit import fit_to_context
from desktop_app.core.errors import EngineError, ModelFileError, ModelLoadError
from desktop_app.core.events import DoneEvent, ErrorEvent, Event, GenerationStats, TokenEvent
from desktop_app.core.turn import Adapter, ChatMessage, GenerationOptions, trigger_opening

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
    model after it loads, counted in that choice.
    """

    context_length: int = 4096
    gpu_layers: int = 0
    threads: int = 0
    batch_size: int = 512
    flash_attention: bool = True
    mmap: bool = True
    seed: int = -1
    adapters: tuple[str, ...] = ()



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
    cached_tokens: list[int] = field(default_factory=list)
    pieces: dict[int, bytes] = field(default_factory=dict)
    #: Whether a token ends generation, by token (asked of llama.cpp once per token).
    ends: dict[int, bool] = field(default_factory=dict)
    #: LoRA adapters read into llama.cpp, by resolved file; they belong to this model.
    adapter_handles: dict[Path, "_AdapterHandle"] = field(default_factory=dict)
    #: Handles of adapter files that changed on disk, freed once no longer applied.
    retired_adapters: list["_AdapterHandle"] = field(default_factory=list)
    #: The adapters applied to the context: (file, scale, handle); a scale is never 0.
    active_adapters: tuple[tuple[Path, float, "_AdapterHandle"], ...] = ()


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
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=config.context_length,
            n_gpu_layers=config.gpu_layers,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=config.batch_size,
            n_ubatch=config.batch_size,
            flash_attn=config.flash_attention,
            use_mmap=config.mmap,
            seed=config.seed if config.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED,
            verbose=False,
        )
        metadata = llm.metadata or {}
        if template_source is None:
            template_source = metadata.get("tokenizer.chat_template")
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        bos = _token_text(llm, llm.token_bos())
        eos = _token_text(llm, llm.token_eos())
        template = ChatTemplate(template_source, bos_token=bos, eos_token=eos)
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        return _Loaded(path, config, llm, template, vocab, llm.n_ctx(), add_bos)

    def unload(self) -> None:
        """Free the loaded model's memory (no-op when none is loaded)."""
        with self._lock:
            if self._loaded is None:
                return
            loaded, self._loaded = self._loaded, None
            _free_adapters(loaded)
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
        """Forget the KV cache: the next prompt is evaluated from its first token."""
        import llama_cpp

        with self._lock:
            loaded = self._require()
            loaded.cached_tokens.clear()
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(loaded.llm._ctx.ctx), True)

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
            self._adapter_handle(self._require(), Path(path).resolve())

    def set_adapters(self, adapters: Sequence[Adapter | tuple[Path | str, float]]) -> bool:
        """Make exactly ``adapters`` active on the loaded model, each at its scale.

        Takes :class:`Adapter` objects or (file, scale) pairs; scale 0 means off, and a file
        listed twice counts once (its last scale). Returns True if the active set changed; a
        change empties the KV cache, so nothing computed with the old set leaks into the next
        answer. An unchanged set is a no-op that keeps the cache. Raises :class:`EngineError`
        if an adapter cannot be read, leaving the previous set active.
        """
        import llama_cpp

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
            target = tuple((path, scale, self._adapter_handle(loaded, path))
                           for path, scale in wanted.items() if scale != 0.0)
            if len(target) == len(loaded.active_adapters) and all(
                    a[:2] == b[:2] and a[2] is b[2] for a, b in zip(target, loaded.active_adapters)):
                return False
            n = len(target)  # ctypes arrays get at least one slot, even for "no adapters"
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * max(n, 1))(*[h.pointer for _, _, h in target])
            scales = (ctypes.c_float * max(n, 1))(*[scale for _, scale, _ in target])
            if llama_cpp.llama_set_adapters_lora(loaded.llm._ctx.ctx, handles, n, scales) != 0:
                raise EngineError("llama.cpp could not apply the LoRA adapters.")
            loaded.active_adapters = target
            # The keys and values in the cache were computed with the old weights.
            self.clear_cache()
            # Handles of files that changed on disk are let go once they are no longer applied.
            for handle in loaded.retired_adapters:
                handle.free()
            loaded.retired_adapters.clear()
            return True

    def release_adapter(self, path: Path | str) -> None:
        """Free a cached adapter that is not active (e.g. one removed from the library)."""
        path = Path(path).resolve()
        with self._lock:
            loaded = self._loaded
            if loaded is None or any(p == path for p, _, _ in loaded.active_adapters):
                return
            handle = loaded.adapter_handles.pop(path, None)
            if handle is not None:
                handle.free()

    def _adapter_handle(self, loaded: _Loaded, path: Path) -> "_AdapterHandle":
        import llama_cpp

        try:
            st = path.stat()
        except OSError:
            raise EngineError(f"The LoRA adapter {path} does not exist.") from None
        version = (st.st_size, st.st_mtime_ns)
        handle = loaded.adapter_handles.get(path)
        if handle is not None and handle.version == version:
            return handle
        from desktop_app.core.models import check_lora_file

        try:
            check_lora_file(path)  # files llama.cpp would crash on instead of refusing
        except ModelFileError as exc:
            raise EngineError(f"{exc} The model keeps working without it.") from None
        pointer = llama_cpp.llama_adapter_lora_init(loaded.llm._model.model, str(path).encode("utf-8"))
        if not pointer:
            raise EngineError(
                f"llama.cpp could not load the LoRA adapter {path.name}: it does not fit "
                f"{loaded.path.name} or is damaged. The model keeps working without it."
            )
        if handle is not None:  # the file changed: let the old handle go once it is not applied
            if any(h is handle for _, _, h in loaded.active_adapters):
                loaded.retired_adapters.append(handle)
            else:
                handle.free()
        handle = loaded.adapter_handles[path] = _AdapterHandle(pointer, version)
        return handle

    # -- generation ------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the running generation before its next token, or the next one if none runs yet.

        Safe from any thread. The generation that stops consumes the request, so pressing Stop
        while a turn is still queued (behind a model load, or between the samples of a
        strategy) is not lost.
        """
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
    ) -> Iterator[Event]:
        """Stream an answer to ``messages``; the last event is a DoneEvent or an ErrorEvent.

        ``tools`` (OpenAI-style descriptions) go to chat templates that support tools;
        the newest ``keep_last`` messages are never left out to fit the context.
        """
        options = options or GenerationOptions()
        with self._lock:
            started = time.perf_counter()
            try:
                loaded = self._require()
                reserve = min(options.max_tokens, loaded.n_ctx // 2)
                _, prompt, tokens, dropped = self.fit_messages(messages, reserve, tools, keep_last)
            except EngineError as exc:
                yield ErrorEvent(str(exc))
                return
            yield from self._generate(loaded, prompt, tokens, options, started, dropped)

    def _generate(
        self,
        loaded: _Loaded,
        prompt: str,
        tokens: list[int],
        options: GenerationOptions,
        started: float,
        dropped: int,
    ) -> Iterator[Event]:
        import llama_cpp

        stats = GenerationStats(prompt_tokens=len(tokens), dropped_messages=dropped, context_length=loaded.n_ctx)
        ctx = loaded.llm._ctx.ctx
        sampler = None
        text = ""
        try:
            evaluated = self._evaluate_prompt(loaded, tokens)
            stats.prompt_tokens_evaluated = evaluated
            sampler = _build_sampler(loaded, options)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            stop = [s for s in options.stop if s]
            held = ""  # text held back because it may be the start of a stop string
            one = (llama_cpp.llama_token * 1)()
            next_batch = llama_cpp.llama_batch_get_one(one, 1)  # reads ``one`` at each decode
            limit = min(options.max_tokens, loaded.n_ctx - len(tokens))
            finish = "length"
            hit_stop = False
            end_token = None
            first_at = 0.0
            # A grammar with a trigger binds only answers that begin with the trigger.
            undecided = bool(options.grammar_trigger) and bool(options.grammar or options.json_schema)
            opening = ""
            generated: list[int] = []
            # Bound once: this loop runs right after each decode, with cold CPU caches, where
            # every lookup costs (see _GreedySampler).
            cancelled = self._cancel.is_set
            decode = llama_cpp.llama_decode
            decode_text = decoder.decode
            remember = loaded.cached_tokens.append
            count = 0
            while count < limit:
                if cancelled():
                    self._cancel.clear()  # this generation consumed the Stop
                    finish = "cancelled"
                    break
                token = sampler.sample(ctx)
                if _is_end(loaded, token):
                    finish, end_token = "stop", token
                    break
                count += 1
                if count == 1:
                    first_at = time.perf_counter()
                    stats.time_to_first_token = first_at - started
                piece = decode_text(_piece(loaded, token))
                generated.append(token)
                if undecided and piece:
                    opening += piece
                    opens = trigger_opening(opening, options.grammar_trigger)
                    if opens:
                        undecided = False  # a constrained answer: the grammar stays
                    elif opens is False:
                        # Free text: checking the grammar on every token would halve the speed.
                        undecided = False
                        sampler.free()
                        sampler = None
                        sampler = _build_sampler(loaded, replace(options, grammar=None, json_schema=None))
                        for seen in generated:  # the repeat penalty remembers what was said
                            sampler.accept(seen)
                if piece:
                    if stop:
                        held += piece
                        emit, held, hit_stop = _split_stop(held, stop)
                    else:
                        emit = piece
                    if emit:
                        text += emit
                        yield TokenEvent(emit)
                    if hit_stop:
                        finish = "stop"
                        break
                if count >= limit:
                    break  # the last token allowed: nothing will be sampled after it
                # Feed the token back so the next one can be sampled.
                one[0] = token
                if decode(ctx, next_batch) != 0:
                    raise EngineError("llama.cpp failed to evaluate the next token.")
                remember(token)
            stats.generated_tokens = count
            if not hit_stop:
                # Text held back for a stop string that never completed belongs to the answer.
                tail = held + decoder.decode(b"", final=True)
                if tail:
                    text += tail
                    yield TokenEvent(tail)
            now = time.perf_counter()
            stats.total_time = now - started
            if stats.generated_tokens > 1 and now > first_at:
                stats.tokens_per_second = (stats.generated_tokens - 1) / (now - first_at)
            if end_token is not None and len(loaded.cached_tokens) < loaded.n_ctx:
                # The chat template closes the answer with this token in the next prompt;
                # having it in the cache already makes the follow-up's prefix match longer.
                one[0] = end_token
                if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1)) == 0:
                    loaded.cached_tokens.append(end_token)
            yield DoneEvent(text, finish, stats, prompt)
        except EngineError as exc:
            yield ErrorEvent(str(exc), text)
        except GeneratorExit:
            raise
        except Exception as exc:  # a llama.cpp failure must not take the app down
            log.exception("generation failed")
            # The KV cache may be inconsistent now; forget it so the next turn starts clean.
            loaded.cached_tokens.clear()
            yield ErrorEvent(f"Generation failed: {exc}", text)
        finally:
            if sampler is not None:
                sampler.free()

    def _evaluate_prompt(self, loaded: _Loaded, tokens: list[int]) -> int:
        """Bring the KV cache to ``tokens``, reusing the common prefix; return how many were evaluated."""
        import llama_cpp

        ctx = loaded.llm._ctx.ctx
        cached = loaded.cached_tokens
        common = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            common += 1
        # The last prompt token must be evaluated again to get fresh logits to sample from.
        common = min(common, len(tokens) - 1)
        memory = llama_cpp.llama_get_memory(ctx)
        if common == 0:
            llama_cpp.llama_memory_clear(memory, True)
        elif not llama_cpp.llama_memory_seq_rm(memory, 0, common, -1):
            llama_cpp.llama_memory_clear(memory, True)
            common = 0
        del cached[common:]
        batch_size = max(1, loaded.config.batch_size)
        for start in range(common, len(tokens), batch_size):
            if self._cancel.is_set():
                break
            chunk = tokens[start:start + batch_size]
            array = (llama_cpp.llama_token * len(chunk))(*chunk)
            if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(chunk))) != 0:
                cached.clear()
                llama_cpp.llama_memory_clear(memory, True)
                raise EngineError("llama.cpp failed to evaluate the prompt.")
            cached.extend(chunk)
        return len(tokens) - common


@dataclass
class _AdapterHandle:
    """A LoRA adapter read into llama.cpp, and the (size, mtime) of the file it came from."""

    pointer: Any
    version: tuple[int, int]

    def free(self) -> None:
        import llama_cpp

        if self.pointer:
            llama_cpp.llama_adapter_lora_free(self.pointer)
            self.pointer = None


def _free_adapters(loaded: _Loaded) -> None:
    """Detach the adapters from the context, then free them (before the model goes)."""
    if not loaded.adapter_handles and not loaded.retired_adapters:
        return
    import llama_cpp

    # The context keeps pointers to the applied adapters: clear them before freeing.
    llama_cpp.llama_set_adapters_lora(loaded.llm._ctx.ctx, None, 0, None)
    loaded.active_adapters = ()
    for handle in [*loaded.adapter_handles.values(), *loaded.retired_adapters]:
        handle.free()
    loaded.adapter_handles.clear()
    loaded.retired_adapters.clear()


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """Return a GBNF grammar that only admits JSON matching ``schema`` (llama.cpp's converter)."""
    import json

    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:
        raise EngineError(f"The JSON schema cannot be used for output: {exc}") from exc


#: How many recent tokens the repeat penalty looks at (llama.cpp's usual default).
PENALTY_LAST_N = 64


class _ChainSampler:
    """llama.cpp's native sampler chain."""

    def __init__(self, chain: Any):
        self.chain = chain

    def sample(self, ctx: Any) -> int:
        """Pick the next token from the last logits (and remember it)."""
        import llama_cpp

        return llama_cpp.llama_sampler_sample(self.chain, ctx, -1)

    def accept(self, token: int) -> None:
        """Remember a token generated elsewhere (for the repeat penalty)."""
        import llama_cpp

        llama_cpp.llama_sampler_accept(self.chain, token)

    def free(self) -> None:
        """Free the chain."""
        import llama_cpp

        llama_cpp.llama_sampler_free(self.chain)


class _GreedySampler:
    """Greedy decoding with llama.cpp's repeat penalty, straight from the logits.

    llama.cpp's samplers first copy all logits into a candidate array (the whole vocabulary,
    every token); for greedy decoding that copy and the sort that follows cost several
    percent of the time per token. The same choice is an argmax: the best token not in the
    penalty window, against the best penalised one (a test compares both token for token).

    The code here runs right after each llama_decode, which has just streamed the whole
    model through the CPU caches, so every extra Python call is a cold one (tens of µs):
    hence the cached view of the logits and the short path when the best token is not
    penalised at all.
    """

    def __init__(self, loaded: _Loaded, repeat_penalty: float):
        import numpy

        import llama_cpp

        self.np = numpy
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(loaded.vocab)
        self.penalty = repeat_penalty
        self.recent: collections.deque[int] = collections.deque()
        self.counts: dict[int, int] = {}  # how often each token occurs in ``recent``
        self._logits_address = _logits_address_function()
        self._address = 0
        self._view: Any = None

    def _logits(self, ctx: Any) -> Any:
        """The last logits as a numpy array over llama.cpp's buffer (not a copy)."""
        address = self._logits_address(ctx, -1)
        if not address:
            raise EngineError("llama.cpp has no logits to sample from.")
        if address != self._address:  # the buffer moves only when llama.cpp reallocates it
            self._view = self.np.ctypeslib.as_array((ctypes.c_float * self.n_vocab).from_address(address))
            self._address = address
        return self._view

    def sample(self, ctx: Any) -> int:
        """The token with the highest (penalised) logit."""
        logits = self._logits(ctx)
        best = int(logits.argmax())
        # A penalty above 1 only lowers logits, so an unpenalised winner stays the winner;
        # one below 1 (asking for repetition) may lift a recent token above it.
        if self.counts and self.penalty != 1.0 and (best in self.counts or self.penalty < 1.0):
            best = self._penalised_best(logits)
        self.accept(best)
        return best

    def _penalised_best(self, logits: Any) -> int:
        np = self.np
        ids = np.fromiter(self.counts, dtype=np.int64, count=len(self.counts))
        saved = logits[ids].copy()
        logits[ids] = -np.inf  # the buffer is llama.cpp's scratch until the next decode
        best = int(logits.argmax())
        value = logits[best]
        logits[ids] = saved
        penalised = np.where(saved <= 0, saved * self.penalty, saved / self.penalty)
        j = int(penalised.argmax())
        if penalised[j] > value:
            best = int(ids[j])
        return best

    def accept(self, token: int) -> None:
        """Remember a token (for the repeat penalty over the last PENALTY_LAST_N)."""
        self.recent.append(token)
        self.counts[token] = self.counts.get(token, 0) + 1
        if len(self.recent) > PENALTY_LAST_N:
            old = self.recent.popleft()
            left = self.counts[old] - 1
            if left:
                self.counts[old] = left
            else:
                del self.counts[old]

    def free(self) -> None:
        """Nothing to free."""


def _logits_address_function() -> Callable[[Any, int], int | None]:
    """``llama_get_logits_ith`` returning a plain address, so no ctypes pointer is built per token."""
    import llama_cpp

    library = getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None)
    if library is None:  # another packaging of the bindings: go through the public function
        get = llama_cpp.llama_get_logits_ith
        return lambda ctx, i: ctypes.cast(get(ctx, i), ctypes.c_void_p).value
    function = library["llama_get_logits_ith"]  # indexing gives a new object: the bindings' own is untouched
    function.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    function.restype = ctypes.c_void_p
    return function


def _build_sampler(loaded: _Loaded, options: GenerationOptions) -> "_ChainSampler | _GreedySampler":
    """The sampler for ``options``: llama.cpp's native chain, or plain greedy when that is all."""
    grammar_text = options.grammar or options.json_schema
    extras = options.logit_bias or options.presence_penalty or options.frequency_penalty
    if options.temperature <= 0 and not grammar_text and not extras:
        return _GreedySampler(loaded, options.repeat_penalty or 1.0)
    return _ChainSampler(_build_chain(loaded, options))


def _build_chain(loaded: _Loaded, options: GenerationOptions) -> Any:
    """Build llama.cpp's native sampler chain for ``options``."""
    import llama_cpp

    # Converting the schema may fail: do it before anything needs freeing.
    grammar_text = options.grammar or (json_schema_grammar(options.json_schema) if options.json_schema else None)
    params = llama_cpp.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(params)
    add = llama_cpp.llama_sampler_chain_add
    if grammar_text:
        grammar = llama_cpp.llama_sampler_init_grammar(loaded.vocab, grammar_text.encode("utf-8"), b"root")
        if not grammar:
            llama_cpp.llama_sampler_free(chain)
            raise EngineError("The output grammar is not valid GBNF.")
        add(chain, grammar)
    if options.logit_bias:
        # Before the penalties' cut below, which must see the biased logits.
        add(chain, _logit_bias_sampler(loaded, options.logit_bias))
    repeat = options.repeat_penalty or 1.0
    freq, present = options.frequency_penalty or 0.0, options.presence_penalty or 0.0
    penalize = repeat != 1.0 or bool(freq) or bool(present)
    if penalize:
        # A repeat penalty above 1 (and positive frequency and presence penalties) only lower
        # the logits of the last PENALTY_LAST_N tokens, so the winners after them are always
        # among the top (wanted + PENALTY_LAST_N) before them. Cutting to those first gives
        # exactly the same tokens, but spares llama.cpp a penalty lookup for every entry of
        # the vocabulary (tens of thousands) per token. (Penalties that raise them: no cut.)
        wanted = 1 if options.temperature <= 0 else options.top_k
        if wanted > 0 and repeat >= 1.0 and freq >= 0 and present >= 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(wanted + PENALTY_LAST_N))
        penalty_args = (PENALTY_LAST_N, repeat, freq, present)
        init = llama_cpp.llama_sampler_init_penalties
        # Some llama.cpp versions also take the vocabulary size first.
        if len(getattr(init, "argtypes", ()) or ()) == 5:
            penalty_args = (llama_cpp.llama_vocab_n_tokens(loaded.vocab), *penalty_args)
        add(chain, init(*penalty_args))
    if options.temperature <= 0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if options.top_k > 0:
        add(chain, llama_cpp.llama_sampler_init_top_k(options.top_k))
    if options.top_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_top_p(options.top_p, 1))
    if options.min_p > 0.0:
        add(chain, llama_cpp.llama_sampler_init_min_p(options.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(options.temperature))
    seed = options.seed if options.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED
    add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain


def _logit_bias_sampler(loaded: _Loaded, bias: dict[int, float]) -> Any:
    """llama.cpp's logit-bias sampler: each token's logit plus its bias (-100: never the token)."""
    import llama_cpp

    n_vocab = llama_cpp.llama_vocab_n_tokens(loaded.vocab)
    wrong = sorted(t for t in bias if not 0 <= int(t) < n_vocab)
    if wrong:
        raise EngineError(f"logit_bias names token {wrong[0]}, but the model's tokens are 0 to {n_vocab - 1}.")
    entries = (llama_cpp.llama_logit_bias * len(bias))()
    for entry, (token, value) in zip(entries, bias.items()):
        entry.token = int(token)
        # OpenAI: -100 "should result in a ban"; adding -100 to a logit nearly does, -inf does.
        entry.bias = float("-inf") if value <= -100 else float(value)
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), entries)


def _is_end(loaded: _Loaded, token: int) -> bool:
    """Whether ``token`` ends generation (cached: a ctypes call per token costs more)."""
    end = loaded.ends.get(token)
    if end is None:
        import llama_cpp

        end = loaded.ends[token] = bool(llama_cpp.llama_vocab_is_eog(loaded.vocab, token))
    return end


def _piece(loaded: _Loaded, token: int) -> bytes:
    """Return a token's bytes (cached: the same tokens recur constantly)."""
    piece = loaded.pieces.get(token)
    if piece is None:
        import llama_cpp

        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(loaded.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(loaded.vocab, token, buf, len(buf), 0, False)
        piece = buf.raw[:max(n, 0)]
        loaded.pieces[token] = piece
    return piece


def _token_text(llm: Any, token: int) -> str:
    if token < 0:
        return ""
    try:
        return llm._model.token_get_text(token)
    except Exception:
        return ""


def _split_stop(held: str, stop: list[str]) -> tuple[str, str, bool]:
    """Split ``held`` into (text safe to show, text to keep holding, whether a stop string was hit).

    Text that could be the beginning of a stop string is held back until it is clear
    whether the stop string completes, so the user never sees half of one.
    """
    if not stop:
        return held, "", False
    first = -1
    for s in stop:
        i = held.find(s)
        if i != -1 and (first == -1 or i < first):
            first = i
    if first != -1:
        return held[:first], "", True
    keep = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(held)), 0, -1):
            if held.endswith(s[:n]):
                keep = max(keep, n)
                break
    if keep:
        return held[:-keep], held[-keep:], False
    return held, "", False
