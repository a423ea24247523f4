"""Stored runs: what a run compared, and every answer with its trace and verdict.

A run is a folder under the lab's data folder::

    runs/2026-12-02-231045-arithmetic/
        run.json        what was compared: the candidates, the model, the seed, its status
        task_set.json   the task set as it was when the run started (the report never depends
                        on a file the user has edited since)
        results.jsonl   one line per answer, appended (and flushed) as each is judged

Appending one line per answer is what makes an interrupted run resumable: whatever was judged
is on disk, a line torn by a crash is ignored, and resuming answers only what is missing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from desktop_app.api import atomic_write_text

from desktop_app_lab.candidates import Candidate, candidate_from_dict
from desktop_app_lab.tasks import TaskSet, TaskSetError, load_task_set, save_task_set, slug

__all__ = ["Run", "RunStore", "conversation_export", "result_key"]

STATUSES = ("new", "running", "stopped", "failed", "finished")


def result_key(record: dict[str, Any]) -> tuple[str, str, int | None]:
    """What a result answers: (candidate, item, instruction variant)."""
    return record["candidate"], record["item"], record.get("variant")


@dataclass
class Run:
    """One run of a task set's candidates; its answers are appended as they are judged."""

    id: str
    folder: Path
    created: str
    task_set_name: str
    candidates: list[Candidate]
    model: str = ""
    seed: int = 17
    #: Measure prompt sensitivity: answer with each of the set's paraphrased instructions too.
    paraphrases: bool = False
    #: The candidate whose instruction is paraphrased (default: the first).
    sensitivity_candidate: str = ""
    #: Answer several items at once in the engine's batch (much faster). Batched greedy answers
    #: can differ from one-at-a-time answers in a rare token (floating-point rounding depends on
    #: the batch), so a run that must be reproducible to the token answers one at a time.
    batched: bool = True
    status: str = "new"
    message: str = ""
    #: What the run made before answering, kept so a resumed run reuses it (e.g. the
    #: collection of the set's documents, the adapter trained on its train split).
    prepared: dict[str, Any] = field(default_factory=dict)
    judge: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)

    # -- files -----------------------------------------------------------------------------------
    @property
    def task_set_file(self) -> Path:
        """The run's own copy of the task set (edits to the user's set do not change a run)."""
        return self.folder / "task_set.json"

    @property
    def results_file(self) -> Path:
        """The answers, one JSON line each, appended as they are judged."""
        return self.folder / "results.jsonl"

    def task_set(self) -> TaskSet:
        """The task set as it was when the run started."""
        return load_task_set(self.task_set_file)

    def to_dict(self) -> dict[str, Any]:
        """What run.json keeps (not the results, which have their own file)."""
        return {"id": self.id, "created": self.created, "task_set": self.task_set_name, "model": self.model,
                "seed": self.seed, "paraphrases": self.paraphrases, "batched": self.batched,
                "sensitivity_candidate": self.sensitivity_candidate, "status": self.status,
                "message": self.message, "prepared": self.prepared, "judge": self.judge,
                "candidates": [c.to_dict() | {"description": c.describe()} for c in self.candidates]}

    def save(self) -> None:
        """Write run.json (atomically: a crash leaves the old or the new one, never half)."""
        atomic_write_text(self.folder / "run.json", json.dumps(self.to_dict(), indent=2, ensure_ascii=False))

    def record(self, result: dict[str, Any]) -> None:
        """Keep one judged answer: appended and flushed to disk before the next is asked."""
        line = json.dumps(result, ensure_ascii=False)
        with self.results_file.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
        self.results.append(result)

    # -- what is done ---------------------------------------------------------------------------
    def done(self) -> set[tuple[str, str, int | None]]:
        """The (candidate, item, variant) answers already judged."""
        return {result_key(r) for r in self.results}

    def latest(self) -> list[dict[str, Any]]:
        """The results, one per (candidate, item, variant) (the last kept, should one repeat)."""
        by_key = {result_key(r): r for r in self.results}
        return list(by_key.values())

    def candidate(self, name: str) -> Candidate:
        """A candidate of this run by name (or its spec); TaskSetError listing them."""
        for c in self.candidates:
            if name in (c.name, c.spec):
                return c
        lowered = name.lower()
        matches = [c for c in self.candidates if c.name.lower().startswith(lowered)]
        if len(matches) == 1:
            return matches[0]
        names = ", ".join(repr(c.name) for c in self.candidates)
        raise TaskSetError(f"Run {self.id} has no candidate {name!r}. Its candidates: {names}.")


def _read_results(path: Path) -> list[dict[str, Any]]:
    """The judged answers of a results file; a torn or damaged line (a crash mid-write) is
    skipped, so the answer it held is simply asked again on resume."""
    if not path.exists():
        return []
    results = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("candidate"), str) and isinstance(record.get("item"), str):
            results.append(record)
    return results


class RunStore:
    """The runs in a folder (the lab keeps them in its data folder, under ``runs``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def create(self, task_set: TaskSet, candidates: list[Candidate], *, model: str = "",
               paraphrases: bool = False, sensitivity_candidate: str = "", judge: str = "",
               batched: bool = True) -> Run:
        """A new run folder with its copy of the task set; nothing answered yet."""
        if not candidates:
            raise TaskSetError("A run needs at least one candidate.")
        if not task_set.test:
            raise TaskSetError(f"The task set {task_set.name!r} has no held-out (test) items to score.")
        if paraphrases and not task_set.paraphrases:
            raise TaskSetError(f"The task set {task_set.name!r} has no paraphrased instructions to compare; "
                               "add some under \"paraphrases\".")
        short = [c for c in candidates if c.shots > len(task_set.train)]
        if short:
            raise TaskSetError(f"{short[0].name} shows {short[0].shots} worked examples from the train split, but "
                               f"{task_set.name!r} has {len(task_set.train)} train items: ask for fewer, or add "
                               "train items to the set.")
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d-%H%M%S")
        base = f"{stamp}-{slug(task_set.name)}"
        run_id, n = base, 2
        while (self.folder / run_id).exists():
            run_id, n = f"{base}-{n}", n + 1
        folder = self.folder / run_id
        folder.mkdir()
        run = Run(id=run_id, folder=folder, created=time.strftime("%Y-%m-%dT%H:%M:%S"), task_set_name=task_set.name,
                  candidates=list(candidates), model=model, seed=task_set.seed, paraphrases=paraphrases,
                  sensitivity_candidate=sensitivity_candidate or (candidates[0].name if paraphrases else ""),
                  judge=judge, batched=batched)
        save_task_set(task_set, run.task_set_file)
        run.save()
        return run

    def get(self, run_id: str) -> Run:
        """A stored run by id (a unique start of it will do, or "latest"), or by its folder.

        TaskSetError naming the recent runs when there is no such run, or saying what is
        damaged in it.
        """
        folder = Path(run_id).expanduser()
        if not (folder / "run.json").exists():
            ids = [r.name for r in self._folders()]
            if run_id == "latest" and ids:
                matches = [ids[0]]
            else:
                matches = [i for i in ids if i == run_id] or [i for i in ids if i.startswith(run_id)]
            if len(matches) != 1:
                recent = ", ".join(ids[:5]) or "none yet"
                what = "matches several runs" if matches else "is not a run"
                raise TaskSetError(f"{run_id!r} {what}. Recent runs: {recent}.")
            folder = self.folder / matches[0]
        return self._load(folder)

    def _load(self, folder: Path) -> Run:
        try:
            data = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TaskSetError(f"The run in {folder} cannot be read ({exc}).") from None
        if not isinstance(data, dict) or not isinstance(data.get("candidates"), list):
            raise TaskSetError(f"The run in {folder} is damaged: run.json has no candidates.")
        try:
            candidates = [candidate_from_dict(c) for c in data["candidates"]]
        except TypeError as exc:
            raise TaskSetError(f"The run in {folder} is damaged: a candidate is malformed ({exc}).") from None
        status = data.get("status") if data.get("status") in STATUSES else "stopped"
        try:
            seed, prepared = int(data.get("seed", 17)), dict(data.get("prepared") or {})
        except (TypeError, ValueError) as exc:
            raise TaskSetError(f"The run in {folder} is damaged: its seed or prepared parts are malformed "
                               f"({exc}).") from None
        return Run(id=str(data.get("id") or folder.name), folder=folder, created=str(data.get("created", "")),
                   task_set_name=str(data.get("task_set", "")), candidates=candidates,
                   model=str(data.get("model") or ""), seed=seed, paraphrases=bool(data.get("paraphrases")),
                   sensitivity_candidate=str(data.get("sensitivity_candidate") or ""), status=status,
                   batched=bool(data.get("batched", True)),
                   message=str(data.get("message") or ""), prepared=prepared,
                   judge=str(data.get("judge") or ""), results=_read_results(folder / "results.jsonl"))

    def _folders(self) -> list[Path]:
        if not self.folder.exists():
            return []
        return sorted((p for p in self.folder.iterdir() if (p / "run.json").exists()),
                      key=lambda p: p.name, reverse=True)

    def list(self) -> list[Run]:
        """The stored runs, newest first; a damaged one is left out (``get`` says why)."""
        runs = []
        for folder in self._folders():
            try:
                runs.append(self._load(folder))
            except TaskSetError:
                continue
        return runs

    def __iter__(self) -> Iterator[Run]:
        return iter(self.list())


def conversation_export(run: Run, record: dict[str, Any], task_set: TaskSet) -> dict[str, Any]:
    """One answer of a run as conversation export data (``context.conversations.import_json``),
    so the user can open it in the chat, see its prompt in the inspector and carry on with the
    same setup."""
    item = task_set.item(record["item"])
    verdict = "right" if record.get("passed") else "wrong"
    answer_stats = dict(record.get("stats") or {})
    answer_stats["lab"] = {"run": run.id, "candidate": record["candidate"], "verdict": verdict,
                           "detail": record.get("detail", ""), "expected": record.get("expected")}
    return {
        "format": "parley-conversation/1",
        "title": f"Lab · {record['candidate']} · {item.id} ({verdict})",
        "model": run.model or None,
        "system_prompt": None,
        "meta": dict((record.get("setup") or {}).get("plugins") or {}),
        "messages": [
            {"id": 1, "parent_id": None, "role": "user", "content": item.input},
            {"id": 2, "parent_id": 1, "role": "assistant", "content": record.get("answer") or "",
             "model": run.model or None, "stats": answer_stats,
             "status": "complete" if not record.get("error") else "error",
             "trace": {"prompt": record.get("prompt", ""), "entries": record.get("trace", [])}},
        ],
    }
