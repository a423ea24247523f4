"""Questions proposed from a folder of documents by the built-in model: every answer is a phrase
of its passage, with its source, saved as a set of the user's that searches the folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from desktop_app_lab.from_documents import answer_phrases, make_documents_set
from desktop_app_lab.library import TaskSetLibrary
from desktop_app_lab.tasks import TaskSetError, load_task_set

HANDBOOK = Path(__file__).resolve().parents[1] / "desktop_app_lab" / "sets" / "handbook"


def test_answer_phrases_are_facts_of_the_passage():
    text = "Everyone gets 26 days of paid leave; carry over up to 5 days until 31 March with Tomasz Wren's approval."
    phrases = answer_phrases(text)
    assert phrases[:2] == ["31 March", "26 days"] and "Tomasz Wren's" in phrases
    assert all(p in text for p in phrases)


def test_a_folder_becomes_a_reviewable_set_of_grounded_questions(paths, tmp_path):
    from desktop_app.context import build_context

    folder = tmp_path / "Handbook"
    shutil.copytree(HANDBOOK, folder)
    context = build_context(paths)
    try:
        context.load_model(None)
        lab = context.plugin_context("lab")
        library = TaskSetLibrary(tmp_path / "sets")
        said = []
        path = make_documents_set(lab, library, folder, "Handbook questions", count=2, on_progress=said.append)
        task_set = load_task_set(path)
        assert task_set.documents == folder.resolve() and task_set.check == {"kind": "contains_any"}
        assert len(task_set.items) == 2 and said
        for item in task_set.items:
            assert item.input.strip() and item.expected[0] in item.extra["passage"]
            assert (folder / item.extra["source"]).is_file()
        with pytest.raises(TaskSetError, match="already a task set named"):
            make_documents_set(lab, library, folder, "Handbook questions", count=1)
        with pytest.raises(TaskSetError, match="not a folder"):
            make_documents_set(lab, library, tmp_path / "nowhere", "Other", count=1)
    finally:
        context.close()
