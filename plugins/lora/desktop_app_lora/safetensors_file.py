"""Read a ``.safetensors`` file into numpy arrays, bfloat16 included.

The format is an 8-byte little-endian header length, a JSON header (dtype, shape, byte range
of each tensor), then the raw data. Reading it directly keeps conversion free of torch (which
numpy-only readers need for bfloat16, the usual dtype of PEFT adapters) and lets every damage
be reported with the file's name.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

__all__ = ["SafetensorsError", "read_safetensors"]

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}
#: Sanity limit on the JSON header; real ones are a few hundred kB at most.
_MAX_HEADER = 100_000_000


class SafetensorsError(ValueError):
    """The file is not a readable safetensors file."""


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Return (tensors as float32 arrays, the file's ``__metadata__``)."""
    name = path.name
    data = path.read_bytes()
    if len(data) < 8:
        raise SafetensorsError(f"{name} is empty or cut short.")
    (length,) = struct.unpack_from("<Q", data, 0)
    if length > min(_MAX_HEADER, len(data) - 8):
        raise SafetensorsError(f"{name} is not a safetensors file, or it is cut short.")
    try:
        header = json.loads(data[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SafetensorsError(f"{name} has a damaged header.") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{name} has a damaged header.")
    metadata = header.pop("__metadata__", None) or {}
    body = memoryview(data)[8 + length:]
    tensors: dict[str, np.ndarray] = {}
    for key, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{name}: the entry for {key} is damaged.") from None
        if dtype not in _DTYPES:
            raise SafetensorsError(f"{name}: {key} has the data type {dtype}; LoRA weights must be "
                                   "float32, float16 or bfloat16.")
        if not 0 <= start <= end <= len(body):
            raise SafetensorsError(f"{name} is cut short: {key} lies past the end of the file.")
        raw = np.frombuffer(body[start:end], dtype=_DTYPES[dtype])
        count = int(np.prod(shape)) if shape else 1
        if raw.size != count:
            raise SafetensorsError(f"{name}: {key} has {raw.size} values, but its shape {shape} needs {count}.")
        if dtype == "BF16":
            # bfloat16 is the top half of a float32.
            array = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            array = raw.astype(np.float32)
        tensors[key] = array.reshape(shape)
    return tensors, {str(k): str(v) for k, v in metadata.items()}
