"""Where the benchmarks put the model's layers: all on the GPU when this build of llama.cpp
can offload (a CUDA, Metal or Vulkan build, e.g. the one ``make bench-gpu`` makes), else none.

Every side of a comparison gets the same placement, so the ratios mean the same on either.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from desktop_app.core.engine import Engine  # noqa: E402

__all__ = ["GPU", "describe", "engine_layers", "native_layers"]

#: Whether the installed llama-cpp-python was built with a GPU backend.
GPU: bool = Engine.gpu_offload_supported()


def engine_layers() -> int:
    """``LoadConfig.gpu_layers`` (and ``Llama(n_gpu_layers=)``): -1 offloads every layer."""
    return -1 if GPU else 0


def native_layers() -> str:
    """llama-bench's and llama-server's ``-ngl``: every layer, or none."""
    return "999" if GPU else "0"


def describe() -> str:
    """A few words for a benchmark's header line."""
    return "GPU build: all layers offloaded" if GPU else "CPU build: no layers offloaded"
