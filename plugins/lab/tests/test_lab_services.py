"""The services the lab calls, offered by the other built-in plugins, for real: a folder indexed
and read back, the winner applied as the default template and as an API profile."""

from __future__ import annotations

import pytest

from desktop_app.api import ParleyError
from desktop_app_lab.candidates import parse_candidates
from desktop_app_lab.runs import RunStore
from desktop_app_lab.tasks import TaskSetError

from test_lab_runner import small_arithmetic


@pytest.fixture
def context(paths):
    from desktop_app.context import build_context

    context = build_context(paths)
    yield context
    context.close()


def test_a_missing_service_names_what_is_offered(context):
    lab = context.plugin_context("lab")
    with pytest.raises(ParleyError, match="No plugin offers 'nope.nothing'.*documents.index_folder.*templates.save"):
        lab.service("nope.nothing")
    assert callable(lab.service("lora.train")) and callable(lab.service("profiles.save"))


def test_a_folder_is_indexed_once_and_its_passages_read_back(context, tmp_path):
    folder = tmp_path / "Handbook"
    folder.mkdir()
    (folder / "leave.md").write_text("# Leave\n\nEveryone gets 26 days of paid leave a year, booked in the Rota app "
                                     "at least two weeks ahead.\n", encoding="utf-8")
    (folder / "office.md").write_text("# Office\n\nThe office opens at 8:30 and closes at 17:30 on weekdays.\n",
                                      encoding="utf-8")
    lab = context.plugin_context("lab")
    said = []
    made = lab.service("documents.index_folder")(folder, collection="lab-handbook", on_progress=said.append)
    assert made["collection"] == "lab-handbook" and made["files"] == 2 and made["chunks"] >= 2 and said
    again = lab.service("documents.index_folder")(folder, collection="lab-handbook")
    assert again["files"] == 2 and again["chunks"] == 0  # nothing changed: nothing embedded again
    passages = lab.service("documents.passages")("lab-handbook")
    assert {p["source"].rsplit("/", 1)[-1] for p in passages} == {"leave.md", "office.md"}
    assert any("26 days" in p["text"] for p in passages)
    with pytest.raises(ParleyError, match="not a folder"):
        lab.service("documents.index_folder")(tmp_path / "missing", collection="x")
    with pytest.raises(ParleyError, match="no collection 'nope'"):
        lab.service("documents.passages")("nope")


def test_the_winner_is_applied_as_the_default_template_and_an_api_profile(context, tmp_path):
    from desktop_app_lab.apply import apply_candidate

    task_set = small_arithmetic(tmp_path)
    run = RunStore(tmp_path / "runs").create(task_set, parse_candidates(["zero, few:2"]), model="m")
    for item in task_set.test:  # answers as a finished run stores them: few-shot wins
        for name, passed in (("zero-shot", False), (run.candidates[1].name, True)):
            run.record({"candidate": name, "item": item.id, "variant": None, "answer": "1", "extracted": "1",
                        "expected": item.expected, "passed": passed, "detail": "", "latency": 0.1, "tokens": 1,
                        "error": None})
    lab = context.plugin_context("lab")
    with pytest.raises(TaskSetError, match="resume it first"):  # not finished: the scores are not comparable yet
        apply_candidate(lab, run)
    run.status = "finished"
    applied = apply_candidate(lab, run, profile=True)
    assert applied.template == f"{task_set.name} – {run.candidates[1].name}" and applied.default
    templates = context.plugin_context("prompt_templates")
    assert templates.settings.get("default_template") == applied.template
    from desktop_app_prompt_templates import state as templates_state

    saved = templates_state.library.get(applied.template)
    assert saved.origin == "user" and len(saved.examples) == 2
    assert "max_tokens" not in (saved.preset or {})  # the run's short answers are for scoring, not for chats
    from desktop_app_server.profiles import ProfileStore

    profile = ProfileStore.of(context.plugin_context("server")).get(applied.profile)
    assert profile.plugins["prompt_templates"]["template"] == applied.template
    assert apply_candidate(lab, run).template == applied.template  # applying again replaces it
