"""What the model hub holds, as Parley sees it: files, the models they make up, and their names.

Shared by the catalogue (:mod:`desktop_app.core.hub`), which fills these in from the hub's
API, and the downloader (:mod:`desktop_app.core.downloads`), which fetches and verifies them.
A GGUF split into parts (``name-00001-of-00003.gguf``) is one :class:`HubModelFile` with
several parts; llama.cpp loads it from the first part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["HubFile", "HubModelFile", "SPLIT_PATTERN", "split_part"]

#: llama.cpp's split naming: the part number and the count, five digits each.
SPLIT_PATTERN = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def split_part(path: str) -> tuple[str, int, int] | None:
    """``(stem, part, count)`` for a split GGUF's file name (parts count from 1), else None."""
    match = SPLIT_PATTERN.match(path.rsplit("/", 1)[-1])
    if match is None:
        return None
    return match["stem"], int(match["part"]), int(match["count"])


@dataclass(frozen=True)
class HubFile:
    """One file in a hub repository at one revision.

    ``sha256`` is the LFS object id the hub reports (None for a small file kept in git,
    which the downloader then checks against ``size`` only).
    """

    repo_id: str
    path: str
    size: int
    sha256: str | None = None
    revision: str = "main"


@dataclass(frozen=True)
class HubModelFile:
    """One downloadable model or adapter: a single GGUF, or the parts of a split one, in order."""

    repo_id: str
    name: str  # what the user picks, e.g. "Q4_K_M" or the file name without ".gguf"
    parts: tuple[HubFile, ...]
    quantization: str | None = None
    kind: str = "model"  # "model", or "adapter" for a LoRA adapter
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def size(self) -> int:
        """Bytes of all the parts together."""
        return sum(part.size for part in self.parts)

    @property
    def first(self) -> HubFile:
        """The part llama.cpp is given (the only one for an unsplit file)."""
        return self.parts[0]
