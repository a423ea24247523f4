"""The adapter library: GGUF LoRA files copied into the data folder's ``adapters/``.

``adapters/index.json`` names each file and keeps its metadata, where it came from, and the
adapters new conversations start with. The folder is the truth: a GGUF file dropped into it
joins the library, an entry whose file vanished leaves it, and a damaged index is moved
aside and rebuilt from the files, so no adapter is ever lost to a bad write.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from desktop_app.api import atomic_write_text, move_aside
from desktop_app_lora.adapters import AdapterError, AdapterInfo, read_adapter_info

__all__ = ["AdapterEntry", "AdapterLibrary", "Choice", "MAX_SCALE"]

#: The scale slider's range is 0 to MAX_SCALE (1 = as trained).
MAX_SCALE = 2.0


@dataclass
class AdapterEntry:
    """An adapter in the library. ``file`` is its name inside the adapters folder, or, for an
    adapter another plugin provides (``plugin`` names it), the full path of a file used in place."""

    name: str
    file: str
    added: float = 0.0
    source: str = ""
    info: dict[str, Any] | None = None
    plugin: str | None = None


@dataclass
class Choice:
    """One adapter chosen for a conversation, at a scale between 0 and MAX_SCALE."""

    name: str
    scale: float = 1.0

    @classmethod
    def parse(cls, raw: Any) -> "Choice | None":
        """Read a stored choice, or None when it is malformed."""
        try:
            return cls(str(raw["name"]), clamp_scale(float(raw.get("scale", 1.0))))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def clamp_scale(scale: float) -> float:
    """Keep a scale within 0..MAX_SCALE (a NaN becomes 0)."""
    if scale != scale:
        return 0.0
    return round(min(max(scale, 0.0), MAX_SCALE), 3)


def _entries_from(items: Any) -> list["AdapterEntry"]:
    """The index's entries one by one: a damaged or newer-format entry costs only itself."""
    fields = set(AdapterEntry.__dataclass_fields__)
    entries = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            entries.append(AdapterEntry(**{k: v for k, v in item.items() if k in fields}))
        except TypeError:
            continue  # a required field is missing
    return entries


class AdapterLibrary:
    """The user's adapters. Safe to use from several threads."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.index_file = folder / "index.json"
        self._lock = threading.RLock()
        self._entries: list[AdapterEntry] = []
        #: Adapters other plugins provide (register_adapters): listed for this session, never saved.
        self._provided: list[AdapterEntry] = []
        self._defaults: list[Choice] = []
        #: Names and files being copied in by ``add`` (the copy runs without the lock).
        self._pending: dict[str, Path] = {}
        self._load()

    # -- the index ------------------------------------------------------------------------
    def _load(self) -> None:
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            raw: dict[str, Any] = {}
            if self.index_file.exists():
                text = self.index_file.read_text(encoding="utf-8")  # a read error is not damage
                try:
                    raw = json.loads(text)
                    if not isinstance(raw, dict):
                        raise ValueError("not an object")
                except ValueError:
                    move_aside(self.index_file)
                    raw = {}
                entries = _entries_from(raw.get("adapters", []))
            else:
                entries = []
            self._entries = [e for e in entries if (self.folder / e.file).is_file()]
            self._defaults = [c for c in map(Choice.parse, raw.get("defaults", [])) if c]
            known = {e.file for e in self._entries}
            changed = len(self._entries) != len(entries)
            for path in sorted(self.folder.glob("*.gguf")):
                if path.name not in known:
                    try:
                        info = read_adapter_info(path)
                    except AdapterError:
                        continue  # not an adapter (or damaged): left alone, never deleted
                    self._entries.append(AdapterEntry(self._unique(path.stem), path.name, path.stat().st_mtime,
                                                      "found in the adapters folder", info.summary()))
                    changed = True
            if changed:
                self._save()

    def _save(self) -> None:
        # Someone else (the command line, another window) may have changed the index since it
        # was read: keep their entries too, then write ours over them.
        if self.index_file.exists():
            try:
                theirs = _entries_from(json.loads(self.index_file.read_text(encoding="utf-8")).get("adapters", []))
            except (OSError, ValueError, AttributeError):
                theirs = []
            known = {e.file for e in self._entries}
            self._entries += [e for e in theirs if e.file not in known and (self.folder / e.file).is_file()]
        data = {"adapters": [asdict(e) for e in self._entries],
                "defaults": [asdict(c) for c in self._defaults]}
        atomic_write_text(self.index_file, json.dumps(data, indent=2))

    def _unique(self, base: str) -> str:
        taken = {e.name for e in self._entries + self._provided} | set(self._pending)
        unique, n = base, 2
        while unique in taken:
            unique, n = f"{base} ({n})", n + 1
        return unique

    # -- reading --------------------------------------------------------------------------
    def entries(self) -> list[AdapterEntry]:
        """All adapters, in the order they were added; those other plugins provide last."""
        with self._lock:
            return self._entries + self._provided

    def get(self, name: str) -> AdapterEntry:
        """The adapter called ``name``; AdapterError listing the names if there is none."""
        with self._lock:
            for entry in self.entries():
                if entry.name == name:
                    return entry
            names = ", ".join(e.name for e in self.entries()) or "none yet"
        raise AdapterError(f"There is no adapter called {name!r}. Adapters: {names}.")

    def find(self, name: str) -> AdapterEntry | None:
        """The adapter called ``name``, or None."""
        with self._lock:
            return next((e for e in self.entries() if e.name == name), None)

    def path(self, entry: AdapterEntry) -> Path:
        """The adapter's file."""
        return Path(entry.file) if entry.plugin else self.folder / entry.file

    def info(self, name: str) -> AdapterInfo:
        """An adapter's metadata, read from its file (so a damaged file is noticed)."""
        return read_adapter_info(self.path(self.get(name)))

    # -- changing -------------------------------------------------------------------------
    def add(self, path: Path | str, *, name: str | None = None, source: str | None = None,
            move: bool = False) -> AdapterEntry:
        """Check a GGUF LoRA file and copy it into the library (``move`` for files Parley made).

        The file is checked before anything is copied, so a bad file changes nothing. The
        name and file are reserved first and the copy runs without the library's lock, so
        the window can list adapters while a large one is copied in.
        """
        source_path = Path(path).expanduser()
        info = read_adapter_info(source_path)
        with self._lock:
            base = (name or "").strip() or source_path.stem
            unique = self._unique(base)
            target = self.folder / _file_name(unique)
            stem, k = target.stem, 2
            while target.exists() or target in self._pending.values():
                target, k = target.with_name(f"{stem}-{k}.gguf"), k + 1
            self._pending[unique] = target
        partial = target.with_name(f".{target.name}.part")
        try:
            if move:
                shutil.move(str(source_path), str(partial))
            else:
                shutil.copyfile(source_path, partial)
            partial.replace(target)
        except BaseException:
            if move and partial.exists():
                # The only copy (e.g. hours of training): put it back, never delete it.
                shutil.move(str(partial), str(source_path))
            else:
                partial.unlink(missing_ok=True)
            with self._lock:
                del self._pending[unique]
            raise
        with self._lock:
            del self._pending[unique]
            info.path = str(target)
            entry = AdapterEntry(unique, target.name, time.time(), source or f"added from {source_path}",
                                 info.summary())
            self._entries.append(entry)
            self._save()
            return entry

    def remove(self, name: str) -> AdapterEntry:
        """Remove an adapter and delete its file (it was a copy)."""
        with self._lock:
            entry = self._own(name)
            self._entries.remove(entry)
            self._defaults = [c for c in self._defaults if c.name != name]
            # The file goes first, so saving does not take the entry back from the index file.
            self.path(entry).unlink(missing_ok=True)
            self._save()
        return entry

    def rename(self, name: str, new_name: str) -> AdapterEntry:
        """Give an adapter another name (its file keeps its own)."""
        new_name = new_name.strip()
        with self._lock:
            entry = self._own(name)
            if not new_name:
                raise AdapterError("An adapter needs a name.")
            if new_name != name and (self.find(new_name) or new_name in self._pending):
                raise AdapterError(f"There already is an adapter called {new_name!r}.")
            entry.name = new_name
            self._defaults = [Choice(new_name, c.scale) if c.name == name else c for c in self._defaults]
            self._save()
            return entry

    def provide(self, name: str, path: Path | str, plugin: str) -> AdapterEntry:
        """List an adapter another plugin provides; it is used in place, never copied or deleted.

        Raises AdapterError (nothing is listed) when the file is not a usable adapter.
        """
        path = Path(path).expanduser().resolve()
        info = read_adapter_info(path)
        with self._lock:
            entry = AdapterEntry(self._unique(name.strip() or path.stem), str(path), time.time(),
                                 f"from the plugin {plugin}", info.summary(), plugin)
            self._provided.append(entry)
            return entry

    def _own(self, name: str) -> AdapterEntry:
        entry = self.get(name)
        if entry.plugin:
            raise AdapterError(f"“{name}” comes from the plugin {entry.plugin}; switch that plugin off "
                               "(Settings → Plugins) to take it away.")
        return entry

    # -- adapters for new conversations ---------------------------------------------------
    def defaults(self) -> list[Choice]:
        """The adapters new conversations start with."""
        with self._lock:
            return [Choice(c.name, c.scale) for c in self._defaults]

    def set_defaults(self, choices: list[Choice]) -> None:
        """Set the adapters new conversations start with."""
        with self._lock:
            self._defaults = [Choice(c.name, clamp_scale(c.scale)) for c in choices]
            self._save()


def _file_name(name: str) -> str:
    """A safe file name for an adapter called ``name``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-.") or "adapter"
    return f"{safe[:80]}.gguf"

