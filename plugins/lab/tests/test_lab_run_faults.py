"""What a run does when the world changes under it, with a scripted model (so the answers are
certain): the model switched in the window or unloaded mid-run stops the run before an answer of
the wrong model is judged, and resuming with the right model finishes it."""

from __future__ import annotations

from pathlib import Path

from desktop_app_lab.candidates import parse_candidates
from desktop_app_lab.runner import run_lab
from desktop_app_lab.runs import RunStore

from test_lab_runner import small_arithmetic


def test_a_model_switched_mid_run_stops_it_and_resuming_finishes_it(paths, tmp_path):
    from desktop_app.context import build_context
    from desktop_app.testing import FakeEngine

    task_set = small_arithmetic(tmp_path, test=3, train=2)
    answers = {i.input: str(i.expected) for i in task_set.items}
    engine = FakeEngine()
    engine.enqueue(*[lambda request: answers[request.messages[-1].content]] * 20)
    context = build_context(paths, engine=engine)
    try:
        context.load_model(None)
        model = engine.model_path
        store = RunStore(tmp_path / "runs")
        lab = context.plugin_context("lab")

        def switch_after_first(progress):
            if progress.result is not None:
                engine.model_path = Path("/models/another.gguf")  # the user picked another model meanwhile

        run = run_lab(lab, store.create(task_set, parse_candidates(["zero"]), model=model.name),
                      on_progress=switch_after_first)
        assert run.status == "failed" and len(run.results) == 1
        assert "changed to another.gguf" in run.message and f"load {model.name} again" in run.message

        engine.model_path = None  # nothing loaded: said, nothing recorded
        run = run_lab(lab, store.get(run.id))
        assert run.status == "failed" and "No model is loaded" in run.message and len(run.results) == 1

        engine.model_path = model
        run = run_lab(lab, store.get(run.id))
        assert run.status == "finished" and len(run.results) == 3 and all(r["passed"] for r in run.results)
    finally:
        context.close()
