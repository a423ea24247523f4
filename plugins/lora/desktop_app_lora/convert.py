"""Convert a PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``) to GGUF.

The base model the adapter will run on is given as its GGUF file: it says which architecture
the tensors belong to, how many attention heads q and k have, and what shape every weight is,
so a mismatch is caught here rather than when the adapter is applied.

What changes on the way:

- names: ``…layers.3.self_attn.q_proj.lora_A.weight`` becomes ``blk.3.attn_q.weight.lora_a``;
- q and k of llama-family models: Hugging Face orders each head's rows as "first halves of
  the rotary pairs, then second halves", llama.cpp interleaves the pairs, and its converter
  reorders the rows of the full q/k weights accordingly. A LoRA's change to a weight is
  ``B @ A``; reordering the rows of that product is reordering the rows of ``B``, so only
  lora_b is permuted, and lora_a (whose rows are the rank) stays as it is;
- scaling: llama.cpp scales every pair by ``alpha / rank`` with one alpha per file. PEFT can
  scale differently (rsLoRA: ``alpha / sqrt(rank)``; per-module ranks and alphas), so any
  pair whose PEFT scaling differs has the difference multiplied into its lora_b.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from desktop_app.api import GGUFHeader, ModelFileError, check_gguf_file
from desktop_app_lora.adapters import AdapterError, AdapterInfo, check_compatible, read_adapter_info

__all__ = [
    "MODULES",
    "PERMUTED_ARCHITECTURES",
    "SUPPORTED_ARCHITECTURES",
    "ConversionError",
    "PeftConfig",
    "check_architecture",
    "check_pair_shapes",
    "convert_peft_adapter",
    "gguf_tensor_name",
    "group_pairs",
    "parse_peft_config",
    "permute_rotary_rows",
]

#: PEFT target modules and the llama.cpp tensors they become.
MODULES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
#: Architectures whose llama.cpp tensors have llama-family names; the first set also
#: reorders q/k rows for rotary embeddings (see the module docstring).
PERMUTED_ARCHITECTURES = frozenset({"llama"})
SUPPORTED_ARCHITECTURES = PERMUTED_ARCHITECTURES | {"qwen2", "qwen3"}

# e.g. base_model.model.model.layers.12.self_attn.q_proj.lora_A.weight
_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?:model\.)?layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\."
    r"(?P<module>\w+)\.lora_(?P<half>[AB])(?:\.[\w-]+)?\.weight$"
)


class ConversionError(AdapterError):
    """The PEFT adapter cannot be converted (the message says why)."""


@dataclass
class PeftConfig:
    """What the converter uses of a PEFT ``adapter_config.json``."""

    rank: int
    alpha: float
    rslora: bool
    alpha_pattern: dict[str, float]
    base_model: str | None
    #: The target modules when the config lists them by name, else None.
    target_modules: tuple[str, ...] | None = None


def gguf_tensor_name(key: str) -> tuple[str, str]:
    """Map a PEFT tensor name to (llama.cpp base tensor, "a" or "b"); ConversionError if unsupported."""
    match = _KEY.match(key)
    if match is None:
        if "lora_embedding" in key or "embed_tokens" in key or "lm_head" in key:
            raise ConversionError("The adapter changes the token embeddings or the output layer; "
                                  "only attention and MLP layers can be converted.")
        if "lora_magnitude_vector" in key:
            raise ConversionError("The adapter is a DoRA adapter; llama.cpp runs plain LoRA only.")
        raise ConversionError(f"The adapter tensor {key!r} is not a LoRA weight of a llama-family "
                              "attention or MLP layer; it cannot be converted.")
    module = match["module"]
    if module not in MODULES:
        supported = ", ".join(MODULES)
        raise ConversionError(f"The adapter targets the module {module!r}, which has no llama.cpp "
                              f"counterpart here. Supported target modules: {supported}.")
    return f"blk.{int(match['layer'])}.{MODULES[module]}.weight", match["half"].lower()


def check_architecture(model: GGUFHeader, model_name: str) -> None:
    """Raise ConversionError unless PEFT adapters can be converted for ``model``'s architecture."""
    if model.architecture not in SUPPORTED_ARCHITECTURES:
        raise ConversionError(f"{model_name} is a {model.architecture} model; converting LoRA adapters is "
                              f"supported for {', '.join(sorted(SUPPORTED_ARCHITECTURES))} models.")


def group_pairs(keys: Any) -> dict[str, dict[str, str]]:
    """PEFT tensor names grouped by the llama.cpp tensor they change: ``{base: {"a": key, "b": key}}``.

    Raises ConversionError for a name the converter cannot map, a LoRA bias, or a half pair.
    """
    grouped: dict[str, dict[str, str]] = {}
    for key in keys:
        if key.endswith(".bias"):
            raise ConversionError("The adapter has LoRA biases (lora_bias=True); llama.cpp cannot apply them.")
        base, half = gguf_tensor_name(key)
        grouped.setdefault(base, {})[half] = key
    for base, parts in grouped.items():
        if set(parts) != {"a", "b"}:
            raise ConversionError(f"The adapter is incomplete: {base} has only lora_{''.join(parts).upper()}.")
    return grouped


def check_pair_shapes(base: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...], model: GGUFHeader,
                      model_name: str) -> None:
    """Raise ConversionError unless PEFT's lora_A (rank × inputs) and lora_B (outputs × rank)
    for the llama.cpp tensor ``base`` fit that tensor in ``model``."""
    if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
        raise ConversionError(f"The LoRA weights for {base} have shapes {tuple(a_shape)} and {tuple(b_shape)}, "
                              "which do not make a rank-r pair.")
    weight = (model.tensor_shapes or {}).get(base)
    if weight is None:
        raise ConversionError(f"The adapter changes {base}, which {model_name} does not have: "
                              "it was made for another model.")
    if (a_shape[1], b_shape[0]) != tuple(weight):
        raise ConversionError(f"The adapter does not fit {model_name}: {base} is "
                              f"{' × '.join(map(str, weight))} in the model, but "
                              f"{a_shape[1]} × {b_shape[0]} in the adapter. It was made for another model.")


def permute_rotary_rows(matrix: np.ndarray, heads: int) -> np.ndarray:
    """Reorder rows from Hugging Face's rotary layout to llama.cpp's, head by head.

    Within a head HF keeps the first element of every rotary pair in the first half of the
    rows and the second elements in the second half; llama.cpp wants the pairs side by side.
    """
    rows = matrix.shape[0]
    if heads <= 0 or rows % (2 * heads):
        raise ConversionError(f"Cannot split {rows} rows into {heads} rotary heads: the adapter "
                              "does not fit this model.")
    half = rows // heads // 2
    return matrix.reshape(heads, 2, half, *matrix.shape[1:]).swapaxes(1, 2).reshape(matrix.shape)


def convert_peft_adapter(
    peft_dir: Path | str,
    output: Path | str,
    base_model: Path | str,
    *,
    name: str | None = None,
    outtype: str = "f16",
    extra_metadata: dict[str, Any] | None = None,
) -> AdapterInfo:
    """Convert the PEFT adapter in ``peft_dir`` to a GGUF LoRA adapter at ``output`` for ``base_model``.

    ``outtype`` is "f16" (half the size) or "f32". ``extra_metadata`` adds string, int or float
    keys (e.g. how the adapter was trained). The file is written atomically; on any error
    nothing is left at ``output``. Returns the new file's metadata, already checked against
    the base model. Raises :class:`ConversionError` with a reason a person can act on.
    """
    import gguf

    from desktop_app_lora.safetensors_file import SafetensorsError, read_safetensors

    peft_dir, output, base_model = Path(peft_dir), Path(output), Path(base_model)
    if outtype not in ("f16", "f32"):
        raise ConversionError(f"Unknown output type {outtype!r}; use f16 or f32.")
    config = _read_config(peft_dir)
    weights = peft_dir / "adapter_model.safetensors"
    if not weights.exists():
        if (peft_dir / "adapter_model.bin").exists():
            raise ConversionError(f"{peft_dir.name} holds adapter_model.bin (pickled PyTorch). Save the adapter "
                                  "with safe_serialization=True to get adapter_model.safetensors.")
        raise ConversionError(f"{peft_dir.name} has no adapter_model.safetensors.")
    header = _base_header(base_model)
    arch = header.architecture
    check_architecture(header, base_model.name)
    try:
        tensors, _ = read_safetensors(weights)
    except (SafetensorsError, OSError) as exc:
        raise ConversionError(f"Cannot read the adapter weights: {exc}") from None
    if not tensors:
        raise ConversionError(f"{weights.name} holds no tensors.")

    grouped = group_pairs(tensors)
    halves = {base: {half: tensors[key] for half, key in parts.items()} for base, parts in grouped.items()}
    modules = {base: parts["a"].split(".lora_")[0] for base, parts in grouped.items()}
    heads = int(header.scalars.get(f"{arch}.attention.head_count", 0) or 0)
    heads_kv = int(header.scalars.get(f"{arch}.attention.head_count_kv", 0) or heads)
    dtype = np.float16 if outtype == "f16" else np.float32
    pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
    for base in sorted(halves, key=_tensor_order):
        a, b = halves[base]["a"], halves[base]["b"]
        check_pair_shapes(base, a.shape, b.shape, header, base_model.name)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            # Left in, they would turn every answer into noise.
            raise ConversionError(f"The LoRA weights for {base} hold NaN or infinite values: the training "
                                  "that made them went wrong (often a learning rate too high).")
        rank = a.shape[0]
        b = b * _scale_correction(config, modules[base], rank)
        if arch in PERMUTED_ARCHITECTURES and (".attn_q." in base or ".attn_k." in base):
            b = permute_rotary_rows(b, heads if ".attn_q." in base else heads_kv)
        with np.errstate(over="ignore"):  # an overflow is refused just below, with a reason
            a, b = a.astype(dtype), b.astype(dtype)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            hint = "; convert with the output type f32" if outtype == "f16" else ""
            raise ConversionError(f"The LoRA weights for {base} are too large for {outtype}{hint}.")
        pairs.append((base, a, b))

    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config.alpha))
        writer.add_name(name or peft_dir.name)
        base_name = config.base_model or header.scalars.get("general.name")
        if base_name:
            writer.add_base_model_count(1)
            writer.add_base_model_name(0, str(base_name))
        writer.add_uint32("parley.lora.rank", int(config.rank))
        for key, value in (extra_metadata or {}).items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                continue
            if isinstance(value, str):
                writer.add_string(f"parley.{key}", value)
            elif isinstance(value, int):
                writer.add_uint64(f"parley.{key}", value)
            else:
                writer.add_float32(f"parley.{key}", value)
        for base, a, b in pairs:
            writer.add_tensor(f"{base}.lora_a", np.ascontiguousarray(a))
            writer.add_tensor(f"{base}.lora_b", np.ascontiguousarray(b))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        info = read_adapter_info(tmp)
        check_compatible(info, base_model)
        os.replace(tmp, output)
    except AdapterError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConversionError(f"The converted adapter does not fit {base_model.name}: {exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    info.path = str(output)
    return info


def _read_config(peft_dir: Path) -> PeftConfig:
    if not peft_dir.is_dir():
        raise ConversionError(f"{peft_dir} is not a folder. Pick the folder that holds adapter_config.json "
                              "and adapter_model.safetensors.")
    path = peft_dir / "adapter_config.json"
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConversionError(f"{peft_dir.name} has no adapter_config.json; is it a PEFT adapter folder?") from None
    except OSError as exc:
        raise ConversionError(f"{peft_dir.name}/adapter_config.json cannot be read: {exc}") from None
    return parse_peft_config(text, peft_dir.name)


def parse_peft_config(text: bytes | str, folder: str) -> PeftConfig:
    """Check an ``adapter_config.json``'s text (of the adapter called ``folder``) as the converter reads it.

    Raises :class:`ConversionError` saying why the adapter cannot be converted: not LoRA,
    DoRA, fully trained modules, biases, Conv1D layers, or values out of range.
    """
    try:
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{folder}/adapter_config.json cannot be read: {exc}") from None
    if not isinstance(raw, dict):
        raise ConversionError(f"{folder}/adapter_config.json is not a PEFT configuration.")
    kind = str(raw.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise ConversionError(f"The adapter is a {kind} adapter; only LoRA adapters can be converted.")
    if raw.get("use_dora"):
        raise ConversionError("The adapter is a DoRA adapter; llama.cpp runs plain LoRA only.")
    if raw.get("modules_to_save"):
        saved = raw["modules_to_save"]
        names = ", ".join(map(str, saved)) if isinstance(saved, list) else str(saved)
        raise ConversionError("The adapter also carries fully trained modules (modules_to_save: "
                              f"{names}), which a LoRA file cannot hold.")
    if raw.get("fan_in_fan_out"):
        raise ConversionError("The adapter was made for Conv1D layers (fan_in_fan_out); "
                              "llama-family models use linear layers.")
    if raw.get("bias", "none") not in ("none", None):
        raise ConversionError("The adapter trains biases; llama.cpp LoRA adapters cannot hold them.")
    rank = _positive(raw.get("r", 8), "r (the rank)", whole=True)
    alpha = _positive(raw.get("lora_alpha", 8), "lora_alpha")
    patterns = raw.get("alpha_pattern") or {}
    if not isinstance(patterns, dict):
        raise ConversionError("adapter_config.json: alpha_pattern must map module names to numbers.")
    alpha_pattern = {}
    for key, value in patterns.items():
        try:
            re.compile(_pattern_regex(key))  # as _pattern_value uses it
        except (re.error, TypeError):
            raise ConversionError(f"adapter_config.json: alpha_pattern has an invalid module pattern {key!r}.") from None
        alpha_pattern[key] = _positive(value, f"alpha_pattern[{key!r}]")
    use_rslora = raw.get("use_rslora") or False  # absent or null in older PEFT files
    if not isinstance(use_rslora, bool):
        raise ConversionError(f"adapter_config.json: use_rslora must be true or false, not {use_rslora!r}.")
    # Per-module ranks (rank_pattern) need nothing: llama.cpp reads each pair's rank from its shape.
    base = raw.get("base_model_name_or_path") or None
    return PeftConfig(rank, alpha, use_rslora, alpha_pattern, str(base) if base else None,
                      _target_modules(raw.get("target_modules")))


def _target_modules(value: Any) -> tuple[str, ...] | None:
    """The config's target modules when it lists names (PEFT also allows a regex or "all-linear")."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


#: Far above any LoRA rank in use (they run to a few hundred); the file format stops at 2**32.
MAX_RANK = 65536
#: The largest alpha the adapter file can hold (a 32-bit float).
MAX_ALPHA = float(np.finfo(np.float32).max)


def _positive(value: Any, what: str, whole: bool = False) -> Any:
    """``value`` as a finite number above 0: a whole one up to MAX_RANK with ``whole``
    (8.0 counts), else one a 32-bit float can hold."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and whole:
        ok = float(value).is_integer() and value <= MAX_RANK
    elif ok:
        ok = value <= MAX_ALPHA
    if not ok:
        kind = f"a whole number from 1 to {MAX_RANK}" if whole else "a number above 0 (and below 3.4e38)"
        raise ConversionError(f"adapter_config.json: {what} must be {kind}, not {value!r}.")
    return int(value) if whole else float(value)


def _base_header(base_model: Path) -> GGUFHeader:
    try:
        return check_gguf_file(base_model)
    except ModelFileError as exc:
        raise ConversionError(f"The base model cannot be read: {exc}") from None


def _pattern_regex(key: str) -> str:
    """The regular expression PEFT builds from a per-module key (peft.utils.other.get_pattern_key).

    The key is grouped, so an alternation (``q_proj|k_proj``) stays inside the suffix, and it is
    used with ``re.match`` and ``$``, so an anchor (``^model.layers.3…``) means what it does in PEFT.
    """
    return rf"(.*\.)?({key})$"


#: What PEFT's saved tensor names add in front of the base model's own module names.
_SAVED_PREFIX = "base_model.model."


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's per-module override for ``module`` (a saved name, with or without the PEFT prefix).

    PEFT matches the keys, first match wins in the file's order, against the module's name in
    the base model, which has no ``base_model.model.`` in front: an anchored key would never
    match the prefixed name.
    """
    name = module.removeprefix(_SAVED_PREFIX)
    for key, value in patterns.items():
        if re.match(_pattern_regex(key), name):
            return value
    return default


def _scale_correction(config: PeftConfig, module: str, rank: int) -> float:
    """Factor that turns llama.cpp's ``alpha / rank`` into the scaling PEFT used for this module."""
    alpha = _pattern_value(config.alpha_pattern, module, config.alpha)
    peft_scaling = alpha / math.sqrt(rank) if config.rslora else alpha / rank
    return peft_scaling / (config.alpha / rank)


def _tensor_order(base: str) -> tuple[int, int]:
    layer = int(base.split(".")[1])
    kind = base.split(".")[2]
    order = list(MODULES.values())
    return layer, order.index(kind) if kind in order else len(order)
