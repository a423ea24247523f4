"""A model card's gist: the first paragraph or two of a hub README, as plain text.

Model cards are Markdown with YAML front matter (the metadata the hub also serves as
``cardData``), headings, badges, tables and code. The summary keeps only the prose of the
first top-level paragraphs, parsed with markdown-it so that links keep their words and
images, HTML and tables drop out.
"""

from __future__ import annotations

import re

__all__ = ["card_summary", "strip_front_matter"]

_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n.*?\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def strip_front_matter(text: str) -> str:
    """``text`` without its leading YAML block (``---`` ... ``---``), if it has one."""
    return _FRONT_MATTER.sub("", text, count=1)


def card_summary(text: str, *, max_chars: int = 600, max_paragraphs: int = 2) -> str:
    """The first paragraphs of a model card's prose, as one plain-text string of at most ``max_chars``.

    Paragraphs with no words of their own (a row of badges, an image) are skipped; a cut is
    made at a word and marked with "…". An empty string when the card has no prose.
    """
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(strip_front_matter(text))
    paragraphs: list[str] = []
    for previous, token in zip(tokens, tokens[1:]):
        # Only top-level paragraphs: list items, quotes and table cells are not the card's prose.
        if token.type != "inline" or previous.type != "paragraph_open" or previous.level != 0:
            continue
        words = _plain_text(token.children or [])
        if len(re.findall(r"[^\W\d_]{2,}", words)) < 2:
            continue
        paragraphs.append(words)
        if len(paragraphs) >= max_paragraphs or sum(map(len, paragraphs)) >= max_chars // 2:
            break
    summary = "\n\n".join(paragraphs)
    if len(summary) > max_chars:
        cut = summary[:max_chars - 1]
        cut = cut[:cut.rfind(" ")] if " " in cut[max_chars // 2:] else cut
        summary = cut.rstrip(" ,.;:") + "…"
    return summary


def _plain_text(children: list) -> str:
    """The words of an inline token's children: text and code kept, images and HTML dropped."""
    parts: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        # link_open/link_close only mark where a link's words are; image and html_inline are noise.
    return re.sub(r"\s+", " ", "".join(parts)).strip()
