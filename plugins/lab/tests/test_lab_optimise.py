"""Automatic prompt optimisation: the model proposes instructions, the train split alone picks the
best, the budget bounds the search, and the gain is measured on the held-out split as an ordinary
run. A scripted model makes the search's choices certain; the built-in model runs it end to end."""

from __future__ import annotations

import json
import threading

import pytest

from desktop_app.cli import main
from desktop_app_lab.candidates import parse_candidate
from desktop_app_lab.optimise import Budget, optimise
from desktop_app_lab.runs import RunStore
from desktop_app_lab.tasks import TaskSetError

from test_lab_runner import small_arithmetic

pytestmark = pytest.mark.timeout(1800)


GOOD = "Give only the final number, nothing else."
PROPOSALS = {"Rewrite this instruction for an assistant in different words": "Say the answer in your own words.",
             "Rewrite this instruction for an assistant so it also says": GOOD,
             "Here is an instruction for an assistant": "Be careful with the arithmetic questions."}


def scripted_lab(paths, task_set):
    """A Parley whose model answers correctly only under the instruction GOOD, and proposes
    GOOD when asked to add a constraint on the answer's form: whether the search finds it, and
    what it was scored on, is then certain (what the real model writes is not)."""
    from desktop_app.context import build_context
    from desktop_app.testing import FakeEngine

    answers = {i.input: str(i.expected) for i in task_set.items}
    engine = FakeEngine()

    def reply(request):
        asked = request.messages[-1].content
        for start, instruction in PROPOSALS.items():
            if asked.startswith(start):
                return json.dumps({"instruction": instruction})
        return answers[asked] if GOOD in request.prompt else "I am not sure."

    engine.enqueue(*[reply] * 200)
    context = build_context(paths, engine=engine)
    context.load_model(None)  # the scripted engine reads nothing, but the lab needs a model to answer with
    return context, engine


def test_instructions_are_chosen_on_the_train_split_and_judged_on_the_held_out_one(paths, tmp_path):
    task_set = small_arithmetic(tmp_path, test=3, train=7)
    context, engine = scripted_lab(paths, task_set)
    said = []
    try:
        result = optimise(context.plugin_context("lab"), task_set, parse_candidate("zero"),
                          budget=Budget(calls=40), variants=4, on_progress=said.append,
                          runs=RunStore(tmp_path / "runs"))
    finally:
        context.close()
    origins = {t.origin: t for t in result.trials}
    assert set(origins) == {"the set's instruction", "paraphrase", "constraints", "specific", "2 more examples"}
    assert all(t.n == 5 for t in result.trials)  # 7 train items less the 2 shown as examples
    assert result.base.correct == 0 and result.best is origins["constraints"] and result.best.correct == 5
    assert result.best.instruction == GOOD
    # Round 2 starts from the best and finds nothing better: the search ends by itself.
    assert result.stopped_by == "no proposal beat the best" and result.calls <= 40

    questions = [r.messages[-1].content for r in engine.history if not r.messages[-1].content.startswith(
        tuple(PROPOSALS))]
    held_out = {i.input for i in task_set.test}
    measured = len(task_set.test) * 2
    assert not held_out & set(questions[:-measured])  # the search never saw a held-out item
    assert set(questions[-measured:]) == held_out  # the measurement saw only those

    run = result.run
    assert run is not None and run.status == "finished"
    assert {r["candidate"] for r in run.results} == {"original", "optimised"}
    assert result.held_out == {"original": 0.0, "optimised": 1.0}
    text = result.describe()
    assert "Held-out split (what counts): 0.0% → 100.0% (+100.0 points)" in text
    assert f"Best instruction: {GOOD}" in text and f"parley lab apply {run.id} optimised" in text


def test_a_search_bounded_by_calls_never_compares_a_partial_score(paths, tmp_path):
    task_set = small_arithmetic(tmp_path, test=3, train=7)
    context, engine = scripted_lab(paths, task_set)
    try:
        result = optimise(context.plugin_context("lab"), task_set, parse_candidate("zero"),
                          budget=Budget(calls=8), variants=4, runs=RunStore(tmp_path / "runs"))
    finally:
        context.close()
    # 5 to score the original, 3 proposals: the budget is spent before any proposal is scored.
    assert result.calls == 8 and len(engine.history) == 8
    assert result.stopped_by == "the budget of 8 calls was spent"
    assert result.trials == [result.base] and result.run is None
    assert "nothing to measure on the held-out split" in result.describe()


def test_a_spent_or_stopped_search_and_a_set_too_small(lab, tmp_path):
    context = lab.plugin_context("lab")
    task_set = small_arithmetic(tmp_path, test=2, train=7)
    spent = optimise(context, task_set, parse_candidate("zero"), budget=Budget(calls=3),
                     runs=RunStore(tmp_path / "runs"))
    assert spent.stopped_by == "the budget of 3 calls was spent" and spent.calls == 3
    assert spent.trials == [spent.base] and spent.best is spent.base and spent.run is None

    stop = threading.Event()
    stop.set()
    stopped = optimise(context, task_set, parse_candidate("zero"), budget=Budget(), stop=stop,
                       runs=RunStore(tmp_path / "runs"))
    assert stopped.stopped_by == "stopped" and stopped.run is None

    with pytest.raises(TaskSetError, match="needs at least 7"):
        optimise(context, small_arithmetic(tmp_path, test=2, train=4), parse_candidate("few:2"), budget=Budget())


def test_optimise_from_the_command_line(paths, tmp_path, capsys):
    small = small_arithmetic(tmp_path, test=2, train=6)
    assert main(["lab", "optimise", str(small.path), "--budget-calls", "14", "--variants", "2"]) == 0
    captured = capsys.readouterr()
    assert "Scoring the original instruction on 4 train items" in captured.err
    assert "Round 1: asking the model for new instructions" in captured.err
    assert captured.out.startswith("Tried ") and "model calls" in captured.out
    # Either a proposal beat the original on the train split and both were measured on the held-out
    # split, or the original stays: what the built-in model proposes decides which, and both are said.
    measured = "Held-out split (what counts)" in captured.out
    assert measured != ("nothing to measure on the held-out split" in captured.out)
    assert measured == ("parley lab apply" in captured.out)


def test_a_search_bounded_by_minutes_stops_when_they_are_spent(paths, tmp_path, monkeypatch):
    from desktop_app_lab import optimise as module

    clock = iter(range(0, 10_000, 20))  # each look at the clock is 20 s later: the budget is spent, not timed
    monkeypatch.setattr(module._Spender, "clock", staticmethod(lambda: next(clock)))
    task_set = small_arithmetic(tmp_path, test=3, train=7)
    context, engine = scripted_lab(paths, task_set)
    try:
        result = optimise(context.plugin_context("lab"), task_set, parse_candidate("zero"),
                          budget=Budget(calls=0, minutes=1), runs=RunStore(tmp_path / "runs"))
    finally:
        context.close()
    # Started at 0 s; looks at 20, 40 s allow two answers; at 60 s the minute is spent.
    assert result.stopped_by == "the budget of 1 minute was spent" and result.calls == 2
    assert len(engine.history) == 2 and result.run is None
