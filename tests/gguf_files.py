"""Small GGUF files made on the fly for tests of the model checks."""

from __future__ import annotations

from pathlib import Path


def write_tiny_gguf(path: Path, architecture: str = "llama", elements: int = 4096) -> Path:
    """Write a structurally valid GGUF with one float32 tensor (not a runnable model)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny test model")
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", np.arange(elements, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
