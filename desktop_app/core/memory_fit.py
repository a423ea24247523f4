"""Memory fit: what a model will need before it is loaded, from its GGUF header alone.

llama.cpp allocates four things for a model on the CPU, and logs each one's size when it
loads (``measure_llama_buffers`` reads those lines back):

- the weights: the tensor data, mapped from the file (``CPU_Mapped model buffer``);
- the KV cache: per layer and cell, one key and one value per KV head, in the cache's type;
  llama.cpp rounds the context up to a multiple of 256 cells;
- the output buffer: one row of logits;
- the compute buffer: the scratch of the largest graph it reserves, a batch of
  ``n_ubatch`` tokens. Its peak is the logits of every token of the batch (plus two hidden
  states), or, without flash attention, the attention scores of every head against the
  whole context, whichever is larger.

LoRA adapters add their own tensors.

At load time :func:`plan_load` turns the settings into the numbers llama.cpp gets: a context
length (``auto``: the largest that fits in the free RAM, :func:`choose_context_length`) and
GPU layers (``auto``: as many as fit in the free VRAM, :func:`choose_gpu_layers`, with
:func:`available_vram` asking llama.cpp's own device list), each with a sentence that says why.

Not modelled (say so before trusting the estimate on
such a model): sliding-window layers (they need fewer KV cells, so the estimate is high),
per-layer KV head counts stored as arrays (the largest count is assumed: high), MLA caches,
CPU weight repacking (Q4_0 on some CPUs copies the weights: low) and GPU offload (the total
is the same, split over devices).

Checked against llama.cpp by tests/model/test_memory_fit.py; ``benchmarks/memory_fit.py``
prints the table.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from desktop_app.core.models import GGUFHeader

__all__ = [
    "ALL_GPU_LAYERS",
    "AUTO_CONTEXT",
    "AUTO_CONTEXT_MAX",
    "AUTO_GPU_LAYERS",
    "CONTEXT_STEP",
    "ESTIMATE_TOLERANCE",
    "RESERVE_BYTES",
    "VRAM_RESERVE_BYTES",
    "FitChoice",
    "GpuChoice",
    "LoadPlan",
    "MemoryEstimate",
    "adapter_headers",
    "available_memory",
    "available_vram",
    "choose_context_length",
    "choose_gpu_layers",
    "estimate_memory",
    "layer_bytes",
    "measure_llama_buffers",
    "plan_load",
]

#: llama.cpp pads the context to this many cells; contexts are chosen in the same steps.
CONTEXT_STEP = 256
#: How far the estimate may be from llama.cpp's real buffers (the test holds it to this).
ESTIMATE_TOLERANCE = 0.15
#: Left free for the window, the embedder and the rest of the system when choosing a context.
RESERVE_BYTES = 1024 * 1024 * 1024
#: Left free on the GPU when choosing layers: the desktop and other programs draw there too.
VRAM_RESERVE_BYTES = 512 * 1024 * 1024
#: ``model.context_length`` "auto": choose the context that fits.
AUTO_CONTEXT = 0
#: ``model.gpu_layers`` "auto": offload as many layers as fit in the free VRAM.
AUTO_GPU_LAYERS = -2
#: ``model.gpu_layers`` "all": every layer and the output (llama.cpp's -1).
ALL_GPU_LAYERS = -1
#: The largest context "auto" chooses. llama.cpp allocates and clears the whole KV cache when
#: it loads a model, so a 128k context (what many models are trained for) costs gigabytes and
#: seconds at every load for chats that rarely pass a few thousand tokens; 32k holds a long
#: conversation or a long document. Set the context yourself to go beyond it.
AUTO_CONTEXT_MAX = 32768
_MIB = 1024 * 1024
_FLOAT32 = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes llama.cpp will allocate for a model at one context length, by buffer."""

    context_length: int
    weights: int
    kv_cache: int
    compute: int
    output: int
    adapters: int = 0

    @property
    def total(self) -> int:
        """All buffers together."""
        return self.weights + self.kv_cache + self.compute + self.output + self.adapters

    def describe(self) -> str:
        """One line for the model info, e.g. "412 MB: weights 92 MB, KV cache 180 MB, ..."."""
        parts = [("weights", self.weights), ("KV cache", self.kv_cache), ("compute", self.compute)]
        if self.adapters:
            parts.append(("adapters", self.adapters))
        listed = ", ".join(f"{name} {_mb(size)}" for name, size in parts)
        return f"{_mb(self.total)} at {self.context_length:,} tokens ({listed})"


@dataclass(frozen=True)
class FitChoice:
    """The context length to load a model with, and why."""

    context_length: int
    estimate: MemoryEstimate
    available: int
    #: False when not even the smallest context fits (the model may still load, and swap).
    fits: bool
    #: True when the user's own setting was kept.
    user_set: bool
    explanation: str


def _kv_bytes_per_element(kv_type: str) -> float:
    import gguf

    try:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kv_type.upper()]]
    except KeyError:
        raise ValueError(f"Unknown KV cache type {kv_type!r}; use f16, f32, bf16, q8_0, q4_0 ...") from None
    return size / block


def _padded(context_length: int) -> int:
    return max(CONTEXT_STEP, math.ceil(context_length / CONTEXT_STEP) * CONTEXT_STEP)


def estimate_memory(
    header: GGUFHeader,
    context_length: int,
    *,
    batch_size: int = 512,
    kv_type: str = "f16",
    flash_attention: bool = True,
    adapters: Iterable[GGUFHeader] = (),
) -> MemoryEstimate:
    """Estimate the bytes llama.cpp allocates to run ``header``'s model at ``context_length``.

    ``batch_size`` is llama.cpp's ``n_ubatch`` (Parley sets ``n_batch`` to the same),
    ``kv_type`` the cache's element type, ``adapters`` the headers of LoRA files to be applied.
    Uses only the header: call it before loading, e.g. with :func:`models.check_gguf_file`.
    """
    scalars, arch = header.scalars, header.architecture
    shapes = header.tensor_shapes or {}

    def key(name: str, default: int = 0) -> int:
        value = scalars.get(f"{arch}.{name}")
        # Arrays (per-layer values) are not kept by the header reader: they fall to the default.
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    n_ctx = _padded(context_length)
    n_layer = key("block_count")
    n_embd = key("embedding_length")
    n_head = key("attention.head_count", 1) or 1
    n_head_kv = key("attention.head_count_kv", n_head) or n_head
    head_dim_k = key("attention.key_length", n_embd // n_head)
    head_dim_v = key("attention.value_length", n_embd // n_head)
    embedding = shapes.get("token_embd.weight") or shapes.get("output.weight") or (n_embd, 0)
    n_vocab = int(embedding[1]) if len(embedding) > 1 else 0
    # llama.cpp never reserves a batch longer than the context.
    n_ubatch = max(1, min(batch_size, n_ctx))

    kv_cache = int(n_layer * n_ctx * n_head_kv * (head_dim_k + head_dim_v) * _kv_bytes_per_element(kv_type))
    logits = n_ubatch * (n_vocab + 2 * n_embd) * _FLOAT32
    if flash_attention:
        attention = n_ubatch * n_ctx * 2  # only the f16 mask is materialised
    else:
        attention = n_ubatch * n_ctx * (n_head + 1) * _FLOAT32 + 3 * n_ubatch * n_embd * _FLOAT32
    return MemoryEstimate(
        context_length=n_ctx,
        weights=header.tensor_bytes,
        kv_cache=kv_cache,
        compute=max(logits, attention),
        output=n_vocab * _FLOAT32,
        adapters=sum(a.tensor_bytes for a in adapters),
    )


def available_memory() -> int:
    """Bytes of RAM the system could give a new allocation now (psutil's "available")."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil is a dependency; this keeps a stripped build working
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def choose_context_length(
    header: GGUFHeader,
    available: int,
    *,
    user_context: int | None = None,
    minimum: int = CONTEXT_STEP,
    reserve: int = RESERVE_BYTES,
    batch_size: int = 512,
    kv_type: str = "f16",
    flash_attention: bool = True,
    adapters: Iterable[GGUFHeader] = (),
    maximum: int | None = None,
    memory: str = "",
) -> FitChoice:
    """Pick the context length to load ``header``'s model with in ``available`` bytes of RAM.

    With ``user_context`` (the user's own setting) that is kept, and the explanation says
    whether it fits. Otherwise: the largest multiple of 256 tokens, at most the model's trained
    context (and ``maximum``), whose estimate plus :data:`ESTIMATE_TOLERANCE` fits in
    ``available - reserve``; ``minimum`` when even that does not fit (``fits`` is then False).
    ``memory`` names what ``available`` counts in the explanation (e.g. "of RAM and VRAM").
    """
    adapters = tuple(adapters)

    def estimate(n_ctx: int) -> MemoryEstimate:
        return estimate_memory(header, n_ctx, batch_size=batch_size, kv_type=kv_type,
                               flash_attention=flash_attention, adapters=adapters)

    budget = available - reserve

    def fits(e: MemoryEstimate) -> bool:
        # The estimate may be that much low; the choice must hold even then.
        return e.total * (1 + ESTIMATE_TOLERANCE) <= budget

    free = f"{_mb(available)}{' ' + memory if memory else ''} available, {_mb(reserve)} kept free"
    if user_context is not None:
        e = estimate(user_context)
        verdict = "fits" if fits(e) else "may not fit"
        return FitChoice(user_context, e, available, fits(e), True,
                         f"Context {user_context:,} tokens (your setting) {verdict}: needs about {e.describe()}; {free}.")

    trained = int(header.scalars.get(f"{header.architecture}.context_length", 0) or 0)
    # A model that does not say is given the smallest context that serves a chat.
    top = max(minimum, trained // CONTEXT_STEP * CONTEXT_STEP if trained else 4096)
    capped = maximum is not None and top > maximum
    if capped:
        top = max(minimum, maximum // CONTEXT_STEP * CONTEXT_STEP)
    low_steps, high_steps = 0, (top - minimum) // CONTEXT_STEP
    if not fits(estimate(minimum)):
        e = estimate(minimum)
        return FitChoice(minimum, e, available, False, False,
                         f"Context {minimum:,} tokens, the smallest: even that needs about {e.describe()}, "
                         f"more than fits ({free}); expect swapping, or pick a smaller model.")
    # Memory grows with the context, so the largest context that fits is found by bisection.
    while low_steps < high_steps:
        middle = (low_steps + high_steps + 1) // 2
        if fits(estimate(minimum + middle * CONTEXT_STEP)):
            low_steps = middle
        else:
            high_steps = middle - 1
    n_ctx = minimum + low_steps * CONTEXT_STEP
    e = estimate(n_ctx)
    if n_ctx < top:
        why = "the largest that fits"
    elif capped:
        why = f"the most Parley chooses by itself (the model was trained for {trained:,}; set it to go further)"
    else:
        why = "the model's trained context"
    return FitChoice(n_ctx, e, available, True, False,
                     f"Context {n_ctx:,} tokens, {why}: needs about {e.describe()}; {free}.")


def available_vram() -> int | None:
    """Bytes free on the GPUs llama.cpp can use, or None when this build of llama.cpp has no GPU support.

    Asks llama.cpp's own device list (ggml's backend device API, through the library
    llama-cpp-python loaded) for the free memory of each GPU and adds them up, as llama.cpp
    splits layers over all of them. 0 when the build has GPU support but no GPU answers.
    Cheap: no model is loaded and nothing is allocated.
    """
    try:
        import llama_cpp

        if not llama_cpp.llama_supports_gpu_offload():
            return None
        devices = _ggml_devices()
    except (ImportError, AttributeError, OSError):  # bindings without the device API
        return 0
    return sum(free for kind, free in devices if kind in (_DEVICE_GPU, _DEVICE_IGPU))


#: ggml's ``enum ggml_backend_dev_type`` (ggml-backend.h): CPU, GPU, IGPU (integrated), ACCEL.
_DEVICE_GPU, _DEVICE_IGPU = 1, 2


def _ggml_devices() -> list[tuple[int, int]]:
    """(device type, free bytes) of each device llama.cpp knows."""
    import ctypes

    from llama_cpp import _ggml

    lib = _ggml.libggml
    # Indexing the library gives fresh function objects: the bindings' own stay untouched.
    count, get, kind, memory = (lib[name] for name in (
        "ggml_backend_dev_count", "ggml_backend_dev_get", "ggml_backend_dev_type", "ggml_backend_dev_memory"))
    count.restype, count.argtypes = ctypes.c_size_t, []
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    kind.restype, kind.argtypes = ctypes.c_int, [ctypes.c_void_p]
    memory.restype = None
    memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    found = []
    for i in range(count()):
        device = get(i)
        if not device:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        memory(device, ctypes.byref(free), ctypes.byref(total))
        found.append((int(kind(device)), int(free.value)))
    return found


def layer_bytes(header: GGUFHeader) -> tuple[list[int], int]:
    """The weights of each repeating layer (``blk.N.*``) and of the output, in bytes.

    llama.cpp offloads the last layers first and the output only with all of them; a model
    whose output shares the token embedding has that copied to the GPU with it.
    """
    n_layer = _key(header, "block_count")
    sizes = header.tensor_sizes
    if not sizes:  # a header without per-tensor sizes: spread the weights evenly
        share = header.tensor_bytes // max(1, n_layer + 1)
        return [share] * n_layer, share
    layers = [0] * n_layer
    for name, size in sizes.items():
        if name.startswith("blk."):
            index = name.split(".", 2)[1]
            if index.isdigit() and int(index) < n_layer:
                layers[int(index)] += size
    output = sizes.get("output.weight", sizes.get("token_embd.weight", 0)) + sizes.get("output_norm.weight", 0)
    return layers, output


@dataclass(frozen=True)
class GpuChoice:
    """The GPU layers to load a model with, and why."""

    #: What llama.cpp is given: 0 = CPU only, ``total_layers + 1`` = every layer and the output.
    layers: int
    total_layers: int
    #: Free VRAM, None when this build of llama.cpp has no GPU support.
    vram: int | None
    #: Bytes the offloaded part needs on the GPU (weights, KV cache, compute buffer).
    needed: int
    fits: bool
    user_set: bool
    explanation: str


def choose_gpu_layers(
    header: GGUFHeader,
    context_length: int,
    vram: int | None,
    *,
    user_layers: int | None = None,
    reserve: int = VRAM_RESERVE_BYTES,
    batch_size: int = 512,
    kv_type: str = "f16",
    flash_attention: bool = True,
    adapters: Iterable[GGUFHeader] = (),
) -> GpuChoice:
    """Pick how many of ``header``'s layers to offload at ``context_length`` into ``vram`` free bytes.

    ``vram`` None means the build cannot offload (:func:`available_vram`): 0 layers. With
    ``user_layers`` (the user's setting: a count, or :data:`ALL_GPU_LAYERS`) that is kept and
    the explanation says whether it fits. Otherwise the most layers whose weights, KV cache and
    the compute buffer, plus :data:`ESTIMATE_TOLERANCE`, fit in ``vram - reserve``.
    """
    adapters = tuple(adapters)
    estimate = estimate_memory(header, context_length, batch_size=batch_size, kv_type=kv_type,
                               flash_attention=flash_attention, adapters=adapters)
    layers, output = layer_bytes(header)
    n_layer = len(layers)
    kv_per_layer = estimate.kv_cache // max(1, n_layer)
    adapter_per_layer = estimate.adapters // max(1, n_layer)

    def need(k: int) -> int:
        """Bytes on the GPU with the last ``k`` layers there (``n_layer + 1``: the output too)."""
        if k <= 0:
            return 0
        on_gpu = min(k, n_layer)
        weights = sum(layers[n_layer - on_gpu:]) + (output if k > n_layer else 0)
        return estimate.compute + weights + on_gpu * (kv_per_layer + adapter_per_layer)

    def count(k: int) -> str:
        if k > n_layer:
            return f"all {n_layer} layers and the output"
        return f"{k} of {n_layer} layers"

    if vram is None:
        asked = "all" if user_layers is not None and user_layers < 0 else user_layers
        mine = f" (your setting, {asked} GPU layers, has no effect)" if user_layers not in (None, 0) else ""
        return GpuChoice(0, n_layer, None, 0, True, user_layers is not None,
                         f"CPU only: this build of llama.cpp has no GPU support{mine}.")
    budget = vram - reserve

    def fits(k: int) -> bool:
        return need(k) * (1 + ESTIMATE_TOLERANCE) <= budget

    free = f"{_mb(vram)} of VRAM free, {_mb(reserve)} kept free"
    if user_layers is not None:
        k = n_layer + 1 if user_layers < 0 or user_layers > n_layer else user_layers
        if k == 0:
            return GpuChoice(0, n_layer, vram, 0, True, True, "CPU only (your setting).")
        verdict = "fit" if fits(k) else "may not fit"
        return GpuChoice(k, n_layer, vram, need(k), fits(k), True,
                         f"GPU: {count(k)} (your setting) {verdict}: about {_mb(need(k))} on the GPU; {free}.")
    k = 0
    while k <= n_layer and fits(k + 1):  # each layer adds to the need, so the first miss ends it
        k += 1
    if k == 0:
        why = "no GPU answered" if vram == 0 else f"even one layer needs about {_mb(need(1))} there"
        return GpuChoice(0, n_layer, vram, 0, True, False, f"CPU only: {why} ({free}).")
    rest = "" if k > n_layer else "; the rest run on the CPU"
    why = "" if k > n_layer else ", the most that fit"
    return GpuChoice(k, n_layer, vram, need(k), True, False,
                     f"GPU: {count(k)}{why}, about {_mb(need(k))} ({free}){rest}.")


@dataclass(frozen=True)
class LoadPlan:
    """What a model is loaded with: its context and GPU layers, each chosen or kept, and why."""

    context: FitChoice
    gpu: GpuChoice

    @property
    def context_length(self) -> int:
        """The context length llama.cpp is given."""
        return self.context.context_length

    @property
    def gpu_layers(self) -> int:
        """The GPU layers llama.cpp is given."""
        return self.gpu.layers

    @property
    def fits(self) -> bool:
        """Whether the estimate fits the free memory (the model is loaded either way)."""
        return self.context.fits and self.gpu.fits

    @property
    def explanation(self) -> str:
        """Both choices, in two sentences, for the model's info."""
        return f"{self.context.explanation} {self.gpu.explanation}"

    def warning(self, model: str) -> str | None:
        """What to tell the user when the model may not fit (None when it does)."""
        if self.fits:
            return None
        return (f"{model} may not fit in this computer's free memory; it is loaded anyway, "
                f"but expect it to be slow or to fail. {self.explanation}")


def plan_load(
    header: GGUFHeader,
    *,
    context_length: int = AUTO_CONTEXT,
    gpu_layers: int = AUTO_GPU_LAYERS,
    available: int,
    vram: int | None,
    batch_size: int = 512,
    kv_type: str = "f16",
    flash_attention: bool = True,
    adapters: Iterable[GGUFHeader] = (),
    maximum: int = AUTO_CONTEXT_MAX,
) -> LoadPlan:
    """Turn the settings into what llama.cpp is given: ``context_length`` and ``gpu_layers``
    are the user's values or :data:`AUTO_CONTEXT` / :data:`AUTO_GPU_LAYERS` to choose them.

    ``available`` is free RAM (:func:`available_memory`), ``vram`` free GPU memory or None
    without GPU support (:func:`available_vram`); ``adapters`` the LoRA files to be applied.
    An automatic context is chosen against RAM and usable VRAM together (offloaded layers
    keep their KV cache on the GPU), the GPU layers then against VRAM at that context.
    """
    adapters = tuple(adapters)
    common = dict(batch_size=batch_size, kv_type=kv_type, flash_attention=flash_attention, adapters=adapters)
    usable_vram = 0 if gpu_layers == 0 else max(0, (vram or 0) - VRAM_RESERVE_BYTES)
    memory = "of RAM and VRAM" if usable_vram else ""
    user_context = None if context_length == AUTO_CONTEXT else context_length
    context = choose_context_length(header, available + usable_vram, user_context=user_context, maximum=maximum,
                                    memory=memory, **common)
    user_layers = None if gpu_layers == AUTO_GPU_LAYERS else gpu_layers
    gpu = choose_gpu_layers(header, context.context_length, vram, user_layers=user_layers, **common)
    return LoadPlan(context, gpu)


def adapter_headers(paths: Iterable[Path | str]) -> list[GGUFHeader]:
    """The headers of the LoRA files among ``paths`` that can be read (for ``adapters=``); a file
    that cannot is left out: it is refused, with its reason, when it is applied."""
    from desktop_app.core.errors import ModelFileError
    from desktop_app.core.models import check_lora_file

    headers = []
    for path in paths:
        try:
            headers.append(check_lora_file(path))
        except ModelFileError:
            pass
    return headers


def _key(header: GGUFHeader, name: str, default: int = 0) -> int:
    value = header.scalars.get(f"{header.architecture}.{name}")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


_BUFFER_LINE = re.compile(r"(?P<device>\S+)\s+(?P<kind>model|KV|compute|output) buffer size =\s*(?P<mib>[\d.]+) MiB")


def measure_llama_buffers(
    path: Path | str,
    context_length: int,
    *,
    batch_size: int = 512,
    flash_attention: bool = True,
    threads: int = 1,
) -> dict[str, int]:
    """Load ``path`` with llama.cpp and return the buffer sizes it reports, in bytes, by kind.

    The kinds are "model", "KV", "compute" and "output", each summed over devices. llama.cpp
    says them only through its log callback, which is process-wide: this replaces it while
    loading and puts llama-cpp-python's back, so do not call it while another thread loads.
    """
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=context_length, n_batch=batch_size,
                              n_ubatch=batch_size, flash_attn=flash_attention, n_threads=threads,
                              n_gpu_layers=0, verbose=False)
        llm.close()
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    sizes: dict[str, int] = {}
    for match in _BUFFER_LINE.finditer("".join(lines)):
        sizes[match["kind"]] = sizes.get(match["kind"], 0) + round(float(match["mib"]) * _MIB)
    return sizes


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"
