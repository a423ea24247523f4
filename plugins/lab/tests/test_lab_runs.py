"""Stored runs: created with their own copy of the task set, answers appended, damage survived."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop_app_lab.candidates import parse_candidates
from desktop_app_lab.runs import RunStore, conversation_export
from desktop_app_lab.tasks import TaskSetError, load_task_set, save_task_set

SETS = Path(__file__).resolve().parents[1] / "desktop_app_lab" / "sets"


def _record(candidate: str, item: str, passed: bool, variant=None) -> dict:
    return {"candidate": candidate, "item": item, "variant": variant, "answer": "7", "extracted": "7",
            "expected": "7", "passed": passed, "detail": "", "latency": 0.1, "tokens": 2, "error": None,
            "setup": {"plugins": {"prompt_templates": {"template": "Lab: zero-shot"}}}, "prompt": "<prompt>",
            "trace": [{"plugin": "prompt_templates", "kind": "system_replaced", "content": "x"}]}


def test_a_run_keeps_its_answers_and_its_own_copy_of_the_task_set(tmp_path):
    source = tmp_path / "mine.json"
    save_task_set(load_task_set(SETS / "arithmetic.json"), source)
    store = RunStore(tmp_path / "runs")
    run = store.create(load_task_set(source), parse_candidates("zero, chain"), model="m.gguf")
    run.record(_record("zero-shot", "a01", True))
    run.record(_record("chain-of-thought", "a01", False))
    source.write_text("{}")  # the user edits (or breaks) the file afterwards: the run is unaffected
    again = store.get(run.id)
    assert [c.name for c in again.candidates] == ["zero-shot", "chain-of-thought"]
    assert again.done() == {("zero-shot", "a01", None), ("chain-of-thought", "a01", None)}
    assert len(again.task_set().test) == 40 and again.model == "m.gguf"
    assert store.get(run.id[:10]).id == run.id and store.get("latest").id == run.id
    assert [r.id for r in store.list()] == [run.id]
    assert again.batched  # answers written together unless the run asks for one at a time
    alone = store.create(load_task_set(SETS / "arithmetic.json"), parse_candidates("zero"), batched=False)
    assert store.get(alone.id).batched is False


def test_a_line_torn_by_a_crash_is_asked_again_not_fatal(tmp_path):
    store = RunStore(tmp_path)
    run = store.create(load_task_set(SETS / "arithmetic.json"), parse_candidates("zero"))
    run.record(_record("zero-shot", "a01", True))
    with run.results_file.open("a") as out:
        out.write('{"candidate": "zero-shot", "item": "a0')  # the process died mid-line
    assert store.get(run.id).done() == {("zero-shot", "a01", None)}


def test_runs_that_cannot_be_found_or_read_say_so(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(TaskSetError, match="is not a run. Recent runs: none yet"):
        store.get("nope")
    arithmetic = load_task_set(SETS / "arithmetic.json")
    run = store.create(arithmetic, parse_candidates("zero"))
    (run.folder / "run.json").write_text("{not json")
    with pytest.raises(TaskSetError, match="cannot be read"):
        store.get(run.id)
    assert store.list() == []  # a damaged run is left out of the list, not a crash
    (run.folder / "run.json").write_text(json.dumps({"candidates": [], "seed": "seventeen"}))
    with pytest.raises(TaskSetError, match="seed or prepared parts are malformed"):
        store.get(run.id)
    assert store.list() == []
    with pytest.raises(TaskSetError, match="at least one candidate"):
        store.create(arithmetic, [])
    with pytest.raises(TaskSetError, match="shows 40 worked examples from the train split, but 'Arithmetic word "
                                           "problems' has 20 train items"):
        store.create(arithmetic, parse_candidates("few:40"))
    with pytest.raises(TaskSetError, match="no candidate 'nope'. Its candidates: 'zero-shot'"):
        store.create(arithmetic, parse_candidates("zero")).candidate("nope")


def test_an_answer_opens_as_a_conversation_with_its_trace(paths, tmp_path):
    from desktop_app.context import build_context

    context = build_context(paths)
    try:
        store = RunStore(Path(tmp_path) / "runs")
        run = store.create(load_task_set(SETS / "arithmetic.json"), parse_candidates("zero"), model="m.gguf")
        record = _record("zero-shot", "a01", True)
        run.record(record)
        data = json.loads(json.dumps(conversation_export(run, record, run.task_set())))
        conv = context.plugin_context("lab").conversations.import_json(data)
        messages = context.store.history(conv.id)
        assert [m.role for m in messages] == ["user", "assistant"]
        assert messages[0].content == run.task_set().item("a01").input and messages[1].content == "7"
        assert context.store.get_trace(messages[1].id)["prompt"] == "<prompt>"
        assert conv.meta["prompt_templates"]["template"] == "Lab: zero-shot"
        assert messages[1].stats["lab"]["verdict"] == "right" and "(right)" in conv.title
    finally:
        context.close()
