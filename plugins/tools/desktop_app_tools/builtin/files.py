"""The file tools: :class:`FileAccess`, whose bound methods ``list_folder`` and
``read_file`` give read-only access to the folders the user granted, and nothing else.

Like every module of this package it avoids ``from __future__ import annotations``:
see the package docstring.
"""

import codecs
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileAccess"]

_NO_GRANT = ("No folder is shared with the assistant yet. Ask the user to grant a folder "
             "in the Tools panel.")
_MAX_PATH_CHARS = 4096
_MAX_LINES = 2000


def _printable(text: str, limit: int = 200) -> str:
    """Text safe to show in one line: undecodable bytes and control characters escaped.

    A file name containing a newline must not be able to fake entries in a listing.
    """
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return text if len(text) <= limit else text[:limit] + "…"


def _shown(path: Path) -> str:
    return _printable(str(path), limit=1000)


def _human_size(size: int) -> str:
    if size < 1000:
        return f"{size} byte{'s' if size != 1 else ''}"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}"
    return f"{size:.1f} TB"  # pragma: no cover - the loop always returns


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _split_lines(text: str) -> list[str]:
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start another
    return lines


def _looks_binary(data: bytes) -> bool:
    """NUL bytes, or many control characters, mean this is not text (UTF-16 aside)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\0" in data:
        return True
    sample = data[:8192]
    controls = sum(1 for byte in sample if byte < 32 and byte not in b"\t\n\r\f\v\x1b")
    return controls > len(sample) // 10


def _decode(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


@dataclass
class _Grant:
    given: Path  # as the user granted it (its name is offered as a path prefix)
    real: Path  # resolved: what containment is checked against


class FileAccess:
    """Read-only tools over the folders the user granted, and nothing else.

    Every path is resolved (following symbolic links) and must land inside a resolved
    granted folder; only regular files and folders are touched. Messages about a refused
    path repeat only what the caller wrote, never anything found outside the grant.
    ``granted`` is called on every use, so grants changed in the Tools panel apply at once.
    """

    def __init__(self, granted: Callable[[], list[Path]], *, max_entries: int = 500,
                 max_file_bytes: int = 2_000_000, max_chars: int = 40_000) -> None:
        """``granted`` returns the granted folders. The caps bound one answer: entries in a
        listing, the size of a readable file, and the characters of text returned."""
        self._granted = granted
        self._max_entries = max_entries
        self._max_file_bytes = max_file_bytes
        self._max_chars = max_chars

    # ---- the tools ---------------------------------------------------------------------

    def list_folder(self, path: str = "") -> str:
        """List the files and subfolders of a folder the user shared, with their sizes.
        Leave the path empty to see which folders are shared.

        Args:
            path: Folder to list: absolute, or relative to a shared folder (start with its name). Empty: the shared folders.
        """
        grants = self._grants()
        if not self._clean(path):
            return self._describe_grants(grants)
        real, info, shown = self._locate(path, grants)
        if not stat.S_ISDIR(info.st_mode):
            raise ValueError(f"'{shown}' is a file, not a folder; use read_file to read it.")
        roots = [g.real for g in grants]
        try:
            with os.scandir(real) as entries:
                described = [self._describe_entry(entry, roots) for entry in entries]
        except PermissionError:
            raise ValueError(f"Permission denied: cannot list '{shown}'.") from None
        if not described:
            return f"Folder {_shown(real)} is empty."
        described.sort(key=lambda item: (item[0], item[1].casefold()))
        folders = sum(1 for group, *_ in described if group == 0)
        files = sum(1 for group, *_ in described if group == 1)
        others = len(described) - folders - files
        summary = f"{folders} folder{'s' if folders != 1 else ''}, {files} file{'s' if files != 1 else ''}"
        if others:
            summary += f", {others} other"
        lines = [f"Folder {_shown(real)} ({summary}):"]
        lines += [text for _, _, text in described[:self._max_entries]]
        if len(described) > self._max_entries:
            lines.append(f"… and {len(described) - self._max_entries} more")
        return "\n".join(lines)

    def read_file(self, path: str, start_line: int = 1, max_lines: int = 400) -> str:
        """Read a text file from a folder the user shared, optionally a range of its lines.

        Args:
            path: The file: absolute, or relative to a shared folder (start with its name if several are shared).
            start_line: The first line to read, counting from 1.
            max_lines: How many lines to read at most (up to 2000).
        """
        if isinstance(start_line, bool) or not isinstance(start_line, int) or start_line < 1:
            raise ValueError("start_line must be a whole number, 1 or more.")
        if isinstance(max_lines, bool) or not isinstance(max_lines, int) \
                or not 1 <= max_lines <= _MAX_LINES:
            raise ValueError(f"max_lines must be a whole number from 1 to {_MAX_LINES}.")
        grants = self._grants()
        if not self._clean(path):
            raise ValueError("Give the path of a file to read; list_folder shows what is there.")
        real, info, shown = self._locate(path, grants)
        if stat.S_ISDIR(info.st_mode):
            raise ValueError(f"'{shown}' is a folder; use list_folder to see what it contains.")
        data = self._read_bytes(real, info, shown)
        if _looks_binary(data):
            raise ValueError(f"{_shown(real)} looks like a binary file (not text), so it cannot "
                             f"be read.")
        lines = _split_lines(_decode(data))
        if not lines:
            return f"File {_shown(real)} is empty."
        if start_line > len(lines):
            raise ValueError(f"start_line {start_line} is past the end: {_shown(real)} has "
                             f"{len(lines)} line{'s' if len(lines) != 1 else ''}.")
        return self._excerpt(real, lines, start_line, max_lines)

    # ---- paths -------------------------------------------------------------------------

    def _grants(self) -> list[_Grant]:
        """The granted folders that exist now, resolved; refuses when there are none."""
        given = list(self._granted() or [])
        if not given:
            raise ValueError(_NO_GRANT)
        grants: list[_Grant] = []
        for folder in given:
            try:
                real = Path(folder).expanduser().resolve(strict=True)
            except (OSError, RuntimeError):
                continue  # a folder that vanished or cannot be reached grants nothing
            if real.is_dir() and all(g.real != real for g in grants):
                grants.append(_Grant(Path(folder), real))
        if not grants:
            raise ValueError("None of the granted folders exists any more. Ask the user to grant "
                             "a folder in the Tools panel.")
        return grants

    @staticmethod
    def _clean(path: str) -> str:
        if not isinstance(path, str):
            raise ValueError("path must be text.")
        if "\0" in path:
            raise ValueError("The path contains a NUL character.")
        if len(path) > _MAX_PATH_CHARS:
            raise ValueError("The path is too long.")
        return path.strip()

    @staticmethod
    def _describe_grants(grants: list[_Grant]) -> str:
        lines = ["Shared folders (use a name below as the start of a relative path, or an "
                 "absolute path):"]
        lines += [f"{_printable(g.given.name or str(g.real))}/ ({_shown(g.real)})" for g in grants]
        return "\n".join(lines)

    def _candidates(self, text: str, grants: list[_Grant]) -> list[Path]:
        """Where a path may point, in order of preference."""
        given = Path(text)
        if given.is_absolute():
            return [given]
        if given.drive or given.root:  # Windows "C:foo" or "\\foo": neither relative nor absolute
            raise ValueError(f"'{_printable(text)}' is not a usable path; give an absolute path or "
                             f"one relative to a shared folder.")
        if text.startswith("~"):
            raise ValueError(f"'~' is not expanded; give an absolute path or one relative to a "
                             f"shared folder ({self._grant_names(grants)}).")
        candidates: list[Path] = []
        if len(grants) == 1:
            candidates.append(grants[0].real / given)
        if given.parts:
            first, rest = given.parts[0], given.parts[1:]
            for grant in grants:
                if first in (grant.given.name, grant.real.name):
                    candidates.append(grant.real.joinpath(*rest))
        if not candidates:
            raise ValueError(f"'{_printable(text)}' does not start with the name of a shared folder. "
                             f"Start it with one of: {self._grant_names(grants)}, or give an "
                             f"absolute path.")
        return candidates

    @staticmethod
    def _grant_names(grants: list[_Grant]) -> str:
        return ", ".join(_printable(g.given.name or str(g.real)) for g in grants)

    def _locate(self, path: str, grants: list[_Grant]) -> tuple[Path, os.stat_result, str]:
        """The real path inside a grant, its stat, and the path as the caller wrote it.

        Containment is decided before existence, so the answer for a path outside the grant
        is the same whether or not something exists there.
        """
        text = self._clean(path)
        shown = _printable(text)
        roots = [g.real for g in grants]
        inside: list[Path] = []
        unresolvable = False
        for candidate in self._candidates(text, grants):
            try:
                real = candidate.resolve(strict=False)
            except (OSError, RuntimeError):  # symbolic link loop, unreadable component
                unresolvable = True
                continue
            if _inside(real, roots):
                inside.append(real)
        if not inside and unresolvable:
            raise ValueError(f"Cannot follow the symbolic links in '{shown}' (a loop?).")
        if not inside:
            raise ValueError(f"'{shown}' is outside the folders the user shared "
                             f"({', '.join(_shown(r) for r in roots)}); only those can be read.")
        for real in inside:
            try:
                info = os.stat(real)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                raise ValueError(f"Cannot open '{shown}' (permission denied or a broken link).") from None
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                raise ValueError(f"'{shown}' is not a regular file or folder (a device, pipe or "
                                 f"socket), so it cannot be read.")
            return real, info, shown
        raise ValueError(f"There is no file or folder '{shown}' in the shared folders.")

    # ---- reading -----------------------------------------------------------------------

    def _read_bytes(self, real: Path, info: os.stat_result, shown: str) -> bytes:
        limit = self._max_file_bytes
        if info.st_size > limit:
            raise ValueError(f"{_shown(real)} is {_human_size(info.st_size)}, larger than the "
                             f"{_human_size(limit)} that can be read.")
        # O_NOFOLLOW and O_NONBLOCK: if the file was swapped for a link or a pipe since the
        # checks above, fail instead of escaping or waiting forever.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
            | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(real, flags)
        except OSError:
            raise ValueError(f"Cannot open '{shown}' (permission denied or it changed).") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ValueError(f"'{shown}' is not a regular file, so it cannot be read.")
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"{_shown(real)} is larger than the {_human_size(limit)} that can "
                             f"be read.")
        return data

    def _excerpt(self, real: Path, lines: list[str], start_line: int, max_lines: int) -> str:
        chosen: list[str] = []
        used = 0
        for line in lines[start_line - 1:start_line - 1 + max_lines]:
            if used + len(line) > self._max_chars:
                if not chosen:  # one enormous line: show its beginning rather than nothing
                    chosen.append(line[:self._max_chars] + " [line cut short]")
                break
            chosen.append(line)
            used += len(line) + 1
        last = start_line + len(chosen) - 1
        header = f"File {_shown(real)}, lines {start_line}-{last} of {len(lines)}"
        if last < len(lines):
            header += f" (more from start_line={last + 1})"
        return header + ":\n" + "\n".join(chosen)

    # ---- listing -----------------------------------------------------------------------

    @staticmethod
    def _describe_entry(entry: os.DirEntry, roots: list[Path]) -> tuple[int, str, str]:
        """(group, sort name, line): folders are group 0, files 1, anything else 2."""
        name = _printable(entry.name)
        try:
            if entry.is_symlink():
                return FileAccess._describe_link(entry, name, roots)
            if entry.is_dir(follow_symlinks=False):
                return 0, name, f"{name}/ (folder)"
            if entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                return 1, name, f"{name} (file, {_human_size(size)})"
            return 2, name, f"{name} (not a regular file; cannot be read)"
        except OSError:
            return 2, name, f"{name} (unreadable)"

    @staticmethod
    def _describe_link(entry: os.DirEntry, name: str, roots: list[Path]) -> tuple[int, str, str]:
        try:
            target = Path(entry.path).resolve(strict=False)
        except (OSError, RuntimeError):
            return 2, name, f"{name} (broken link)"
        if not _inside(target, roots):
            # Say nothing about the target: not its type, size, or whether it exists.
            return 2, name, f"{name} (link to outside the shared folders; cannot be read)"
        try:
            info = os.stat(target)
        except OSError:
            return 2, name, f"{name} (broken link)"
        if stat.S_ISDIR(info.st_mode):
            return 0, name, f"{name}/ (folder, link)"
        if stat.S_ISREG(info.st_mode):
            return 1, name, f"{name} (file, {_human_size(info.st_size)}, link)"
        return 2, name, f"{name} (link to something that is not a regular file)"
