"""Which models a hub repository's files make up: GGUFs by quantisation, split parts joined.

A GGUF repository usually holds one model in several quantisations (``...-Q4_K_M.gguf``,
``...-Q8_0.gguf``), some of them split into parts (``...-Q8_0-00001-of-00002.gguf``), and
sometimes a vision projector (``mmproj-...gguf``) that is not a model of its own.
:func:`group_gguf_files` sorts that out from the file list alone.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from desktop_app.core.hub_files import HubFile, HubModelFile, split_part

__all__ = ["GroupedFiles", "group_gguf_files", "is_projector", "quantization_of"]

# llama.cpp's quantisation names: Q4_K_M, Q8_0, Q4_0_4_4, IQ2_XXS, IQ4_NL, TQ1_0, and the
# float types. A name sits between separators ("-", ".", "_" or the ends); the last one wins,
# since model names put it at the end ("Llama-3.2-1B-Instruct-Q4_K_M").
_QUANT = re.compile(
    r"(?<![a-z0-9])"
    r"(?P<quant>i?q\d+_(?:k|\d+|xxs|xs|nl|s|m|l)(?:_(?:k|\d+|xxs|xs|xl|s|m|l))*"
    r"|tq\d_\d|mxfp4(?:_moe)?|bf16|fp?16|fp?32)"
    r"(?![a-z0-9])",
    re.IGNORECASE,
)
_FLOAT_NAMES = {"FP16": "F16", "FP32": "F32"}


def quantization_of(path: str) -> str | None:
    """The quantisation a GGUF file's name says it has, upper-case (e.g. "Q4_K_M", "F16"), else None."""
    stem = path.rsplit("/", 1)[-1]
    split = split_part(stem)
    if split is not None:
        stem = split[0]
    elif stem.lower().endswith(".gguf"):
        stem = stem[:-5]
    found = [m["quant"].upper() for m in _QUANT.finditer(stem)]
    if not found and "/" in path:
        # Some repositories name the folder after the quantisation ("Q8_0/model-00001-of-00002.gguf").
        found = [m["quant"].upper() for m in _QUANT.finditer(path.rsplit("/", 1)[0])]
    if not found:
        return None
    return _FLOAT_NAMES.get(found[-1], found[-1])


def is_projector(path: str) -> bool:
    """Whether a GGUF is a multimodal projector (``mmproj``), which goes with a model rather than being one."""
    return "mmproj" in path.rsplit("/", 1)[-1].lower()


@dataclass(frozen=True)
class GroupedFiles:
    """A repository's GGUFs, sorted out.

    ``models``: complete ones, smallest first. ``incomplete``: split models with parts missing,
    never offered; each has ``extra["missing_parts"]`` (part numbers, from 1) and
    ``extra["part_count"]``. ``projectors``: the ``mmproj`` files.
    """

    models: tuple[HubModelFile, ...]
    incomplete: tuple[HubModelFile, ...]
    projectors: tuple[HubFile, ...]


def group_gguf_files(files: Iterable[HubFile]) -> GroupedFiles:
    """Sort a repository's files into models (split parts joined, in order), incomplete ones and projectors.

    Files that are not GGUF are left out. A model is named by its quantisation when that is
    unique in the repository, else by its file name without ``.gguf`` (and the split suffix).
    """
    singles: list[HubFile] = []
    splits: dict[tuple[str, int], dict[int, HubFile]] = {}
    projectors: list[HubFile] = []
    for file in files:
        if not file.path.lower().endswith(".gguf"):
            continue
        if is_projector(file.path):
            projectors.append(file)
            continue
        split = split_part(file.path)
        if split is None:
            singles.append(file)
            continue
        stem, part, count = split
        folder = file.path.rsplit("/", 1)[0] + "/" if "/" in file.path else ""
        splits.setdefault((folder + stem, count), {})[part] = file

    drafts: list[tuple[str, tuple[HubFile, ...], dict]] = []  # (stem, parts, extra)
    incomplete_drafts: list[tuple[str, tuple[HubFile, ...], dict]] = []
    for file in singles:
        drafts.append((file.path[:-5], (file,), {}))
    for (stem, count), parts in splits.items():
        missing = [n for n in range(1, count + 1) if n not in parts]
        ordered = tuple(parts[n] for n in sorted(parts) if 1 <= n <= count)
        extra = {"part_count": count}
        if missing:
            incomplete_drafts.append((stem, ordered, {**extra, "missing_parts": tuple(missing)}))
        else:
            drafts.append((stem, ordered, extra))

    quants = Counter(quantization_of(parts[0].path) for _, parts, _ in drafts + incomplete_drafts if parts)

    def build(stem: str, parts: tuple[HubFile, ...], extra: dict) -> HubModelFile:
        quant = quantization_of(parts[0].path) if parts else None
        name = quant if quant is not None and quants[quant] == 1 else stem.rsplit("/", 1)[-1]
        return HubModelFile(repo_id=parts[0].repo_id, name=name, parts=parts, quantization=quant, extra=extra)

    models = sorted((build(*d) for d in drafts), key=lambda m: (m.size, m.name))
    incomplete = sorted((build(*d) for d in incomplete_drafts if d[1]), key=lambda m: m.name)
    return GroupedFiles(tuple(models), tuple(incomplete), tuple(sorted(projectors, key=lambda f: f.path)))
