"""Automatic prompt optimisation: the model proposes instructions, the train split picks one.

Starting from a candidate and the set's instruction, each round asks the model for new
instructions in several ways (say it in other words, add a constraint on the answer's form, be
more specific given a few train examples) and adds a variant with two more worked examples.
Every variant is scored on the train split only (less the items shown as examples), and the
best is kept for the next round. The search stops when the user's budget (model calls or
minutes) is spent.

The gain is then measured where it counts: when a variant beat the original, both are run
on the held-out split as an ordinary lab run, so the scorecard, its confidence intervals and
the paired test say whether the better train score generalises. A gain on the train split
alone proves nothing.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from desktop_app.api import ChatMessage, GenerationOptions, PluginContext

from desktop_app_lab.candidates import Candidate, build_setup, expected_text, few_shot_examples, final_answer_text
from desktop_app_lab.tasks import TaskItem, TaskSet, TaskSetError

__all__ = ["Budget", "Optimised", "Trial", "optimise", "propose_instructions"]

#: How the model is asked for a new instruction ({instruction} and {examples} are filled in).
ASKS = {
    "paraphrase": "Rewrite this instruction for an assistant in different words, keeping its meaning.\n"
                  "Instruction: {instruction}",
    "constraints": "Rewrite this instruction for an assistant so it also says exactly what form the answer must "
                   "take (only the answer, no explanation).\nInstruction: {instruction}",
    "specific": "Here is an instruction for an assistant and some questions with their correct answers.\n"
                "Instruction: {instruction}\n{examples}\nWrite a better, more specific instruction for these "
                "questions.",
}
INSTRUCTION_SCHEMA = {"type": "object", "properties": {"instruction": {"type": "string", "minLength": 8,
                                                                        "maxLength": 400}},
                      "required": ["instruction"]}


@dataclass
class Budget:
    """How much the search may spend: model calls (0: no limit) and minutes (0: no limit)."""

    calls: int = 60
    minutes: float = 0.0


@dataclass
class Trial:
    """One instruction tried on the train split."""

    instruction: str
    origin: str
    shots: int
    correct: int = 0
    n: int = 0

    @property
    def accuracy(self) -> float:
        """The share of the train items scored that it got right."""
        return self.correct / self.n if self.n else 0.0


@dataclass
class Optimised:
    """What the search found: every trial, the best, and the held-out run that measures it."""

    base: Trial
    best: Trial
    trials: list[Trial] = field(default_factory=list)
    calls: int = 0
    stopped_by: str = ""
    #: The held-out run comparing the original with the optimised candidate (None when stopped).
    run: Any = None
    held_out: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """The outcome in a few lines for people."""
        lines = [f"Tried {len(self.trials)} instructions with {self.calls} model calls ({self.stopped_by}).",
                 f"Train split: {self.base.correct}/{self.base.n} with the original, "
                 f"{self.best.correct}/{self.best.n} with the best ({self.best.origin}).",
                 f"Best instruction: {self.best.instruction}" + (f" (+{self.best.shots} examples)"
                                                                 if self.best.shots else "")]
        if self.best is self.base and self.stopped_by != "stopped":
            lines.append("No instruction beat the original on the train split, so there is nothing to measure "
                         "on the held-out split: keep the original, or try again with a larger budget.")
        if self.held_out:
            before, after = self.held_out.get("original", 0.0), self.held_out.get("optimised", 0.0)
            lines.append(f"Held-out split (what counts): {before:.1%} → {after:.1%} "
                         f"({(after - before) * 100:+.1f} points).")
        if self.run is not None:
            lines.append(f"Run {self.run.id}: parley lab report {self.run.id}; keep it: parley lab apply "
                         f"{self.run.id} optimised")
        return "\n".join(lines)


class _Spender:
    """Counts calls and minutes against the budget."""

    #: The clock minutes are counted on (tests give it one of their own).
    clock = staticmethod(time.monotonic)

    def __init__(self, budget: Budget, stop: threading.Event):
        self.budget, self.stop = budget, stop
        self.calls = 0
        self.started = self.clock()
        self.reason = ""

    def can_spend(self) -> bool:
        if self.stop.is_set():
            self.reason = "stopped"
        elif self.budget.calls and self.calls >= self.budget.calls:
            self.reason = f"the budget of {self.budget.calls} calls was spent"
        elif self.budget.minutes and self.clock() - self.started >= self.budget.minutes * 60:
            plural = "" if self.budget.minutes == 1 else "s"
            self.reason = f"the budget of {self.budget.minutes:g} minute{plural} was spent"
        return not self.reason


def _reply_text(reply: Any) -> str:
    return reply if isinstance(reply, str) else getattr(reply, "text", "")


def propose_instructions(complete: Callable[[list[ChatMessage], GenerationOptions], Any], instruction: str,
                         examples: list[TaskItem], kinds: list[str], *, seed: int = 17,
                         can_ask: Callable[[], bool] = lambda: True) -> list[tuple[str, str]]:
    """New instructions from the model, one per kind of ``ASKS`` (origin, text); replies that
    are not a usable instruction are left out. ``can_ask`` is asked before each call (the
    budget), and asking stops when it says no."""
    shown = "\n".join(f"Question: {e.input}\nCorrect answer: {expected_text(e.expected)}" for e in examples[:3])
    proposals = []
    for n, kind in enumerate(kinds):
        if not can_ask():
            break
        ask = ASKS[kind].format(instruction=instruction, examples=shown)
        options = GenerationOptions(temperature=0.7 if n else 0.0, max_tokens=160, seed=seed + n,
                                    json_schema=INSTRUCTION_SCHEMA)
        try:
            data = json.loads(_reply_text(complete([ChatMessage("user", ask)], options)))
            text = " ".join(str(data["instruction"]).split())
        except (ValueError, KeyError, TypeError):
            continue
        if len(text) >= 8 and text != instruction:
            proposals.append((kind, text))
    return proposals


def optimise(context: PluginContext, task_set: TaskSet, candidate: Candidate, *, budget: Budget,
             variants: int = 4, on_progress: Callable[[str], None] | None = None,
             stop: threading.Event | None = None, runs: Any = None) -> Optimised:
    """Search for a better instruction for ``candidate`` on the train split, within ``budget``,
    then measure the original against the best on the held-out split as a lab run (kept in
    ``runs``, the plugin's run store by default).

    Raises TaskSetError when the set has too few train items to score on.
    """
    from desktop_app_lab.checks import check_answer
    from desktop_app_lab.runner import make_judge, documents_collection, run_lab

    stop = stop or threading.Event()
    say = on_progress or (lambda text: None)
    spend = _Spender(budget, stop)
    extra_shots = 2
    shown = {i.id for i in few_shot_examples(task_set, candidate.shots + extra_shots)}
    scored = [i for i in task_set.train if i.id not in shown]
    if len(scored) < 3:
        raise TaskSetError(f"The set {task_set.name!r} has {len(task_set.train)} train items; prompt optimisation "
                           f"needs at least {3 + candidate.shots + extra_shots} to score instructions on.")
    if candidate.train_lora:
        raise TaskSetError("Prompt optimisation improves a prompt: pick a candidate without train-lora, then "
                           "compare the optimised prompt with train-lora in a run.")
    if candidate.model:
        raise TaskSetError("Prompt optimisation searches with the loaded model: load the model you want, and "
                           "pick a candidate without model:.")
    judge = make_judge(context, task_set)
    collection = documents_collection(context, task_set, say, stop) if candidate.documents else None
    tool_names = sorted(context.tools()) if candidate.all_tools else []

    def score(trial: Trial) -> None:
        trying = replace(candidate, instruction=trial.instruction, shots=trial.shots)
        setup, options = build_setup(trying, task_set, collection=collection, tool_names=tool_names)
        for item in scored:
            if not spend.can_spend():
                return
            turn = context.run_turn([ChatMessage("user", item.input)], setup=setup, options=options, stop=stop)
            spend.calls += max(1, len(turn.samples))
            if turn.finish_reason == "cancelled":
                return
            verdict = check_answer(task_set.check_for(item), final_answer_text(turn.text, trying.strategy),
                                   item.expected, judge=judge, question=item.input)
            trial.correct += verdict.passed
            trial.n += 1

    base = Trial(candidate.instruction or task_set.instruction, "the set's instruction", candidate.shots)
    say(f"Scoring the original instruction on {len(scored)} train items…")
    score(base)
    result = Optimised(base, base, [base])
    best = base
    kinds = ["paraphrase", "constraints", "specific", "paraphrase", "constraints", "specific"][:max(1, variants - 1)]

    def complete(messages: list[ChatMessage], options: GenerationOptions) -> Any:
        spend.calls += 1
        return context.complete(messages, options)

    rounds = 0
    while spend.can_spend() and best.n == len(scored) and rounds < 5:
        rounds += 1
        say(f"Round {rounds}: asking the model for new instructions…")
        examples = [i for i in task_set.train if i.id in shown]  # never an item the proposals are scored on
        proposals = propose_instructions(complete, best.instruction, examples, kinds,
                                         seed=task_set.seed + rounds, can_ask=spend.can_spend)
        tried = {(t.instruction, t.shots) for t in result.trials}
        trials = [Trial(text, kind, best.shots) for kind, text in proposals if (text, best.shots) not in tried]
        if (best.instruction, best.shots + extra_shots) not in tried and best.shots + extra_shots <= len(shown):
            trials.append(Trial(best.instruction, f"{extra_shots} more examples", best.shots + extra_shots))
        improved = False
        for trial in trials:
            if not spend.can_spend():
                break
            say(f"Trying ({trial.origin}): {trial.instruction[:90]}")
            score(trial)
            if trial.n < len(scored):
                break  # the budget ran out mid-trial: a partial score cannot be compared
            result.trials.append(trial)
            say(f"  {trial.correct}/{trial.n} on the train split")
            if trial.correct > best.correct:
                best, improved = trial, True
        if not improved:
            break
    result.best, result.calls = best, spend.calls
    result.stopped_by = spend.reason or ("no proposal beat the best" if rounds else "")
    if stop.is_set() or best is base:
        return result  # stopped, or nothing to measure: the original stays as it is
    if runs is None:
        from desktop_app_lab import state

        runs = state.runs
    optimised = replace(candidate, name="optimised", instruction=best.instruction, shots=best.shots,
                        spec=candidate.spec + " (optimised)")
    original = replace(candidate, name="original")
    model = context.model.path.name if context.model.path else ""
    run = runs.create(task_set, [original, optimised], model=model)
    say(f"Measuring both on the {len(task_set.test)} held-out items (run {run.id})…")
    run = run_lab(context, run, on_progress=lambda p: say(p.message) if p.result is None else None, stop=stop)
    result.run = run
    for name in ("original", "optimised"):
        mine = [r for r in run.latest() if r["candidate"] == name and r.get("variant") is None]
        result.held_out[name] = sum(r["passed"] for r in mine) / len(mine) if mine else 0.0
    return result
