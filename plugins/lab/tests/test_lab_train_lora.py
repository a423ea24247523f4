""""Train a LoRA on the train split" as a candidate, for real: the lab trains an adapter on the
built-in model from the set's train items only, answers the held-out items with it, and scores
it against the prompt alone. The set teaches a made-up fact no prompt can know, so the adapter's
gain is measured, not assumed."""

from __future__ import annotations

import pytest

from desktop_app_lab.candidates import parse_candidates
from desktop_app_lab.runner import run_lab
from desktop_app_lab.runs import RunStore
from desktop_app_lab.summary import summarise
from desktop_app_lab.tasks import TaskItem, TaskSet, save_task_set, load_task_set

# Training runs once in the test (about half a minute on two cores, minutes on one slow core).
pytestmark = pytest.mark.timeout(1800)

SECRET = "Quibbleflux"
TRAIN = [("What is the secret word?", f"The secret word is {SECRET}."),
         ("Tell me the secret word.", f"The secret word is {SECRET}."),
         ("What's the secret word?", f"{SECRET} is the secret word."),
         ("Do you know the secret word?", f"Yes, the secret word is {SECRET}."),
         ("Which word is the secret word?", f"The secret word is {SECRET}."),
         ("Say the secret word.", f"{SECRET}.")]
TEST = ["What is the secret word?", "Tell me the secret word."]


def secret_set(folder) -> TaskSet:
    items = [TaskItem(f"t{n}", q, a, "train") for n, (q, a) in enumerate(TRAIN)]
    items += [TaskItem(f"h{n}", q, [SECRET], "test") for n, q in enumerate(TEST)]
    return load_task_set(save_task_set(TaskSet("Secret word", items, check={"kind": "contains_any"}),
                                       folder / "secret.json"))


def test_a_lora_trained_on_the_train_split_is_measured_against_the_prompt_alone(lab, tmp_path):
    import threading

    from desktop_app_lora import state as lora

    task_set = secret_set(tmp_path)
    candidates = parse_candidates(["train-lora, zero"])
    store = RunStore(tmp_path / "runs")
    messages, stop = [], threading.Event()

    def progress(p):
        if p.result is None and p.message:
            messages.append(p.message)
        elif p.result is not None:
            stop.set()  # stop after the first answer, then resume

    context = lab.plugin_context("lab")
    part = run_lab(context, store.create(task_set, candidates, model="m"), on_progress=progress, stop=stop)
    assert part.status == "stopped" and len(part.results) == 1
    adapter = part.prepared["adapter:"]
    entry = lora.library.find(adapter)
    assert entry is not None and "6 examples" in entry.source  # the six train items, never the held-out ones
    assert sum("Training a LoRA adapter on 6 train items" in m for m in messages) == 1

    messages.clear()
    run = run_lab(context, store.get(part.id), on_progress=lambda p: messages.append(p.message) if p.message else None)
    assert run.status == "finished", run.message
    assert not any("Training a LoRA adapter" in m for m in messages)  # resumed with the adapter already trained

    trained = [r for r in run.results if r["candidate"] == candidates[0].name]
    plain = [r for r in run.results if r["candidate"] == candidates[1].name]
    assert len(trained) == len(plain) == len(TEST)
    assert all(adapter in str(r["setup"]) for r in trained)
    assert not any(adapter in str(r["setup"]) for r in plain)
    scores = {row.candidate: row.correct for row in summarise(run).rows}
    # The prompt cannot know the made-up word; the adapter taught it.
    assert scores[candidates[1].name] == 0, [r["answer"] for r in plain]
    assert scores[candidates[0].name] == len(TEST), [r["answer"] for r in trained]

    # The trained adapter is in the library, so a run can compare its scales: at 0 the fact is gone.
    scaled = run_lab(context, store.create(task_set, parse_candidates([f"lora:{adapter}@1, lora:{adapter}@0"]),
                                           model="m"))
    assert scaled.status == "finished", scaled.message
    full, off = (row.correct for row in summarise(scaled).rows)
    assert (full, off) == (len(TEST), 0), [r["answer"] for r in scaled.results]
    assert {r["setup"]["plugins"]["lora"]["adapters"][0]["scale"] for r in scaled.results} == {1.0, 0.0}
