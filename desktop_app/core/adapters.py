"""LoRA adapters on the loaded model: read into llama.cpp once per file, put on the context by set.

A set of adapters is a tuple of ``(resolved file, scale, AdapterHandle)``; scale 0 never appears
in one. The engine keeps the set answers should use, and the batch scheduler puts a request's
set on the context between answers (one set applies to the whole context at a time).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop_app.core.errors import EngineError, ModelFileError

__all__ = ["AdapterHandle", "AdapterSet", "apply_adapters", "free_adapters", "read_adapter", "same_adapters"]


@dataclass
class AdapterHandle:
    """A LoRA adapter read into llama.cpp, and the (size, mtime) of the file it came from."""

    pointer: Any
    version: tuple[int, int]

    def free(self) -> None:
        """Let llama.cpp free the adapter (it must not be applied any more)."""
        import llama_cpp

        if self.pointer:
            llama_cpp.llama_adapter_lora_free(self.pointer)
            self.pointer = None


#: Adapters with their scales, as the context gets them.
AdapterSet = tuple[tuple[Path, float, AdapterHandle], ...]


def same_adapters(a: AdapterSet, b: AdapterSet) -> bool:
    """Whether two sets put the same adapters, read from the same files, at the same scales."""
    return len(a) == len(b) and all(x[:2] == y[:2] and x[2] is y[2] for x, y in zip(a, b))


def read_adapter(loaded: Any, path: Path) -> AdapterHandle:
    """The handle of the adapter at ``path`` (resolved) for the loaded model, read when new or changed.

    Raises EngineError with a message for the user when llama.cpp cannot use the file.
    """
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
    if handle is not None:
        # The file changed. Answers that asked for the old one may still be waiting: its handle
        # is freed with the model.
        loaded.retired_adapters.append(handle)
    handle = loaded.adapter_handles[path] = AdapterHandle(pointer, version)
    return handle


def apply_adapters(ctx: Any, target: AdapterSet) -> None:
    """Put exactly ``target`` on the context (an empty set: none)."""
    import llama_cpp

    n = len(target)  # ctypes arrays get at least one slot, even for "no adapters"
    handles = (llama_cpp.llama_adapter_lora_p_ctypes * max(n, 1))(*[h.pointer for _, _, h in target])
    scales = (ctypes.c_float * max(n, 1))(*[scale for _, scale, _ in target])
    if llama_cpp.llama_set_adapters_lora(ctx, handles, n, scales) != 0:
        raise EngineError("llama.cpp could not apply the LoRA adapters.")


def free_adapters(loaded: Any) -> None:
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
