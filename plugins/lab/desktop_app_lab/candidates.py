"""Candidates: the ways of answering a task set that a run compares.

A candidate is a recipe for one answer: which model, which instruction, how many worked examples
from the train split, which strategy (answer directly, think step by step, or sample several
chains and vote), with or without the set's documents, LoRA adapters and tools. The lab turns it
into a conversation *setup* (what a conversation keeps: a system prompt and each plugin's
choice), so every answer goes through Parley's whole turn pipeline, as a chat would.

On the command line a candidate is written as parts joined by ``+``, candidates separated by
commas: ``zero, few:4, chain, self:5, chain+docs, zero+lora:Pirate@0.8, train-lora, zero+tools``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from desktop_app_lab.tasks import TaskItem, TaskSet, TaskSetError

__all__ = [
    "CHAIN_LINE",
    "CHAIN_SUFFIX",
    "FINAL_ANSWER",
    "Candidate",
    "SPEC_HELP",
    "build_setup",
    "candidate_from_dict",
    "default_candidates",
    "expected_text",
    "final_answer_text",
    "few_shot_examples",
    "parse_candidate",
    "parse_candidates",
]

STRATEGIES = ("direct", "chain", "self-consistency")
#: What a chain-of-thought candidate adds to the instruction and to the question.
CHAIN_LINE = 'Think step by step, then give the final answer on the last line, starting with "Final answer:".'
CHAIN_SUFFIX = '\n\nLet\'s think step by step. End with a line "Final answer: <answer>".'
#: The final-answer line of a step-by-step answer (its last match is the answer).
FINAL_ANSWER = r"(?im)^\s*final answer\s*:\s*(.+?)\s*$"
#: Sampling temperature of self-consistency's extra chains (the first chain is greedy).
SAMPLE_TEMPERATURE = 0.5

SPEC_HELP = """\
Candidates are comma-separated; each is parts joined by '+':
  zero            answer directly with the set's instruction (the default)
  few[:K]         K worked examples from the train split (default 4)
  chain           think step by step, then a 'Final answer:' line
  self[:N]        self-consistency: N chains (default 5), the greedy one first, majority vote
  schema          force JSON matching the set's schema (sets with a JSON check)
  docs[:NAME]     answer from the set's documents (or the collection NAME)
  lora:NAME[@S]   a LoRA adapter from the library at scale S (default 1.0); repeat to stack
  train-lora      train a LoRA adapter on the train split first, then answer with it
  tools[:NAME]    offer all tools (or the tool NAME; repeat for several)
  model:NAME      answer with another model from the library
  tokens:N        allow N tokens per answer
Example: --candidates "zero, few:4, chain, self:5, chain+docs\""""


@dataclass
class Candidate:
    """One way of answering, as a run stores it (``to_dict``) and the scorecard names it."""

    name: str
    spec: str = "zero"
    shots: int = 0
    strategy: str = "direct"
    samples: int = 5
    schema: bool = False
    #: Answer from documents: the set's own folder (``documents``) and/or named collections.
    documents: bool = False
    collections: list[str] = field(default_factory=list)
    adapters: list[dict[str, Any]] = field(default_factory=list)
    train_lora: bool = False
    tools: list[str] = field(default_factory=list)
    all_tools: bool = False
    model: str | None = None
    max_tokens: int | None = None
    #: An instruction of its own (e.g. found by prompt optimisation) instead of the set's.
    instruction: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The candidate as JSON-ready data (what a run keeps)."""
        return asdict(self)

    def describe(self) -> str:
        """A sentence for people: what this candidate does."""
        parts = {"direct": "answers directly", "chain": "thinks step by step",
                 "self-consistency": f"votes over {self.samples} step-by-step answers"}[self.strategy]
        bits = [parts]
        if self.shots:
            bits.append(f"with {self.shots} worked example{'s' if self.shots != 1 else ''}")
        if self.schema:
            bits.append("forced to the JSON schema")
        if self.documents or self.collections:
            bits.append("from " + ", ".join((["the set's documents"] if self.documents else []) + self.collections))
        for adapter in self.adapters:
            bits.append(f"with LoRA {adapter['name']} ×{adapter.get('scale', 1.0):g}")
        if self.train_lora:
            bits.append("with a LoRA trained on the train split")
        if self.all_tools or self.tools:
            bits.append("with tools" + (f" ({', '.join(self.tools)})" if self.tools else ""))
        if self.model:
            bits.append(f"on {self.model}")
        if self.instruction:
            bits.append("with its own instruction")
        return ", ".join(bits)


def candidate_from_dict(data: dict[str, Any]) -> Candidate:
    """A candidate from what a run stored; TaskSetError when it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise TaskSetError("A stored candidate has no name.")
    known = Candidate.__dataclass_fields__
    candidate = Candidate(**{k: v for k, v in data.items() if k in known})
    if candidate.strategy not in STRATEGIES:
        raise TaskSetError(f"Candidate {candidate.name!r} has an unknown strategy {candidate.strategy!r}.")
    return candidate


def _number(text: str, what: str, spec: str, *, real: bool = False) -> float:
    try:
        value = float(text) if real else int(text)
    except ValueError:
        raise TaskSetError(f"In candidate {spec!r}: {what} must be a number, not {text!r}.") from None
    if value < (0 if real else 1):
        raise TaskSetError(f"In candidate {spec!r}: {what} must be {'at least 0' if real else 'at least 1'}.")
    return value


def parse_candidate(spec: str) -> Candidate:
    """A candidate from its written form, e.g. ``"few:4+docs"``; TaskSetError saying what is wrong."""
    spec = spec.strip()
    if not spec:
        raise TaskSetError("A candidate is empty (two commas in a row?).")
    c = Candidate(name="", spec=spec)
    for part in (p.strip() for p in spec.split("+")):
        key, _, value = part.partition(":")
        key = key.strip().lower()
        value = value.strip()
        if key in ("zero", "zero-shot"):
            c.shots = 0
        elif key in ("few", "few-shot"):
            c.shots = int(_number(value, "the number of examples", spec)) if value else 4
        elif key in ("chain", "cot", "chain-of-thought"):
            c.strategy = "chain"
        elif key in ("self", "sc", "self-consistency"):
            c.strategy = "self-consistency"
            c.samples = int(_number(value, "the number of samples", spec)) if value else 5
            if c.samples < 2:
                raise TaskSetError(f"In candidate {spec!r}: self-consistency needs at least 2 samples.")
        elif key == "schema":
            c.schema = True
        elif key in ("docs", "documents"):
            if value:
                c.collections.append(value)
            else:
                c.documents = True
        elif key in ("lora", "adapter"):
            name, _, scale = value.partition("@")
            if not name.strip():
                raise TaskSetError(f"In candidate {spec!r}: lora needs an adapter name, e.g. lora:Pirate@0.8.")
            c.adapters.append({"name": name.strip(),
                               "scale": _number(scale, "the scale", spec, real=True) if scale else 1.0})
        elif key in ("train-lora", "train_lora", "trained-lora"):
            c.train_lora = True
        elif key == "tools":
            if value:
                c.tools.append(value)
            else:
                c.all_tools = True
        elif key == "model":
            if not value:
                raise TaskSetError(f"In candidate {spec!r}: model needs a name from the model library.")
            c.model = value
        elif key == "tokens":
            c.max_tokens = int(_number(value, "tokens", spec))
        else:
            raise TaskSetError(f"In candidate {spec!r}: {part!r} is not a candidate part.\n{SPEC_HELP}")
    c.name = _name(c)
    return c


def parse_candidates(text: str | list[str]) -> list[Candidate]:
    """Candidates from ``"zero, few:4, chain"`` (or a list of such texts); names made unique."""
    specs = [s for chunk in ([text] if isinstance(text, str) else text) for s in chunk.split(",")]
    candidates = [parse_candidate(s) for s in specs if s.strip()]
    if not candidates:
        raise TaskSetError(f"No candidates given.\n{SPEC_HELP}")
    seen: dict[str, int] = {}
    for c in candidates:
        count = seen[c.name] = seen.get(c.name, 0) + 1
        if count > 1:
            c.name = f"{c.name} ({count})"
    return candidates


def _name(c: Candidate) -> str:
    base = {"direct": "few-shot" if c.shots else "zero-shot", "chain": "chain-of-thought",
            "self-consistency": f"self-consistency N={c.samples}"}[c.strategy]
    if c.shots and c.strategy != "direct":
        base += " + examples"
    if c.shots:
        base += f" k={c.shots}"
    if c.schema:
        base += " + schema"
    if c.documents:
        base += " + docs"
    for name in c.collections:
        base += f" + docs:{name}"
    for adapter in c.adapters:
        base += f" + LoRA {adapter['name']}" + (f"×{adapter['scale']:g}" if adapter["scale"] != 1.0 else "")
    if c.train_lora:
        base += " + trained LoRA"
    if c.all_tools:
        base += " + tools"
    for tool in c.tools:
        base += f" + tool {tool}"
    if c.max_tokens:
        base += f" ({c.max_tokens} tokens)"
    if c.model:
        base += f" on {c.model}"
    return base


def default_candidates(task_set: TaskSet) -> list[Candidate]:
    """What a run compares when the user picks nothing: the prompting ladder, and the set's
    documents when it has some, and the schema when its answers are JSON."""
    specs = ["zero", "few:4", "chain", "self:5"]
    if task_set.documents is not None:
        specs = ["zero", "zero+docs", "few:4+docs", "chain+docs"]
    elif task_set.check.get("kind") == "json":
        specs = ["zero", "zero+schema", "few:3", "few:3+schema"]
    # A small set of the user's may have fewer train items than the ladder's examples.
    shots = len(task_set.train)
    specs = [re.sub(r"few:(\d+)", lambda m: f"few:{min(int(m.group(1)), shots)}", spec) for spec in specs
             if shots or "few:" not in spec]
    return parse_candidates(list(dict.fromkeys(specs)))


# -- turning a candidate into a conversation setup ----------------------------------------------

def expected_text(expected: Any) -> str:
    """An expected answer written as the model should write it (for worked examples)."""
    if isinstance(expected, (dict, list)) and not (isinstance(expected, list) and expected
                                                    and all(isinstance(e, str) for e in expected)):
        return json.dumps(expected, ensure_ascii=False)
    if isinstance(expected, list):
        return expected[0]  # several accepted answers: the first is the canonical one
    if isinstance(expected, float) and expected.is_integer():
        return str(int(expected))
    return str(expected)


def few_shot_examples(task_set: TaskSet, k: int) -> list[TaskItem]:
    """``k`` worked examples from the train split, the same for every candidate of the set:
    a fixed, seeded draw, so two runs (and two candidates) see the same examples."""
    train = sorted(task_set.train, key=lambda i: i.id)
    random.Random(f"{task_set.seed}:examples").shuffle(train)
    return train[:k]


def final_answer_text(answer: str, strategy: str) -> str:
    """The part of an answer the check judges: a step-by-step answer's last "Final answer:"
    line (the whole answer when it wrote none); a direct answer as written."""
    if strategy == "direct":
        return answer.strip()
    matches = list(re.finditer(FINAL_ANSWER, answer))
    return matches[-1].group(1).strip() if matches else answer.strip()


def _max_tokens(candidate: Candidate, task_set: TaskSet) -> int:
    if candidate.max_tokens:
        return candidate.max_tokens
    if candidate.strategy != "direct":
        return 192  # room for a short chain and its final line on the built-in model
    kind = task_set.check.get("kind")
    return {"number": 24, "exact": 32, "normalised": 32, "json": 128}.get(kind, 96)


def build_setup(candidate: Candidate, task_set: TaskSet, *, instruction: str | None = None,
                collection: str | None = None, trained_adapter: str | None = None,
                tool_names: list[str] = (), seed: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The conversation setup and generation options that answer ``task_set`` as ``candidate``.

    ``instruction`` replaces the set's (a paraphrase, when measuring prompt sensitivity);
    ``collection`` is the collection made from the set's documents, ``trained_adapter`` the
    adapter trained on its train split, ``tool_names`` every tool there is (for a candidate
    offered all of them). Every plugin's part is stated, even when empty, so the
    user's own picks in the window never leak into a measurement.
    """
    text = instruction if instruction is not None else (candidate.instruction or task_set.instruction)
    inline: dict[str, Any] = {"description": f"Strategy lab candidate for {task_set.name}: {candidate.describe()}.",
                              "preset": {"temperature": 0.0, "max_tokens": _max_tokens(candidate, task_set)}}
    chain = candidate.strategy != "direct"
    inline["system"] = (f"{text} {CHAIN_LINE}" if text else CHAIN_LINE) if chain else text
    if chain:
        inline["user"] = "{{ message }}" + CHAIN_SUFFIX
        inline["answer_pattern"] = FINAL_ANSWER
    if candidate.shots:
        inline["examples"] = [
            {"user": item.input, "assistant": (f"Final answer: {expected_text(item.expected)}" if chain
                                               else expected_text(item.expected))}
            for item in few_shot_examples(task_set, candidate.shots)]
    if candidate.schema:
        schema = task_set.check.get("schema")
        if not isinstance(schema, dict):
            raise TaskSetError(f"Candidate {candidate.name!r} forces the JSON schema, but the set "
                               f"{task_set.name!r} has no JSON check with a schema.")
        inline["output"] = {"json_schema": schema}
    if candidate.strategy == "self-consistency":
        inline["strategy"] = {"name": "self-consistency", "samples": candidate.samples,
                              "temperature": SAMPLE_TEMPERATURE}
    collections = list(candidate.collections)
    if candidate.documents:
        if not collection:
            raise TaskSetError(f"Candidate {candidate.name!r} answers from the set's documents, but "
                               f"{task_set.name!r} has no documents folder.")
        collections.insert(0, collection)
    adapters = [dict(a) for a in candidate.adapters]
    if candidate.train_lora:
        if not trained_adapter:
            raise TaskSetError(f"Candidate {candidate.name!r} needs its LoRA adapter trained first.")
        adapters.append({"name": trained_adapter, "scale": 1.0})
    plugins: dict[str, Any] = {
        "prompt_templates": {"template": f"Lab: {candidate.name}", "variables": {}, "inline": inline},
        "local_docs": {"collections": collections},
        "lora": {"adapters": adapters},
        "tools": {"tools": sorted(set(candidate.tools) | (set(tool_names) if candidate.all_tools else set()))},
    }
    options: dict[str, Any] = {"seed": task_set.seed if seed is None else seed}
    return {"plugins": plugins, "title": f"Lab: {task_set.name}"}, options
