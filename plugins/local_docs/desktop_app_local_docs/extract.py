"""Turn a file into text sections (with page and heading), or say why it is skipped.

Supported: plain text and Markdown/reStructuredText, source code, PDF (text per page),
DOCX, HTML (visible text). Everything else, and files that are binary, empty, encrypted,
corrupt or too large, raise :class:`SkipFile` with a reason a person can read.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["Section", "SkipFile", "extract", "SUPPORTED_SUFFIXES"]

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
CODE_SUFFIXES = {
    ".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".kt", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".go",
    ".rs", ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".ps1", ".sql", ".r", ".m", ".lua", ".pl",
    ".toml", ".yaml", ".yml", ".json", ".ini", ".cfg", ".css", ".scss", ".xml", ".csv", ".tex",
}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | CODE_SUFFIXES | {".pdf", ".docx", ".html", ".htm"}


class SkipFile(Exception):
    """This file is not indexed; the message says why (shown in the collection's report)."""


@dataclass
class Section:
    """A run of text from one place in a file. ``offset`` is its first character in the file's text."""

    text: str
    page: int | None = None
    heading: str | None = None
    offset: int = 0


def extract(path: Path, max_bytes: int) -> list[Section]:
    """Read ``path`` into sections; raise SkipFile with the reason when it cannot or should not be."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise SkipFile(f"unsupported file type {suffix or '(none)'}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SkipFile(f"cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise SkipFile("empty file")
    if size > max_bytes:
        raise SkipFile(f"larger than the {max_bytes // 1_000_000} MB limit ({size / 1e6:.1f} MB)")
    try:
        if suffix == ".pdf":
            sections = _pdf(path)
        elif suffix == ".docx":
            sections = _docx(path)
        elif suffix in (".html", ".htm"):
            sections = [Section(_html_text(_read_text(path)))]
        else:
            sections = _text(_read_text(path), markdown=suffix in (".md", ".markdown", ".rst"))
    except SkipFile:
        raise
    except OSError as exc:
        raise SkipFile(f"cannot be read ({exc.strerror or exc})") from None
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise SkipFile("no text found")
    return sections


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise SkipFile("binary file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Old files are often Latin-1; that decoding never fails, so accept it only for mostly-text data.
        text = data.decode("latin-1")
        printable = sum(c.isprintable() or c in "\n\r\t" for c in text[:4096])
        if printable < 0.95 * min(len(text), 4096):
            raise SkipFile("binary file") from None
        return text


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def _text(text: str, markdown: bool) -> list[Section]:
    """One section per heading (Markdown) or the whole text."""
    if not markdown:
        return [Section(text)]
    sections: list[Section] = []
    heading: str | None = None
    start = 0
    offset = 0
    lines = text.splitlines(keepends=True)
    buffer: list[str] = []
    for line in lines:
        match = _HEADING.match(line.rstrip("\n"))
        if match:
            if buffer:
                sections.append(Section("".join(buffer), heading=heading, offset=start))
            heading = match.group(2)
            buffer, start = [line], offset
        else:
            buffer.append(line)
        offset += len(line)
    if buffer:
        sections.append(Section("".join(buffer), heading=heading, offset=start))
    return sections


def _pdf(path: Path) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise SkipFile("encrypted PDF (needs a password)")
            except SkipFile:
                raise
            except Exception:
                raise SkipFile("encrypted PDF (needs a password)") from None
        sections, offset = [], 0
        for number, page in enumerate(reader.pages, 1):
            text = page.extract_text() or ""
            sections.append(Section(text, page=number, offset=offset))
            offset += len(text) + 1
        return sections
    except SkipFile:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SkipFile(f"corrupt PDF ({exc})") from None
    except Exception as exc:  # pypdf raises many kinds of errors on damaged files
        raise SkipFile(f"corrupt PDF ({type(exc).__name__}: {exc})") from None


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _docx(path: Path) -> list[Section]:
    from xml.etree import ElementTree

    try:
        with zipfile.ZipFile(path) as archive:
            xml = archive.read("word/document.xml")
        root = ElementTree.fromstring(xml)
    except zipfile.BadZipFile:
        raise SkipFile("corrupt DOCX (not a zip archive)") from None
    except KeyError:
        raise SkipFile("corrupt DOCX (no document part)") from None
    except ElementTree.ParseError as exc:
        raise SkipFile(f"corrupt DOCX ({exc})") from None
    except Exception as exc:  # damaged compression, encrypted members...
        raise SkipFile(f"corrupt DOCX ({type(exc).__name__}: {exc})") from None
    sections: list[Section] = []
    heading: str | None = None
    buffer: list[str] = []
    offset = start = 0
    for paragraph in root.iter(f"{_W}p"):
        style = paragraph.find(f"{_W}pPr/{_W}pStyle")
        text = "".join(t.text or "" for t in paragraph.iter(f"{_W}t"))
        if style is not None and (style.get(f"{_W}val") or "").lower().startswith(("heading", "title")) and text:
            if buffer:
                sections.append(Section("\n\n".join(buffer), heading=heading, offset=start))
            heading, buffer, start = text, [text], offset
        elif text:
            buffer.append(text)
        offset += len(text) + 2
    if buffer:
        sections.append(Section("\n\n".join(buffer), heading=heading, offset=start))
    return sections


class _VisibleText(HTMLParser):
    _HIDDEN = {"script", "style", "noscript", "template", "head"}
    _BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in self._HIDDEN and self._hidden:
            self._hidden -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)


def _html_text(source: str) -> str:
    parser = _VisibleText()
    parser.feed(source)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n\s*", "\n\n", text).strip()
