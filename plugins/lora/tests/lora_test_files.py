"""Adapter files made on the fly for the LoRA tests: PEFT folders and GGUF adapters of any shape."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

#: SmolLM2-135M's shapes (embedding, k/v width, MLP width, layers, heads, kv heads).
SMOLLM = {"n_embd": 576, "n_kv": 192, "n_ff": 1536, "layers": 30, "heads": 9, "heads_kv": 3}
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_MODULES = (*ATTENTION, "gate_proj", "up_proj", "down_proj")


def module_dims(module: str, n_embd: int, n_kv: int, n_ff: int) -> tuple[int, int]:
    """(inputs, outputs) of a llama-family linear layer."""
    return {"q_proj": (n_embd, n_embd), "k_proj": (n_embd, n_kv), "v_proj": (n_embd, n_kv),
            "o_proj": (n_embd, n_embd), "gate_proj": (n_embd, n_ff), "up_proj": (n_embd, n_ff),
            "down_proj": (n_ff, n_embd)}[module]


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> Path:
    """Write tensors in the safetensors format (F32, F16 or BF16)."""
    header, blobs, offset = {}, [], 0
    for key, value in tensors.items():
        value = np.asarray(value, dtype=np.float32)
        if dtype == "BF16":
            raw = (value.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        elif dtype == "F16":
            raw = value.astype(np.float16).tobytes()
        else:
            raw = value.tobytes()
        header[key] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    return path


def peft_key(layer: int, module: str, half: str) -> str:
    """The name peft's save_pretrained gives a LoRA weight."""
    part = "self_attn" if module in ATTENTION else "mlp"
    return f"base_model.model.model.layers.{layer}.{part}.{module}.lora_{half}.weight"


def make_peft(folder: Path, *, rank: int = 8, alpha: float = 16, modules=ATTENTION, layers: int = 30,
              seed: int = 0, std: float = 0.02, config: dict | None = None, dtype: str = "F32",
              shapes: dict | None = None) -> Path:
    """A PEFT adapter folder with random weights shaped for SmolLM2 (or ``shapes``)."""
    shapes = {**SMOLLM, **(shapes or {})}
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for layer in range(layers):
        for module in modules:
            n_in, n_out = module_dims(module, shapes["n_embd"], shapes["n_kv"], shapes["n_ff"])
            tensors[peft_key(layer, module, "A")] = rng.normal(0, std, (rank, n_in))
            tensors[peft_key(layer, module, "B")] = rng.normal(0, std, (n_out, rank))
    write_safetensors(folder / "adapter_model.safetensors", tensors, dtype)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": list(modules),
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "bias": "none", **(config or {}),
    }))
    return folder


def make_adapter_gguf(path: Path, *, architecture: str = "llama", n_embd: int = 576, n_out: int | None = None,
                      layers: int = 2, rank: int = 4, alpha: float = 8.0, kinds=("attn_q", "attn_v"),
                      general_type: str = "adapter", adapter_type: str = "lora", drop: str | None = None,
                      extra_tensors: dict | None = None) -> Path:
    """A GGUF LoRA adapter written directly, for any shape; ``drop`` leaves one tensor out."""
    import gguf

    rng = np.random.default_rng(1)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_type(general_type)
    writer.add_string("adapter.type", adapter_type)
    writer.add_float32("adapter.lora.alpha", alpha)
    writer.add_name(path.stem)
    for layer in range(layers):
        for kind in kinds:
            base = f"blk.{layer}.{kind}.weight"
            outputs = n_out or n_embd
            for name, shape in ((f"{base}.lora_a", (rank, n_embd)), (f"{base}.lora_b", (outputs, rank))):
                if name != drop:
                    writer.add_tensor(name, rng.normal(0, 0.01, shape).astype(np.float32))
    for name, value in (extra_tensors or {}).items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
