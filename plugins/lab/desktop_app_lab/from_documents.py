"""Question–answer pairs proposed from a collection of the user's documents.

A person with a folder of documents and no task set can start from these: the model reads a
passage and writes one question about it, and its answer is *chosen from the passage's own
phrases* (a grammar allows nothing else), so every proposed answer is really in the documents
and its source is kept. The proposals are drafts: the person reviews them (keeps, edits or drops
each) before they become a set, judged by whether an answer contains the expected phrase.
"""

from __future__ import annotations

import json
import random
import re
import threading
from pathlib import Path
from typing import Any, Callable

from desktop_app.api import ChatMessage, GenerationOptions, PluginContext

from desktop_app_lab.tasks import TaskItem, TaskSetError

__all__ = ["PAIR_CHECK", "answer_phrases", "make_documents_set", "propose_pairs"]

#: How the answers of a set made from documents are judged.
PAIR_CHECK = {"kind": "contains_any"}
#: At most this many phrases are offered to the model as answers for one passage.
MAX_PHRASES = 40

_UNITS = ("days", "day", "weeks", "week", "months", "month", "years", "year", "hours", "hour", "minutes",
          "minute", "working days", "calendar days", "per cent", "percent", "%", "euros", "pounds", "dollars",
          "people", "staff", "am", "pm", "GB", "MB", "characters", "times", "floor", "p.m.", "a.m.")
_NUMBER_PHRASE = re.compile(r"(?<![\w.])[£$€]?\d[\d,.:]*(?:\s?(?:" + "|".join(
    re.escape(u) for u in sorted(_UNITS, key=len, reverse=True)) + r")\b)?")
_MONTHS = ("January February March April May June July August September October November December").split()
_DATE = re.compile(r"\b\d{1,2} (?:" + "|".join(_MONTHS) + r")\b|\b(?:" + "|".join(_MONTHS) + r") \d{1,2}\b")
# names: capitalised words not at the start of a sentence (or runs of them)
_CAPITALISED = re.compile(r"(?<=[a-z,;:] )[A-Z][\w'-]+(?:[ \t]+(?:of[ \t]+|the[ \t]+)?[A-Z][\w'-]+)*")
_WORD = re.compile(r"\b[a-zA-Z][a-zA-Z'-]{5,}\b")
_STOP_WORDS = {"because", "should", "before", "please", "without", "within", "through", "between",
               "whether", "during", "another", "others", "always", "usually", "anyone", "someone",
               "everyone", "there", "their", "which", "where", "the", "you", "your", "this", "that", "when"}


def answer_phrases(passage: str) -> list[str]:
    """Short phrases of a passage a question could have as its answer: dates, numbers with
    their unit, names, then longer words; without repeats."""
    found: list[str] = []
    seen: set[str] = set()
    for pattern in (_DATE, _NUMBER_PHRASE, _CAPITALISED, _WORD):
        for match in pattern.finditer(passage):
            phrase = match.group(0).strip(" .,:;")
            key = phrase.lower()
            if len(phrase) < 2 or key in seen or key in _STOP_WORDS or (len(phrase) <= 3 and not phrase.isupper()
                                                                        and not phrase[0].isdigit()):
                continue
            seen.add(key)
            found.append(phrase)
            if len(found) >= MAX_PHRASES:
                return found
    return found


def _pair_schema(phrases: list[str]) -> dict[str, Any]:
    return {"type": "object",
            "properties": {"question": {"type": "string", "minLength": 10, "maxLength": 200},
                           "answer": {"enum": phrases}},
            "required": ["question", "answer"]}


ASK = ("Here is a passage from a document.\n\n{passage}\n\nWrite one question a reader could answer from "
       "this passage alone, and give its answer: a short phrase from the passage.")


def propose_pairs(context: PluginContext, collection: str, *, count: int = 10, seed: int = 17,
                  on_progress: Callable[[str], None] | None = None,
                  stop: threading.Event | None = None) -> list[TaskItem]:
    """Up to ``count`` proposed items (question, expected phrase, source) from passages of
    ``collection``, asked of the loaded model. Stopping returns what was proposed so far.
    ParleyError when the documents plugin is off or the collection has no passages."""
    stop = stop or threading.Event()
    passages = context.service("documents.passages")(collection, limit=max(count * 3, 30))
    passages = [p for p in passages if len(str(p.get("text", "")).split()) >= 12]
    if not passages:
        raise TaskSetError(f"The collection {collection!r} has no passages long enough to ask about; "
                           "index a folder with some text in it first.")
    random.Random(f"{seed}:passages").shuffle(passages)
    items: list[TaskItem] = []
    questions: set[str] = set()
    for number, passage in enumerate(passages, 1):
        if len(items) >= count or stop.is_set():
            break
        text = " ".join(str(passage["text"]).split())[:1500]
        phrases = answer_phrases(text)
        if not phrases:
            continue
        if on_progress is not None:
            on_progress(f"Reading passage {number} of {len(passages)} ({len(items)} of {count} questions so far)…")
        options = GenerationOptions(temperature=0.0, max_tokens=160, seed=seed + number,
                                    json_schema=_pair_schema(phrases))
        reply = context.complete([ChatMessage("user", ASK.format(passage=text))], options, stop=stop)
        try:
            data = json.loads(reply.text)
            question, answer = " ".join(str(data["question"]).split()), str(data["answer"])
        except (ValueError, KeyError, TypeError):
            continue  # cut short (stopped, out of tokens): try the next passage
        if not question or question.lower() in questions or answer not in phrases:
            continue
        questions.add(question.lower())
        source = str(passage.get("source") or "")
        items.append(TaskItem(f"doc-{len(items) + 1}", question, [answer],
                              extra={"source": Path(source).name if source else "", "passage": text}))
    return items


def make_documents_set(context: PluginContext, library: Any, folder: Path, name: str, *, count: int = 10,
                       on_progress: Callable[[str], None] | None = None,
                       stop: threading.Event | None = None) -> Path | None:
    """Index ``folder``, propose ``count`` pairs from it and save them as the user's set ``name``
    (documents: the folder, so candidates with documents search it). None when stopped before
    any pair was proposed."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise TaskSetError(f"{folder} is not a folder of documents.")
    library.check_name_free(name)  # a taken name is refused before the slow part, not after
    collection = f"lab-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-') or 'documents'}"
    index = context.service("documents.index_folder")
    if on_progress is not None:
        on_progress(f"Indexing {folder.name}…")
    made = index(folder, collection=collection, on_progress=on_progress, stop=stop)
    collection = made.get("collection", collection) if isinstance(made, dict) else collection
    items = propose_pairs(context, collection, count=count, on_progress=on_progress, stop=stop)
    if not items:
        if stop is not None and stop.is_set():
            return None
        raise TaskSetError(f"No questions could be made from the documents in {folder}.")
    return library.create(name, items, check=dict(PAIR_CHECK), documents=folder.resolve(),
                          instruction="Answer the question from the documents briefly, giving the exact fact.",
                          description=f"Questions proposed from the documents in {folder.name}; review them.")
