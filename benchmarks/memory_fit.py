"""The memory-fit estimate against what llama.cpp really allocates, for the built-in model.

For each context length, estimates the memory from the GGUF header alone
(desktop_app.core.memory_fit.estimate_memory), then loads the model and reads the buffer
sizes llama.cpp logs (model, KV cache, compute, output), and prints both with the error.
Then shows the context Parley would choose on this machine.

Run: ``.venv/bin/python benchmarks/memory_fit.py [CONTEXT ...]``
"""

from __future__ import annotations

import sys

from desktop_app.core.memory_fit import (available_memory, choose_context_length, estimate_memory,
                                         measure_llama_buffers)
from desktop_app.core.models import check_gguf_file, default_model_path


def main(contexts: list[int]) -> None:
    path = default_model_path()
    header = check_gguf_file(path)
    print(f"{path.name}, flash attention on, batch 512, KV f16 (MB = 10^6 bytes)")
    print(f"{'context':>8} {'estimated MB':>13} {'measured MB':>12} {'error %':>8}   "
          f"{'KV est/meas':>13} {'compute est/meas':>17}")
    for n_ctx in contexts:
        e = estimate_memory(header, n_ctx)
        m = measure_llama_buffers(path, n_ctx)
        measured = sum(m.values())
        error = (e.total - measured) / measured * 100
        print(f"{n_ctx:>8} {e.total / 1e6:>13.1f} {measured / 1e6:>12.1f} {error:>+8.1f}   "
              f"{e.kv_cache / 1e6:>6.1f}/{m.get('KV', 0) / 1e6:<6.1f} "
              f"{e.compute / 1e6:>8.1f}/{m.get('compute', 0) / 1e6:<8.1f}")
    choice = choose_context_length(header, available_memory())
    print(choice.explanation)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [512, 2048, 8192])
