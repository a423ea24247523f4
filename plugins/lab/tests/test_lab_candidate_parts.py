"""The candidate parts a run switches on and off, for real on the built-in model: the set's
documents (indexed by the documents plugin, cited in the answer's trace), tools (offered in the
prompt), and another model file (loaded for its candidate, the run's model loaded back after)."""

from __future__ import annotations

import shutil

import pytest

from desktop_app_lab.candidates import parse_candidates
from desktop_app_lab.runner import run_lab
from desktop_app_lab.runs import RunStore
from desktop_app_lab.tasks import load_task_set, save_task_set

from test_lab_runner import SETS, small_arithmetic

pytestmark = pytest.mark.timeout(1800)


def test_documents_on_and_off(lab, tmp_path):
    shipped = load_task_set(SETS / "handbook_qa.json")
    shutil.copytree(SETS / "handbook", tmp_path / "handbook")
    shipped.items = shipped.train[:1] + shipped.test[:2]
    shipped.documents = tmp_path / "handbook"
    shipped.judge_labels = []  # they are for items this cut-down set leaves out
    task_set = load_task_set(save_task_set(shipped, tmp_path / "handbook_small.json"))
    candidates = parse_candidates(["zero, zero+docs"])
    said = []
    run = run_lab(lab.plugin_context("lab"), RunStore(tmp_path / "runs").create(task_set, candidates, model="m"),
                  on_progress=lambda p: said.append(p.message))
    assert run.status == "finished", run.message
    assert run.prepared["collection"] == "lab-questions-about-the-team-handbook"
    assert any("Indexing the set's documents (handbook)" in m for m in said)
    plain = [r for r in run.results if r["candidate"] == "zero-shot"]
    grounded = [r for r in run.results if r["candidate"] == candidates[1].name]
    assert len(plain) == len(grounded) == 2
    assert all(r["setup"]["plugins"]["local_docs"]["collections"] == [] for r in plain)
    for record in grounded:
        assert record["setup"]["plugins"]["local_docs"]["collections"] == [run.prepared["collection"]]
        assert any(e["plugin"] == "local_docs" for e in record["trace"])  # the passages went into the prompt
        assert ".md" in record["prompt"] or "Lanternfield" in record["prompt"]
    assert not any(e["plugin"] == "local_docs" for r in plain for e in r["trace"])


def test_tools_on_and_off_and_another_model(lab, tmp_path):
    from desktop_app.core.models import default_model_path

    other = tmp_path / "models" / "another-copy.gguf"
    other.parent.mkdir()
    shutil.copyfile(default_model_path(), other)
    task_set = small_arithmetic(tmp_path, test=2, train=2)
    candidates = parse_candidates([f"zero, zero+tools:calculator, zero+model:{other}"])
    said = []
    context = lab.plugin_context("lab")
    # One at a time, so that the same weights give the same answers to the token (see below).
    run = run_lab(context, RunStore(tmp_path / "runs").create(task_set, candidates, model=default_model_path().name,
                                                              batched=False),
                  on_progress=lambda p: said.append(p.message))
    assert run.status == "finished", run.message
    by = {c.name: [r for r in run.results if r["candidate"] == c.name] for c in candidates}
    assert all(len(records) == 2 for records in by.values())
    assert all(r["setup"]["plugins"]["tools"]["tools"] == ["calculator"] for r in by[candidates[1].name])
    assert all("calculator" in r["prompt"] for r in by[candidates[1].name])
    assert not any("calculator" in r["prompt"] for r in by["zero-shot"])
    # The other model answered its candidate; the run's own model is back afterwards.
    assert any(m.startswith(f"Loading {other}") for m in said) and context.model.path == default_model_path()
    assert [r["answer"] for r in by[candidates[2].name]] == [r["answer"] for r in by["zero-shot"]]  # same weights
