"""Runs on the built-in model: every answer kept with its trace and verdict, a stopped run resumed
to the same scores as one never stopped, answers written together in the engine's batch, and the
benchmark's chat loop agreeing with the lab."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from desktop_app_lab.candidates import parse_candidates
from desktop_app_lab.runner import run_lab
from desktop_app_lab.runs import RunStore
from desktop_app_lab.summary import summarise
from desktop_app_lab.tasks import TaskSet, load_task_set, save_task_set

SETS = Path(__file__).resolve().parents[1] / "desktop_app_lab" / "sets"
ROOT = Path(__file__).resolve().parents[3]


def small_arithmetic(folder: Path, test: int = 3, train: int = 4) -> TaskSet:
    """The shipped arithmetic set cut down to a few items (the same items every time)."""
    shipped = load_task_set(SETS / "arithmetic.json")
    shipped.items = shipped.train[:train] + shipped.test[:test]
    return load_task_set(save_task_set(shipped, folder / "small-arithmetic.json"))


def _verdicts(run):
    return {(r["candidate"], r["item"]): (r["passed"], r["extracted"], r["answer"]) for r in run.latest()}


def test_a_stopped_run_resumes_to_the_scores_of_a_run_never_stopped(lab, tmp_path):
    task_set = small_arithmetic(tmp_path)
    candidates = parse_candidates(["zero, few:2"])
    store = RunStore(tmp_path / "runs")
    context = lab.plugin_context("lab")

    # One at a time: answers written together may differ in a rare token, which is not the point here.
    whole = run_lab(context, store.create(task_set, candidates, model="m", batched=False))
    assert whole.status == "finished" and len(whole.results) == 6

    stop = threading.Event()
    seen = []

    def progress(p):
        if p.result is not None:
            seen.append(p)
            if len(seen) == 4:
                stop.set()

    part = run_lab(context, store.create(task_set, candidates, model="m", batched=False), on_progress=progress,
                   stop=stop)
    assert part.status == "stopped" and len(part.results) == 4 and "resume" in part.message
    assert [p.done for p in seen] == [1, 2, 3, 4] and seen[0].total == 6
    resumed = run_lab(context, store.get(part.id))  # read back from disk, as after a restart
    assert resumed.status == "finished" and len(resumed.results) == 6
    assert _verdicts(resumed) == _verdicts(whole)
    assert [(r.candidate, r.correct, r.n) for r in summarise(resumed).rows] == \
           [(r.candidate, r.correct, r.n) for r in summarise(whole).rows]

    record = whole.results[0]
    assert record["trace"] and record["prompt"] and record["tokens"] > 0 and record["latency"] > 0
    assert record["setup"]["plugins"]["prompt_templates"]["template"] == "Lab: zero-shot"
    few = next(r for r in whole.results if r["candidate"] == candidates[1].name)
    examples = few["setup"]["plugins"]["prompt_templates"]["inline"]["examples"]
    train_inputs = {i.input for i in task_set.train}
    assert len(examples) == 2 and all(e["user"] in train_inputs for e in examples)  # never a test item
    assert task_set.item(record["item"]).input in record["prompt"]


def test_a_run_writes_its_answers_together_and_a_stopped_one_finishes_each_answer_once(lab, tmp_path):
    task_set = small_arithmetic(tmp_path, test=3)
    candidates = parse_candidates(["zero, few:2"])
    store = RunStore(tmp_path / "runs")
    context = lab.plugin_context("lab")
    scheduler = lab.engine._loaded.scheduler
    scheduler.widest = 0
    assert context.model.parallel >= 6

    stop = threading.Event()
    seen = []

    def progress(p):
        if p.result is not None:
            seen.append(p)
            stop.set()  # the others are being written meanwhile: they end, and are not judged

    run = store.create(task_set, candidates, model="m")
    runner = threading.Thread(target=run_lab, args=(context, run), kwargs={"on_progress": progress, "stop": stop})
    # The six answers reach the engine while it is held, so they start together whatever the timing.
    with scheduler.exclusive():
        runner.start()
        deadline = time.monotonic() + 300  # only a guard against a run that never gets there
        while scheduler.answering < 6 and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scheduler.answering == 6
    runner.join(300)
    part = store.get(run.id)
    assert scheduler.widest >= 2  # answers were decoded in the same steps
    assert part.status == "stopped" and len(part.results) == 1 and [p.done for p in seen] == [1]
    resumed = run_lab(context, store.get(part.id))
    assert resumed.status == "finished" and len(resumed.results) == 6
    asked = [(r["candidate"], r["item"]) for r in resumed.results]
    assert len(set(asked)) == 6  # every answer once: the one judged before the stop was not asked again
    assert all(r["finish_reason"] != "cancelled" and r["tokens"] > 0 and r["answer"] for r in resumed.results)
    assert {(r.candidate, r.n) for r in summarise(resumed).rows} == {(c.name, 3) for c in candidates}


def test_the_benchmarks_chat_loop_scores_what_the_lab_scores(lab, tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.strategies import measure
    finally:
        sys.path.remove(str(ROOT))
    task_set = small_arithmetic(tmp_path, test=3)
    candidates = parse_candidates(["zero, chain"])
    # The benchmark asks one question at a time, so the run does too (to compare them token for token).
    run = run_lab(lab.plugin_context("lab"), RunStore(tmp_path / "runs").create(task_set, candidates, model="m",
                                                                                 batched=False))
    for candidate in candidates:
        measured = measure(lab, task_set, candidate, task_set.test)
        lab_says = {r["item"]: (r["passed"], r["extracted"]) for r in run.latest() if r["candidate"] == candidate.name}
        assert {i: (measured.verdicts[i], measured.answers[i]) for i in measured.verdicts} == lab_says


def test_a_set_with_labelled_answers_measures_its_judge_once(lab, tmp_path):
    task_set = small_arithmetic(tmp_path, test=1)
    first = task_set.test[0]
    task_set.judge_labels = [{"item": first.id, "answer": f"It is {first.expected}.", "passed": True},
                             {"item": first.id, "answer": "It is 1000.", "passed": False}]
    save_task_set(task_set)
    store = RunStore(tmp_path / "runs")
    run = run_lab(lab.plugin_context("lab"), store.create(load_task_set(task_set.path), parse_candidates("zero")))
    assert run.status == "finished" and run.judge.startswith("The judge agrees with your labels on ")
    assert "of 2" in run.judge and store.get(run.id).judge == run.judge
