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

__all__ = ["SafetensorsError", "header_length", "parse_header", "read_safetensors"]

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}
#: Sanity limit on the JSON header; real ones are a few hundred kB at most.
_MAX_HEADER = 100_000_000


class SafetensorsError(ValueError):
    """The file is not a readable safetensors file."""


def header_length(head: bytes, name: str) -> int:
    """Bytes of the JSON header, from a file's first 8 bytes (the whole header is ``8 + length``)."""
    if len(head) < 8:
        raise SafetensorsError(f"{name} is empty or cut short.")
    (length,) = struct.unpack_from("<Q", head, 0)
    if length > _MAX_HEADER:
        raise SafetensorsError(f"{name} is not a safetensors file, or it is cut short.")
    return length


def parse_header(head: bytes, name: str, file_size: int) -> tuple[dict[str, dict], dict[str, str]] | None:
    """(each tensor's header entry, the file's ``__metadata__``) from the file's first bytes.

    ``file_size`` is the whole file's. Enough for a compatibility check without the weights:
    a Range request for the head gives every tensor's dtype and shape. Returns None when
    ``head`` ends before the header does; raises SafetensorsError for a damaged header.
    """
    length = header_length(head, name)
    if length > file_size - 8:
        raise SafetensorsError(f"{name} is not a safetensors file, or it is cut short.")
    if len(head) < 8 + length:
        return None
    try:
        header = json.loads(head[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SafetensorsError(f"{name} has a damaged header.") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{name} has a damaged header.")
    metadata = header.pop("__metadata__", None) or {}
    body_size = file_size - 8 - length
    for key, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            count = int(np.prod(shape)) if shape else 1
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{name}: the entry for {key} is damaged.") from None
        if dtype not in _DTYPES:
            raise SafetensorsError(f"{name}: {key} has the data type {dtype}; LoRA weights must be "
                                   "float32, float16 or bfloat16.")
        if not 0 <= start <= end <= body_size:
            raise SafetensorsError(f"{name} is cut short: {key} lies past the end of the file.")
        if end - start != count * np.dtype(_DTYPES[dtype]).itemsize:
            raise SafetensorsError(f"{name}: {key} has {(end - start) // np.dtype(_DTYPES[dtype]).itemsize} "
                                   f"values, but its shape {shape} needs {count}.")
    return header, {str(k): str(v) for k, v in (metadata if isinstance(metadata, dict) else {}).items()}


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Return (tensors as float32 arrays, the file's ``__metadata__``)."""
    name = path.name
    data = path.read_bytes()
    parsed = parse_header(data, name, len(data))
    if parsed is None:
        raise SafetensorsError(f"{name} is not a safetensors file, or it is cut short.")
    header, metadata = parsed
    body = memoryview(data)[8 + header_length(data, name):]
    tensors: dict[str, np.ndarray] = {}
    for key, entry in header.items():
        (start, end), shape, dtype = entry["data_offsets"], entry["shape"], entry["dtype"]
        raw = np.frombuffer(body[start:end], dtype=_DTYPES[dtype])
        if dtype == "BF16":
            # bfloat16 is the top half of a float32.
            array = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            array = raw.astype(np.float32)
        tensors[key] = array.reshape(shape)
    return tensors, metadata
