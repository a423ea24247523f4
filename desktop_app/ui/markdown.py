"""Markdown to the HTML subset Qt's text browser shows, with highlighted code blocks.

Raw HTML in a message is shown as text, never interpreted, and images become links: a
model's answer cannot inject markup, load files or run anything. Each code block gets a "Copy" link whose address is
``copy-code:<n>``; the view copies block ``n`` when it is clicked.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = ["Rendered", "render_markdown"]


@dataclass
class Rendered:
    """The HTML of a message and the plain text of each of its code blocks, in order."""

    html: str
    code_blocks: list[str] = field(default_factory=list)


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("fence", _render_fence)
    md.add_render_rule("code_block", _render_fence)
    md.add_render_rule("image", _render_image)
    return md


def _render_image(self, tokens, idx, options, env) -> str:
    # An image would make the view read a file (or a device) from disk: show a link instead.
    token = tokens[idx]
    src = html.escape(token.attrGet("src") or "", quote=True)
    alt = html.escape(token.content or "image")
    return f'<a href="{src}">[image: {alt}]</a>'



def _colours(dark: bool) -> tuple[str, str, str]:
    """Code background, border and muted text colours."""
    return ("#272822", "#444444", "#aaaaaa") if dark else ("#f6f8fa", "#d0d7de", "#57606a")


def _render_fence(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    dark = env["dark"]
    blocks = env["blocks"]
    background, border, muted = _colours(dark)
    code = token.content
    language = token.info.strip().split(" ")[0] if token.info else ""
    number = len(blocks)
    blocks.append(code)
    body = _highlight(code, language, dark)
    label = html.escape(language) if language else "code"
    return (
        f'<table width="100%" cellspacing="0" cellpadding="6" '
        f'style="background:{background}; border:1px solid {border}; margin:4px 0;">'
        f'<tr><td style="color:{muted}; font-size:small;">{label}'
        f'&nbsp;&nbsp;<a href="copy-code:{number}">Copy</a></td></tr>'
        f'<tr><td><pre style="margin:0; font-family:monospace;">{body}</pre></td></tr></table>'
    )


@lru_cache(maxsize=2)
def _formatter(dark: bool):
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(noclasses=True, nowrap=True, style="monokai" if dark else "friendly")


def _highlight(code: str, language: str, dark: bool) -> str:
    from pygments import highlight
    from pygments.lexers import TextLexer, get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        # Guessing the language of an unlabelled block is slow and often wrong: leave it plain.
        lexer = get_lexer_by_name(language) if language else TextLexer()
    except ClassNotFound:
        lexer = TextLexer()
    return highlight(code, lexer, _formatter(dark)).rstrip("\n")


def render_markdown(text: str, dark: bool = False, remember: bool = True) -> Rendered:
    """Render ``text``; an unfinished code fence (while streaming) renders as a code block too.

    With ``remember`` the result is kept for the messages seen last, so reopening a
    conversation renders nothing again (an answer being streamed passes False: its text
    changes at every tick). Treat the result as read-only.
    """
    return _render(text, dark) if remember else _render.__wrapped__(text, dark)


@lru_cache(maxsize=512)
def _render(text: str, dark: bool) -> Rendered:
    md = _parser()
    env = {"dark": dark, "blocks": []}
    body = md.render(text, env)
    background, border, _ = _colours(dark)
    style = (
        "<style>"
        f"code {{ font-family: monospace; background:{background}; }}"
        f"th, td {{ border: 1px solid {border}; padding: 3px 6px; }}"
        "table { border-collapse: collapse; }"
        "</style>"
    )
    return Rendered(style + body, env["blocks"])
