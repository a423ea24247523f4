"""GGUF LoRA adapter files: what is in one, and whether it fits a model.

Both questions are answered from the GGUF headers alone (Parley's own header walk, shared with
the model library), so they take milliseconds and never touch llama.cpp. The checks mirror
the ones llama.cpp makes when it reads an adapter, and a few it does not make but should
(an embedding adapter on a model whose output layer is the embedding crashes llama.cpp), so a
file that passes here is one llama.cpp accepts, and every refusal says why in plain words.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from desktop_app.api import GGUFHeader, ModelFileError, ParleyError, check_gguf_file, check_lora_file

__all__ = [
    "AdapterError",
    "AdapterInfo",
    "adapter_info_from_header",
    "adapter_info_from_pairs",
    "check_compatible",
    "compatibility_problem",
    "read_adapter_info",
]

_GGUF_MAGIC = b"GGUF"
_BLOCK = re.compile(r"^blk\.(\d+)\.")
#: Base tensors whose input is the model's hidden state: their lora_a rows have n_embd values.
_TAKES_HIDDEN_STATE = ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up")


class AdapterError(ParleyError):
    """A LoRA adapter file that cannot be used (damaged, not an adapter, or made for another model)."""


@dataclass
class AdapterInfo:
    """What a GGUF LoRA adapter holds, as shown to the user.

    ``pairs`` maps each base tensor the adapter changes (e.g. ``blk.0.attn_q.weight``) to the
    GGUF dimensions of its (lora_a, lora_b) tensors.
    """

    path: str
    file_size: int
    architecture: str
    name: str
    base_model: str | None
    rank: int
    alpha: float
    targets: list[str]
    layers: int
    embedding_length: int | None
    tensor_type: str
    pairs: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict, repr=False)

    @property
    def ranks(self) -> list[int]:
        """Every rank used (usually one)."""
        return sorted({a[1] for a, _ in self.pairs.values()})

    def summary(self) -> dict[str, Any]:
        """The user-facing fields, JSON-ready (without the per-tensor shapes)."""
        data = asdict(self)
        data.pop("pairs")
        return data

    def describe(self) -> str:
        """One line: architecture, rank, alpha, targets and size."""
        rank = "/".join(str(r) for r in self.ranks) or "?"
        return (f"{self.architecture} · rank {rank} · alpha {self.alpha:g} · "
                f"{', '.join(self.targets)} · {self.file_size / 1e6:.1f} MB")


def read_adapter_info(path: Path | str) -> AdapterInfo:
    """Read a GGUF LoRA adapter's metadata; raise :class:`AdapterError` saying why it is unusable."""
    path = Path(path)
    name = path.name
    if path.is_dir():
        if (path / "adapter_config.json").exists():
            raise AdapterError(f"{name} is a PEFT adapter folder; convert it to GGUF first "
                               "(LoRA panel → Convert…, or `parley lora convert`).")
        raise AdapterError(f"{path} is a folder, not a GGUF LoRA adapter file.")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise AdapterError(f"{name} cannot be read: {exc.strerror or exc}.") from None
    if magic != _GGUF_MAGIC:
        hint = (" It looks like PEFT weights: convert the folder that holds them and its "
                "adapter_config.json." if path.suffix in (".safetensors", ".bin") else "")
        raise AdapterError(f"{name} is not a GGUF LoRA adapter.{hint}")
    try:
        header = check_gguf_file(path)
    except ModelFileError as exc:
        raise AdapterError(f"{name} cannot be used as a LoRA adapter: {exc}") from None
    info = adapter_info_from_header(path, header)
    try:
        check_lora_file(path)  # what llama.cpp itself would choke on
    except ModelFileError as exc:
        raise AdapterError(str(exc)) from None
    return info


def adapter_info_from_header(path: Path | str, header: GGUFHeader) -> AdapterInfo:
    """An adapter's metadata from its GGUF header (read from a file, or from a file's first bytes
    elsewhere); raise :class:`AdapterError` when the header is not a LoRA adapter's."""
    path = Path(path)
    name = path.name
    scalars = header.scalars
    kind = scalars.get("general.type")
    if kind != "adapter" or scalars.get("adapter.type") != "lora":
        what = "a model" if kind in (None, "model") else f"of type {kind!r}"
        raise AdapterError(f"{name} is {what}, not a LoRA adapter (a GGUF adapter says "
                           "general.type = adapter and adapter.type = lora).")
    shapes = header.tensor_shapes or {}
    halves: dict[str, dict[str, tuple[int, ...]]] = {}
    for tensor, dims in shapes.items():
        if tensor.endswith((".lora_a", ".lora_b")):
            base, half = tensor[:-7], tensor[-1]
            halves.setdefault(base, {})[half] = dims
        elif not tensor.endswith("_norm.weight"):  # llama.cpp skips norm vectors, refuses the rest
            raise AdapterError(f"{name} holds the tensor {tensor!r}, which is not part of a LoRA adapter.")
    if not halves:
        raise AdapterError(f"{name} holds no LoRA tensors.")
    pairs: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for base, parts in sorted(halves.items()):
        if set(parts) != {"a", "b"}:
            missing = "lora_b" if "a" in parts else "lora_a"
            raise AdapterError(f"{name} is damaged: {base} has no {missing} tensor.")
        a, b = parts["a"], parts["b"]
        if len(a) != 2 or len(b) != 2:
            raise AdapterError(f"{name} is damaged: the LoRA tensors of {base} are not matrices.")
        if not base.endswith("token_embd.weight") and a[1] != b[0]:
            raise AdapterError(f"{name} is damaged or in an old layout: the ranks of {base}'s "
                               f"lora_a ({a[1]}) and lora_b ({b[0]}) differ.")
        pairs[base] = (a, b)
    types = header.tensor_types or {}
    alpha = scalars.get("adapter.lora.alpha", 0.0)
    base_model = scalars.get("general.base_model.0.name") or scalars.get("general.base_model.0.repo_url")
    return adapter_info_from_pairs(
        pairs, path=str(path), file_size=header.file_size, architecture=header.architecture,
        name=str(scalars.get("general.name") or path.stem), base_model=str(base_model) if base_model else None,
        alpha=float(alpha) if isinstance(alpha, (int, float)) else 0.0,
        tensor_type="/".join(sorted(types)) or "unknown",
    )


def adapter_info_from_pairs(pairs: dict[str, tuple[tuple[int, ...], tuple[int, ...]]], *, path: str,
                            file_size: int, architecture: str, name: str, base_model: str | None,
                            alpha: float, tensor_type: str) -> AdapterInfo:
    """An :class:`AdapterInfo` for these LoRA pairs (GGUF dimensions, already checked to be pairs):
    its rank, targets, layer count and embedding size are read off their shapes."""
    blocks = [int(m.group(1)) for m in map(_BLOCK.match, pairs) if m]
    hidden = {a[0] for base, (a, _) in pairs.items()
              if any(f".{kind}." in base for kind in _TAKES_HIDDEN_STATE)}
    return AdapterInfo(
        path=path,
        file_size=file_size,
        architecture=architecture,
        name=name,
        base_model=base_model,
        rank=max((a[1] for a, _ in pairs.values()), default=0),
        alpha=alpha,
        targets=sorted({_target(base) for base in pairs}),
        layers=max(blocks) + 1 if blocks else 0,
        embedding_length=hidden.pop() if len(hidden) == 1 else None,
        tensor_type=tensor_type,
        pairs=pairs,
    )


def _target(base: str) -> str:
    """``blk.3.attn_q.weight`` -> ``attn_q``; ``token_embd.weight`` -> ``token_embd``."""
    return _BLOCK.sub("", base).removesuffix(".weight")


def compatibility_problem(info: AdapterInfo, model: GGUFHeader, model_name: str = "the model") -> str | None:
    """Why ``info`` cannot be applied to the model whose header is ``model``, or None if it fits.

    Checked in the order a person can act on: architecture, layer count, embedding size,
    then every tensor the adapter changes (it must exist in the model with the same shape).
    """
    arch = model.architecture
    if info.architecture != arch:
        return (f"{Path(info.path).name} is for the {info.architecture} architecture, but "
                f"{model_name} is {arch}.")
    layers = int(model.scalars.get(f"{arch}.block_count", 0) or 0)
    if layers and info.layers > layers:
        return (f"{Path(info.path).name} changes {info.layers} layers, but {model_name} has "
                f"{layers}: it was made for a bigger model.")
    n_embd = int(model.scalars.get(f"{arch}.embedding_length", 0) or 0)
    if n_embd and info.embedding_length and info.embedding_length != n_embd:
        return (f"{Path(info.path).name} was made for a model with embedding size "
                f"{info.embedding_length}, but {model_name} has {n_embd}.")
    shapes = model.tensor_shapes or {}
    for base, (a, b) in info.pairs.items():
        weight = shapes.get(base)
        if weight is None:
            return (f"{Path(info.path).name} changes {base}, which {model_name} does not have: "
                    "it was made for another model.")
        if base.endswith("token_embd.weight"):
            if "output.weight" not in shapes:
                # llama.cpp aborts the whole process on this combination instead of refusing it.
                return (f"{Path(info.path).name} changes the token embeddings, which {model_name} "
                        "shares with its output layer; llama.cpp cannot apply that.")
            fits = len(weight) == 2 and weight[0] == b[1] and weight[1] == a[1]
        else:
            fits = len(weight) == 2 and weight[0] == a[0] and weight[1] == b[1]
        if not fits:
            return (f"{Path(info.path).name} does not fit {model_name}: {base} is "
                    f"{' × '.join(map(str, weight))} in the model, but the adapter expects "
                    f"{a[0]} × {b[1]}. It was made for another model.")
    return None


def check_compatible(info: AdapterInfo, model_path: Path | str) -> None:
    """Raise :class:`AdapterError` unless ``info`` fits the model file ``model_path``."""
    model_path = Path(model_path)
    try:
        header = check_gguf_file(model_path)
    except ModelFileError as exc:
        raise AdapterError(str(exc)) from None
    problem = compatibility_problem(info, header, model_path.name)
    if problem:
        raise AdapterError(problem)
