"""Split text into chunks measured in the embedder's own tokens, preferring paragraph boundaries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from desktop_app_local_docs.extract import Section

__all__ = ["Chunk", "chunk_sections"]

_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass
class Chunk:
    """A passage of a file: its text, where it is (page, heading, character span) and its order."""

    text: str
    page: int | None
    heading: str | None
    start: int
    end: int


def _paragraphs(section: Section) -> list[tuple[int, int]]:
    spans, position = [], 0
    for match in _PARAGRAPH.finditer(section.text):
        if match.start() > position:
            spans.append((position, match.start()))
        position = match.end()
    if position < len(section.text):
        spans.append((position, len(section.text)))
    return [(a, b) for a, b in spans if section.text[a:b].strip()]


def chunk_sections(sections: list[Section], tokenizer: Any, max_tokens: int, overlap: int) -> list[Chunk]:
    """Pack whole paragraphs into chunks of at most ``max_tokens`` tokens.

    A paragraph longer than that is cut into windows of ``max_tokens`` with ``overlap`` tokens
    shared between neighbours; consecutive chunks also share a short last paragraph.
    """
    chunks: list[Chunk] = []
    overlap = max(0, min(overlap, max_tokens // 2))  # a larger overlap would barely advance
    for section in sections:
        spans = _paragraphs(section)
        if not spans:
            continue
        texts = [section.text[a:b] for a, b in spans]
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        pieces: list[tuple[int, int, int]] = []  # (start, end, tokens) in section text
        for (a, _), ids, offsets in zip(spans, encoded["input_ids"], encoded["offset_mapping"]):
            if len(ids) <= max_tokens:
                pieces.append((a, a + (offsets[-1][1] if offsets else 0), len(ids)))
                continue
            step = max(1, max_tokens - overlap)
            for first in range(0, len(ids), step):
                window = offsets[first:first + max_tokens]
                pieces.append((a + window[0][0], a + window[-1][1], len(window)))
                if first + max_tokens >= len(ids):
                    break
        current: list[tuple[int, int, int]] = []
        total = 0
        for piece in pieces:
            if current and total + piece[2] > max_tokens:
                chunks.append(_make(section, current))
                last = current[-1]
                # Carry a short last paragraph over, so a thought split across chunks is found in
                # both, when it still leaves room for the next one.
                carry = last[2] <= overlap and last[2] + piece[2] <= max_tokens
                current, total = ([last], last[2]) if carry else ([], 0)
            current.append(piece)
            total += piece[2]
        if current:
            chunks.append(_make(section, current))
    return chunks


def _make(section: Section, pieces: list[tuple[int, int, int]]) -> Chunk:
    start, end = pieces[0][0], pieces[-1][1]
    return Chunk(section.text[start:end].strip(), section.page, section.heading,
                 section.offset + start, section.offset + end)
