"""Task sets: a small file of inputs, each with what counts as a right answer.

A task set is one JSON file::

    {"name": "Arithmetic word problems",
     "description": "...",
     "instruction": "Answer with the number only.",      # the base instruction candidates start from
     "paraphrases": ["Give only the number.", ...],      # other wordings, to measure prompt sensitivity
     "check": {"kind": "number", "tolerance": 0},        # how answers are judged (an item may override it)
     "documents": "documents",                           # optional: a folder (relative to the file) to ask about
     "seed": 17, "train_fraction": 0.3,                  # how items without a split are split
     "items": [{"id": "q1", "input": "...", "expected": "33", "split": "test"}, ...],
     "judge_labels": [{"item": "q1", "answer": "...", "passed": true}]}   # people's verdicts, to check a judge

Splits are fixed: an item's own ``split`` ("train" or "test") wins; the others are assigned from a
hash of the seed and the item's id, so the same file always splits the same way, and items with
ids of their own keep their split whatever order they are in (an item without one is numbered by
its place). Few-shot examples and LoRA training only ever see the train split; scores come
from the test split.

Importing reads JSONL (one item per line) or CSV (a header row); the input is the first of the
fields ``input``, ``question``, ``prompt``, ``text`` and the expected answer the first of
``expected``, ``answer``, ``output``, ``label``, ``target``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from desktop_app.api import ParleyError, atomic_write_text

__all__ = ["INPUT_FIELDS", "EXPECTED_FIELDS", "TaskItem", "TaskSet", "TaskSetError", "import_items",
           "load_task_set", "save_task_set", "slug"]

INPUT_FIELDS = ("input", "question", "prompt", "text")
EXPECTED_FIELDS = ("expected", "answer", "output", "label", "target")
SPLITS = ("train", "test")
DEFAULT_CHECK = {"kind": "normalised"}


class TaskSetError(ParleyError):
    """A task set file (or an imported one) that cannot be used; the message says where and why."""


@dataclass
class TaskItem:
    """One input and what counts as right for it."""

    id: str
    input: str
    #: The right answer (text, a number, or for JSON checks an object of expected fields).
    expected: Any = ""
    #: "train", "test", or "" (assigned from the set's seed).
    split: str = ""
    #: This item's own check, replacing the set's (e.g. another tolerance).
    check: dict[str, Any] | None = None
    #: Anything else the file had (kept when saved again).
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The item as it is written to the file."""
        data: dict[str, Any] = {"id": self.id, "input": self.input, "expected": self.expected}
        if self.split:
            data["split"] = self.split
        if self.check:
            data["check"] = self.check
        data.update(self.extra)
        return data


@dataclass
class TaskSet:
    """A named list of items with the check that judges their answers."""

    name: str
    items: list[TaskItem] = field(default_factory=list)
    description: str = ""
    instruction: str = ""
    paraphrases: list[str] = field(default_factory=list)
    check: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CHECK))
    #: A folder of documents the questions are about (absolute once loaded), or None.
    documents: Path | None = None
    seed: int = 17
    train_fraction: float = 0.3
    judge_labels: list[dict[str, Any]] = field(default_factory=list)
    #: Where the set was read from (None for one not saved yet).
    path: Path | None = None

    # -- splits --------------------------------------------------------------------------------
    def split_of(self, item: TaskItem) -> str:
        """The split an item belongs to: its own, else one fixed by the seed and its id."""
        if item.split:
            return item.split
        digest = hashlib.sha256(f"{self.seed}:{item.id}".encode()).digest()
        return "train" if int.from_bytes(digest[:8], "big") / 2**64 < self.train_fraction else "test"

    def split(self, name: str) -> list[TaskItem]:
        """The items of one split ("train" or "test"), in file order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}")
        return [item for item in self.items if self.split_of(item) == name]

    @property
    def train(self) -> list[TaskItem]:
        """Items few-shot examples, prompt search and LoRA training may use."""
        return self.split("train")

    @property
    def test(self) -> list[TaskItem]:
        """The held-out items scores come from."""
        return self.split("test")

    def item(self, item_id: str) -> TaskItem:
        """One item by id; KeyError when there is none."""
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def check_for(self, item: TaskItem) -> dict[str, Any]:
        """The check an item is judged by: its own, else the set's."""
        return item.check or self.check

    # -- editing -------------------------------------------------------------------------------
    def add(self, input_text: str, expected: Any, *, split: str = "", check: dict[str, Any] | None = None,
            **extra: Any) -> TaskItem:
        """Add an item with a fresh id and return it."""
        if not str(input_text).strip():
            raise TaskSetError("An item needs an input.")
        if split and split not in SPLITS:
            raise TaskSetError(f"Split must be train or test, not {split!r}.")
        taken = {i.id for i in self.items}
        number = len(self.items) + 1
        while f"item-{number}" in taken:
            number += 1
        item = TaskItem(f"item-{number}", str(input_text), expected, split, check, dict(extra))
        self.items.append(item)
        return item

    def to_dict(self) -> dict[str, Any]:
        """The set as it is written to its file (documents relative to it where possible)."""
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        if self.instruction:
            data["instruction"] = self.instruction
        if self.paraphrases:
            data["paraphrases"] = list(self.paraphrases)
        data["check"] = self.check
        if self.documents is not None:
            documents = self.documents
            if self.path is not None:
                try:
                    documents = documents.relative_to(self.path.parent)
                except ValueError:
                    pass
            data["documents"] = str(documents)
        data["seed"] = self.seed
        data["train_fraction"] = self.train_fraction
        data["items"] = [item.to_dict() for item in self.items]
        if self.judge_labels:
            data["judge_labels"] = self.judge_labels
        return data

    def fingerprint(self) -> str:
        """A short hash of what decides the scores (items, checks, split), to tell a changed set."""
        data = self.to_dict()
        data.pop("description", None)
        data.pop("documents", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def slug(name: str) -> str:
    """A file name for a set's name ("Arithmetic word problems" → "arithmetic-word-problems")."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text or "task-set"


def _item_from(record: Any, where: str, index: int) -> TaskItem:
    if not isinstance(record, dict):
        raise TaskSetError(f"{where}: item {index} is not an object with an input and an expected answer.")
    known = {k.lower(): k for k in record}
    input_key = next((known[k] for k in INPUT_FIELDS if k in known), None)
    expected_key = next((known[k] for k in EXPECTED_FIELDS if k in known), None)
    if input_key is None or record[input_key] is None or not str(record[input_key]).strip():
        raise TaskSetError(f"{where}: item {index} has no input (a field named one of {', '.join(INPUT_FIELDS)}).")
    if expected_key is None:
        raise TaskSetError(f"{where}: item {index} has no expected answer "
                           f"(a field named one of {', '.join(EXPECTED_FIELDS)}).")
    if record[expected_key] is None or record[expected_key] in ("", [], {}):
        raise TaskSetError(f"{where}: item {index} has an empty expected answer.")
    split = str(record.get("split") or "").strip().lower()
    if split and split not in SPLITS:
        raise TaskSetError(f"{where}: item {index} has split {split!r}; use train or test (or leave it out).")
    check = record.get("check")
    if check is not None:
        _valid_check(check, f"{where}: item {index}")
    used = {input_key, expected_key, "id", "split", "check"}
    extra = {k: v for k, v in record.items() if k not in used}
    item_id = str(record.get("id") or f"item-{index}")
    return TaskItem(item_id, str(record[input_key]), record[expected_key], split, check, extra)


def _valid_check(check: Any, where: str) -> None:
    """TaskSetError naming ``where`` when a check cannot judge anything (an unknown kind, a bad
    pattern or schema), so a broken set is refused when read, not minutes into a run."""
    from desktop_app_lab.checks import validate_check  # checks imports this module

    if not isinstance(check, dict) or not check.get("kind"):
        raise TaskSetError(f"{where}: a check must be an object with a kind, e.g. {{\"kind\": \"exact\"}}.")
    try:
        validate_check(check)
    except ParleyError as exc:
        raise TaskSetError(f"{where}: {exc}") from exc


def _labels(labels: Any, items: list[TaskItem], where: str) -> list[dict[str, Any]]:
    """The judge's human labels, checked: each names an item, an answer and whether it is right."""
    if not isinstance(labels, list):
        raise TaskSetError(f"{where}: judge_labels must be a list.")
    ids = {item.id for item in items}
    for n, label in enumerate(labels, 1):
        if isinstance(label, dict) and "item" in label and label["item"] not in ids:
            raise TaskSetError(f"{where}: judge label {n} is for the item {label['item']!r}, which the set does "
                               "not have: remove the label or put the item back.")
        if not (isinstance(label, dict) and label.get("item") in ids and isinstance(label.get("answer"), str)
                and isinstance(label.get("passed"), bool)):
            raise TaskSetError(f"{where}: judge label {n} must name an item of the set (\"item\"), an answer "
                               f"(\"answer\") and whether it is right (\"passed\": true or false).")
    return list(labels)


def _unique(items: list[TaskItem], where: str) -> list[TaskItem]:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise TaskSetError(f"{where}: two items have the id {item.id!r}; ids must be unique.")
        seen.add(item.id)
    return items


def import_items(path: Path | str, text: str | None = None) -> list[TaskItem]:
    """Read items from a JSONL or CSV file (by its suffix; ``text`` instead of reading it)."""
    path = Path(path)
    where = path.name
    if text is None:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise TaskSetError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
        except UnicodeDecodeError as exc:
            raise TaskSetError(f"{path} is not UTF-8 text.") from exc
    suffix = path.suffix.lower()
    records: list[Any] = []
    if suffix in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TaskSetError(f"{where}, line {number}: not JSON ({exc.msg}).") from exc
    elif suffix in (".csv", ".tsv"):
        dialect = "excel-tab" if suffix == ".tsv" else "excel"
        reader = csv.DictReader(io.StringIO(text), dialect=dialect)
        if not reader.fieldnames:
            raise TaskSetError(f"{where} is empty: a CSV file needs a header row (e.g. input,expected).")
        records = [{k: v for k, v in row.items() if k is not None} for row in reader]
    else:
        raise TaskSetError(f"{where}: import a .jsonl or .csv file (one item per line or row).")
    if not records:
        raise TaskSetError(f"{where} has no items.")
    items = [_item_from(record, where, i) for i, record in enumerate(records, 1)]
    return _unique(items, where)


def task_set_from_dict(data: Any, where: str = "task set", path: Path | None = None) -> TaskSet:
    """A task set from its file's data; TaskSetError names what is wrong."""
    if not isinstance(data, dict) or not str(data.get("name") or "").strip():
        raise TaskSetError(f"{where}: a task set is an object with a name and items.")
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise TaskSetError(f"{where}: the task set has no items.")
    items = _unique([_item_from(r, where, i) for i, r in enumerate(raw_items, 1)], where)
    check = data.get("check") or dict(DEFAULT_CHECK)
    _valid_check(check, where)
    paraphrases = data.get("paraphrases") or []
    if not isinstance(paraphrases, list) or not all(isinstance(p, str) for p in paraphrases):
        raise TaskSetError(f"{where}: paraphrases must be a list of instructions.")
    documents = data.get("documents")
    folder = None
    if documents:
        folder = Path(str(documents)).expanduser()
        if not folder.is_absolute() and path is not None:
            folder = path.parent / folder
    try:
        seed = int(data.get("seed", 17))
        fraction = float(data.get("train_fraction", 0.3))
    except (TypeError, ValueError) as exc:
        raise TaskSetError(f"{where}: seed must be a whole number and train_fraction a number.") from exc
    if not 0.0 <= fraction < 1.0:
        raise TaskSetError(f"{where}: train_fraction must be at least 0 and below 1, not {fraction}.")
    labels = _labels(data.get("judge_labels") or [], items, where)
    return TaskSet(str(data["name"]).strip(), items, str(data.get("description") or ""),
                   str(data.get("instruction") or ""), list(paraphrases), dict(check), folder, seed,
                   fraction, list(labels), path)


def load_task_set(path: Path | str) -> TaskSet:
    """Read a task set: its JSON file, or a JSONL/CSV file imported as a set named after it."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".json":
        items = import_items(path)
        return TaskSet(path.stem.replace("_", " ").replace("-", " ").strip() or "Imported", items, path=None)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskSetError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaskSetError(f"{path.name} is not a JSON task set ({exc}).") from exc
    return task_set_from_dict(data, path.name, path)


def save_task_set(task_set: TaskSet, path: Path | str | None = None) -> Path:
    """Write a task set (atomically) to ``path`` or where it came from; returns the path."""
    target = Path(path) if path is not None else task_set.path
    if target is None:
        raise TaskSetError("Say where to save the task set.")
    if task_set.path is None or Path(target) != task_set.path:
        documents = task_set.documents
        task_set.path = Path(target)
        task_set.documents = documents
    atomic_write_text(Path(target), json.dumps(task_set.to_dict(), indent=1, ensure_ascii=False) + "\n")
    return Path(target)


def items_as_dicts(items: Iterable[TaskItem]) -> list[dict[str, Any]]:
    """Plain dicts of items (for a run's snapshot of its set)."""
    return [asdict(item) for item in items]
