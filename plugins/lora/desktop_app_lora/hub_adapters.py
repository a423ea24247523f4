"""Whether a LoRA adapter found on the hub fits the loaded model, decided from its metadata alone.

Nothing here downloads weights. A few small reads are enough, and the caller makes them (a Range
request for a file's first bytes, or a local file for the tests):

- a GGUF adapter: its header (``general.type``/``adapter.type``, the architecture, every
  lora_a/lora_b shape, the ``general.base_model.*`` keys);
- a PEFT adapter: its ``adapter_config.json`` and the header of ``adapter_model.safetensors``
  (8 bytes of length, then JSON with each tensor's dtype and shape).

The checks are the ones the adapter will meet later, reused rather than repeated: the
converter's config rules and tensor names (:mod:`desktop_app_lora.convert`), the library's
shape checks against the model (:func:`desktop_app_lora.adapters.compatibility_problem`), and
llama.cpp's own refusals (:func:`desktop_app.api.lora_header_problem`). Which model the adapter
was trained on is a soft check: matching shapes on another base model are "probably compatible".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from desktop_app.api import GGUFHeader, lora_header_problem
from desktop_app_lora.adapters import (
    AdapterError,
    AdapterInfo,
    adapter_info_from_header,
    adapter_info_from_pairs,
    compatibility_problem,
)

__all__ = [
    "COMPATIBLE",
    "INCOMPATIBLE",
    "PROBABLY",
    "UNKNOWN",
    "Compatibility",
    "base_model_matches",
    "gguf_compatibility",
    "model_label",
    "peft_compatibility",
    "read_safetensors_head",
]

COMPATIBLE = "compatible"
PROBABLY = "probably"
INCOMPATIBLE = "incompatible"
UNKNOWN = "unknown"

_LABELS = {COMPATIBLE: "Compatible", PROBABLY: "Probably compatible", INCOMPATIBLE: "Not compatible",
           UNKNOWN: "Unknown"}

#: The first read of a safetensors file's head: a LoRA adapter's whole header fits in it many times over.
FIRST_READ = 256 * 1024

#: ``read(start, end)``: the file's bytes from ``start`` up to, not including, ``end``.
Reader = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Compatibility:
    """A verdict on one adapter for one model, with the reason in words a person understands.

    ``verdict`` is one of COMPATIBLE (fits, and made for this model or its family and size),
    PROBABLY (fits, but trained on another model or not saying which), INCOMPATIBLE (cannot
    be applied or converted) and UNKNOWN (its metadata could not be read). ``info`` describes
    the adapter (rank, targets, size) when its tensors were read.
    """

    verdict: str
    reason: str
    base_model: str | None = None
    info: AdapterInfo | None = field(default=None, compare=False)

    @property
    def usable(self) -> bool:
        """Whether the adapter may be downloaded for this model."""
        return self.verdict in (COMPATIBLE, PROBABLY)

    @property
    def label(self) -> str:
        """The verdict in two words, for a list."""
        return _LABELS.get(self.verdict, self.verdict)


def model_label(model: GGUFHeader, fallback: str) -> str:
    """A short name for a model in messages: its family and size (``smollm2 135M``), else its name."""
    scalars = model.scalars
    basename, size = scalars.get("general.basename"), scalars.get("general.size_label")
    if basename and size:
        return f"{basename} {size}"
    return str(scalars.get("general.name") or fallback)


# -- the adapter's claimed base model --------------------------------------------------------
def _tokens(text: str) -> str:
    """``SmolLM2-135M-Instruct`` -> ``-smollm2-135m-instruct-``: words, so "1b" never matches "11b"."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return f"-{'-'.join(words)}-" if words else ""


def _repo_id(text: str) -> str:
    """A repository id from a name or address (``https://huggingface.co/org/name`` -> ``org/name``)."""
    text = text.strip().rstrip("/")
    text = re.sub(r"^https?://[^/]+/", "", text)
    return text.removeprefix("models/")


def _model_names(model: GGUFHeader) -> set[str]:
    """Repository ids the model says it is or comes from (its own and its base models')."""
    scalars = model.scalars
    names = set()
    for prefix in ("general", *(f"general.base_model.{i}" for i in range(int(scalars.get("general.base_model.count", 0) or 0)))):
        url = scalars.get(f"{prefix}.repo_url") or scalars.get(f"{prefix}.source.repo_url")
        if url:
            names.add(_repo_id(str(url)).lower())
        org, name = scalars.get(f"{prefix}.organization"), scalars.get(f"{prefix}.name")
        if org and name:
            names.add(f"{org}/{name}".lower())
    return names


def base_model_matches(claimed: str, model: GGUFHeader) -> bool | None:
    """Whether ``claimed`` (a repository id or model name) names ``model``: its own repository or a
    base model of it, or its family and size (``general.basename`` and ``general.size_label``).

    None when the model's header has nothing to compare with.
    """
    repo = _repo_id(claimed)
    if repo.lower() in _model_names(model):
        return True
    scalars = model.scalars
    family, size = scalars.get("general.basename"), scalars.get("general.size_label")
    if not family:
        return None if not _model_names(model) else False
    words = _tokens(repo.rsplit("/", 1)[-1])
    if _tokens(str(family)) not in words:
        return False
    return size is None or _tokens(str(size)) in words


def _fitting(info: AdapterInfo, claimed: str | None, model: GGUFHeader, model_name: str) -> Compatibility:
    """The verdict for an adapter whose shapes fit: how sure depends on the model it was made for."""
    arch = model.architecture
    shape = (f"{int(model.scalars.get(f'{arch}.block_count', 0) or 0)} layers, embedding size "
             f"{int(model.scalars.get(f'{arch}.embedding_length', 0) or 0)}")
    if claimed is None:
        return Compatibility(PROBABLY, f"Its shapes fit {model_name} ({shape}); it does not say which model "
                             "it was trained on.", None, info)
    matches = base_model_matches(claimed, model)
    if matches:
        return Compatibility(COMPATIBLE, f"Made for {claimed}; its shapes fit {model_name} ({shape}).",
                             claimed, info)
    if matches is None:
        return Compatibility(PROBABLY, f"Made for {claimed}; {model_name} does not say which model it is, "
                             f"but the shapes fit ({shape}).", claimed, info)
    return Compatibility(PROBABLY, f"Trained on {claimed}, not on {model_name}. Its shapes fit ({shape}), "
                         "so it probably works, but it may act differently than on its own base model.",
                         claimed, info)


# -- GGUF adapters ---------------------------------------------------------------------------
def gguf_compatibility(adapter: GGUFHeader, model: GGUFHeader, *, adapter_name: str, model_name: str,
                       base_model: str | None = None) -> Compatibility:
    """The verdict for a GGUF adapter with header ``adapter`` on the model with header ``model``.

    ``base_model`` is what the hub says the adapter is for (its ``base_model`` tag), used when
    the file itself does not say.
    """
    try:
        info = adapter_info_from_header(adapter_name, adapter)
    except AdapterError as exc:
        return Compatibility(INCOMPATIBLE, str(exc), base_model)
    problem = (lora_header_problem(adapter, adapter_name)
               or compatibility_problem(info, model, model_name))
    claimed = info.base_model or base_model
    if problem:
        return Compatibility(INCOMPATIBLE, problem, claimed, info)
    return _fitting(info, claimed, model, model_name)


# -- PEFT adapters ---------------------------------------------------------------------------
def read_safetensors_head(read: Reader, size: int, name: str) -> dict[str, dict]:
    """The tensor entries (dtype, shape, data offsets) of a safetensors file, from its first bytes.

    Raises ValueError (SafetensorsError) when the bytes are not a safetensors header.
    """
    from desktop_app_lora.safetensors_file import SafetensorsError, header_length, parse_header

    head = read(0, min(size, FIRST_READ))
    parsed = parse_header(head, name, size)
    if parsed is None:
        # The first 8 bytes said how long the header is: one more read gets all of it.
        head += read(len(head), 8 + header_length(head, name))
        parsed = parse_header(head, name, size)
        if parsed is None:
            raise SafetensorsError(f"{name} ended early while its header was read.")
    return parsed[0]


def peft_compatibility(config_text: bytes | str | None, tensors: dict[str, Any] | None, model: GGUFHeader, *,
                       adapter_name: str, model_name: str, base_model: str | None = None,
                       weights_size: int = 0) -> Compatibility:
    """The verdict for a PEFT adapter: its ``adapter_config.json`` text (None when it has none) and
    its safetensors header entries (None when they could not be read), on ``model``.

    An adapter passes when the converter would convert it for this model: a LoRA config it
    accepts, tensor names it knows, and every pair's shape matching the model's tensor.
    """
    from desktop_app_lora.convert import (
        MODULES,
        ConversionError,
        check_architecture,
        check_pair_shapes,
        group_pairs,
        parse_peft_config,
    )

    if config_text is None:
        return Compatibility(INCOMPATIBLE, f"{adapter_name} has no adapter_config.json, so it is not a PEFT "
                             "adapter Parley can convert.", base_model)
    try:
        config = parse_peft_config(config_text, adapter_name)
    except ConversionError as exc:
        return Compatibility(INCOMPATIBLE, str(exc), base_model)
    claimed = config.base_model or base_model
    try:
        check_architecture(model, model_name)
    except ConversionError as exc:
        return Compatibility(INCOMPATIBLE, str(exc), claimed)
    odd = [m for m in config.target_modules or () if m.rsplit(".", 1)[-1] not in MODULES]
    if odd:
        which = "which have" if len(odd) > 1 else "which has"
        return Compatibility(INCOMPATIBLE, f"The adapter targets {', '.join(odd)}, {which} no llama.cpp "
                             f"counterpart here. Supported target modules: {', '.join(MODULES)}.", claimed)
    if tensors is None:
        return Compatibility(UNKNOWN, "The adapter's weights could not be inspected, so their shapes are "
                             "not known.", claimed)
    if not tensors:
        return Compatibility(INCOMPATIBLE, f"{adapter_name}'s adapter_model.safetensors holds no tensors.", claimed)
    try:
        grouped = group_pairs(tensors)
        pairs: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for base, keys in grouped.items():
            a, b = (tuple(tensors[keys[half]]["shape"]) for half in ("a", "b"))
            if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
                check_pair_shapes(base, a, b, model, model_name)  # says what is wrong with them
            # PEFT's (rank × inputs, outputs × rank) in GGUF's order: (inputs, rank), (rank, outputs).
            pairs[base] = ((a[1], a[0]), (b[1], b[0]))
    except ConversionError as exc:
        return Compatibility(INCOMPATIBLE, str(exc), claimed)
    dtypes = sorted({str(entry.get("dtype")) for entry in tensors.values()})
    info = adapter_info_from_pairs(pairs, path=adapter_name, file_size=weights_size,
                                   architecture=model.architecture, name=adapter_name, base_model=claimed,
                                   alpha=config.alpha, tensor_type="/".join(dtypes))
    problem = compatibility_problem(info, model, model_name)
    if problem is None:
        try:
            for base, keys in grouped.items():  # the converter's own check, as it will run
                check_pair_shapes(base, tuple(tensors[keys["a"]]["shape"]), tuple(tensors[keys["b"]]["shape"]),
                                  model, model_name)
        except ConversionError as exc:
            problem = str(exc)
    if problem:
        return Compatibility(INCOMPATIBLE, problem, claimed, info)
    return _fitting(info, claimed, model, model_name)
