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

LoRA adapters add their own tensors. Not modelled (say so before trusting the estimate on
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
    "CONTEXT_STEP",
    "ESTIMATE_TOLERANCE",
    "RESERVE_BYTES",
    "FitChoice",
    "MemoryEstimate",
    "available_memory",
    "choose_context_length",
    "estimate_memory",
    "measure_llama_buffers",
]

#: llama.cpp pads the context to this many cells; contexts are chosen in the same steps.
CONTEXT_STEP = 256
#: How far the estimate may be from llama.cpp's real buffers (the test holds it to this).
ESTIMATE_TOLERANCE = 0.15
#: Left free for the window, the embedder and the rest of the system when choosing a context.
RESERVE_BYTES = 1024 * 1024 * 1024
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
) -> FitChoice:
    """Pick the context length to load ``header``'s model with in ``available`` bytes of RAM.

    With ``user_context`` (the user's own setting) that is kept, and the explanation says
    whether it fits. Otherwise: the largest multiple of 256 tokens, at most the model's trained
    context, whose estimate plus :data:`ESTIMATE_TOLERANCE` fits in ``available - reserve``;
    ``minimum`` when even that does not fit (``fits`` is then False).
    """
    adapters = tuple(adapters)

    def estimate(n_ctx: int) -> MemoryEstimate:
        return estimate_memory(header, n_ctx, batch_size=batch_size, kv_type=kv_type,
                               flash_attention=flash_attention, adapters=adapters)

    budget = available - reserve

    def fits(e: MemoryEstimate) -> bool:
        # The estimate may be that much low; the choice must hold even then.
        return e.total * (1 + ESTIMATE_TOLERANCE) <= budget

    free = f"{_mb(available)} available, {_mb(reserve)} kept free"
    if user_context is not None:
        e = estimate(user_context)
        verdict = "fits" if fits(e) else "may not fit"
        return FitChoice(user_context, e, available, fits(e), True,
                         f"Context {user_context:,} tokens (your setting) {verdict}: needs about {e.describe()}; {free}.")

    trained = int(header.scalars.get(f"{header.architecture}.context_length", 0) or 0)
    # A model that does not say is given the smallest context that serves a chat.
    top = max(minimum, trained // CONTEXT_STEP * CONTEXT_STEP if trained else 4096)
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
    why = "the model's trained context" if n_ctx == top else "the largest that fits"
    return FitChoice(n_ctx, e, available, True, False,
                     f"Context {n_ctx:,} tokens, {why}: needs about {e.describe()}; {free}.")


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
