"""The task sets a person can run: the four shipped with Parley and their own.

The shipped sets live inside the plugin and are never written to; the user's sets are JSON files
in the lab's data folder. Adding an item to a shipped set (from a conversation, say) first copies
the set into the user's folder, so the shipped file stays as it came and the copy keeps the
documents folder it points at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop_app_lab.tasks import (TaskItem, TaskSet, TaskSetError, import_items, load_task_set,
                                   save_task_set, slug)

__all__ = ["SHIPPED_FOLDER", "SetEntry", "TaskSetLibrary"]

#: The sets shipped with the plugin (arithmetic, classification, extraction, handbook Q&A).
SHIPPED_FOLDER = Path(__file__).parent / "sets"


@dataclass
class SetEntry:
    """One set as a list shows it; ``problem`` says why a file cannot be read (then items is 0)."""

    name: str
    path: Path
    shipped: bool
    items: int = 0
    test: int = 0
    check: str = ""
    documents: bool = False
    problem: str = ""


class TaskSetLibrary:
    """The shipped sets and the user's sets in ``user_folder``, found by name or file."""

    def __init__(self, user_folder: Path, shipped_folder: Path = SHIPPED_FOLDER):
        self.user_folder = Path(user_folder)
        self.shipped_folder = Path(shipped_folder)

    # -- listing -------------------------------------------------------------------------------
    def _files(self) -> list[tuple[Path, bool]]:
        files = [(p, True) for p in sorted(self.shipped_folder.glob("*.json"))]
        if self.user_folder.is_dir():
            files += [(p, False) for p in sorted(self.user_folder.glob("*.json"))]
        return files

    def entries(self) -> list[SetEntry]:
        """Every set, shipped first; a file that cannot be read is listed with its problem."""
        found = []
        for path, shipped in self._files():
            try:
                task_set = load_task_set(path)
            except TaskSetError as exc:
                found.append(SetEntry(path.stem, path, shipped, problem=str(exc)))
                continue
            found.append(SetEntry(task_set.name, path, shipped, len(task_set.items), len(task_set.test),
                                  str(task_set.check.get("kind", "")), task_set.documents is not None))
        return found

    def names(self) -> list[str]:
        """The names of the sets that can be read."""
        return [e.name for e in self.entries() if not e.problem]

    def find(self, name_or_path: str | Path) -> Path:
        """The file of a set named ``name_or_path`` (its name, its file's stem, case ignored), or
        that file itself. The user's set wins over a shipped one of the same name.
        TaskSetError listing the sets when there is none."""
        text = str(name_or_path).strip()
        candidate = Path(text).expanduser()
        if candidate.suffix and candidate.is_file():
            return candidate
        wanted = {text.lower(), slug(text)}
        matches = [e for e in self.entries() if e.name.lower() in wanted or e.path.stem.lower() in wanted
                   or slug(e.name) in wanted]
        if matches:
            return sorted(matches, key=lambda e: e.shipped)[0].path
        names = ", ".join(f"{e.path.stem} ({e.name})" for e in self.entries() if not e.problem) or "none"
        raise TaskSetError(f"There is no task set {text!r}. The sets are: {names}. "
                           "Import one with: parley lab import FILE")

    def load(self, name_or_path: str | Path) -> TaskSet:
        """The set named ``name_or_path`` (or read from that JSON, JSONL or CSV file)."""
        return load_task_set(self.find(name_or_path))

    def is_shipped(self, path: Path) -> bool:
        """Whether ``path`` is one of the shipped sets (never written to)."""
        try:
            Path(path).resolve().relative_to(self.shipped_folder.resolve())
        except ValueError:
            return False
        return True

    # -- making sets ---------------------------------------------------------------------------
    def _new_path(self, name: str) -> Path:
        if not name.strip():
            raise TaskSetError("A task set needs a name.")
        taken = {n.lower() for n in self.names()}
        if name.strip().lower() in taken:
            raise TaskSetError(f"There is already a task set named {name!r}; choose another name.")
        path = self.user_folder / f"{slug(name)}.json"
        number = 2
        while path.exists():
            path = self.user_folder / f"{slug(name)}-{number}.json"
            number += 1
        return path

    def check_name_free(self, name: str) -> None:
        """TaskSetError when a set of this name exists (asked before slow work that makes one)."""
        self._new_path(name)

    def create(self, name: str, items: list[TaskItem], *, check: dict[str, Any] | None = None,
               instruction: str = "", description: str = "", documents: Path | None = None) -> Path:
        """Save a new set of the user's; returns its file. TaskSetError when the name is taken."""
        if not items:
            raise TaskSetError("A task set needs at least one item.")
        path = self._new_path(name)
        task_set = TaskSet(name.strip(), list(items), description, instruction,
                           check=dict(check or {"kind": "normalised"}), documents=documents)
        return save_task_set(task_set, path)

    def import_file(self, path: Path | str, *, name: str | None = None,
                    check: dict[str, Any] | None = None) -> Path:
        """Make a set of the user's from a JSONL or CSV file of inputs and answers (or copy a
        JSON set in); returns the new set's file. The file imported from is left as it was."""
        source = Path(path).expanduser().resolve()  # a set's documents folder is relative to its file
        if source.suffix.lower() == ".json":
            task_set = load_task_set(source)
            if name:
                task_set.name = name
            if check:
                task_set.check = dict(check)
            target = self._new_path(task_set.name)
            return save_task_set(task_set, target)
        items = import_items(source)
        title = name or source.stem.replace("_", " ").replace("-", " ").strip() or "Imported"
        return self.create(title, items, check=check, description=f"Imported from {source.name}.")

    def copy(self, name_or_path: str | Path, new_name: str | None = None) -> Path:
        """A user's copy of a set (its documents folder still pointed at); returns the copy's file."""
        task_set = self.load(name_or_path)
        task_set.name = new_name or f"{task_set.name} (mine)"
        documents = task_set.documents
        target = self._new_path(task_set.name)
        task_set.path = None
        task_set.documents = documents.resolve() if documents is not None else None
        return save_task_set(task_set, target)

    def add_item(self, name_or_path: str | Path, input_text: str, expected: Any, *, split: str = "",
                 **extra: Any) -> tuple[TaskSet, TaskItem]:
        """Add an item to a set and save it; a shipped set is first copied into the user's folder
        (the returned set says where it now lives)."""
        path = self.find(name_or_path)
        if self.is_shipped(path):
            mine = f"{load_task_set(path).name} (mine)"
            path = next((e.path for e in self.entries() if not e.shipped and e.name == mine), None) or self.copy(path)
        task_set = load_task_set(path)
        if str(input_text).strip() in {i.input.strip() for i in task_set.items}:
            raise TaskSetError(f"{task_set.name!r} already has an item with this input.")
        item = task_set.add(input_text, expected, split=split, **extra)
        save_task_set(task_set, path)
        return task_set, item

    def expected_from_text(self, task_set: TaskSet, text: str) -> Any:
        """What a person typed as the right answer, in the form the set's check compares: a JSON
        object for JSON checks, a list for contains checks (one per line or comma), else text."""
        kind = task_set.check.get("kind")
        text = text.strip()
        if kind == "json":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TaskSetError(f"The right answer must be a JSON object for this set ({exc.msg}).") from exc
            if not isinstance(value, dict):
                raise TaskSetError("The right answer must be a JSON object for this set.")
            return value
        if kind in ("contains_all", "contains_any"):
            parts = [p.strip() for p in (text.splitlines() if "\n" in text else text.split(","))]
            return [p for p in parts if p]
        return text
