"""The task set library: shipped sets found by name, the user's sets imported, copied and grown."""

from __future__ import annotations

import json

import pytest

from desktop_app_lab.library import TaskSetLibrary
from desktop_app_lab.tasks import TaskSetError, load_task_set


def test_the_four_shipped_sets_are_listed_and_found_by_name_or_file_stem(tmp_path):
    library = TaskSetLibrary(tmp_path / "sets")
    entries = library.entries()
    assert [e.path.stem for e in entries] == ["arithmetic", "classification", "extraction", "handbook_qa"]
    assert all(e.shipped and not e.problem and e.items >= 30 and e.test for e in entries)
    assert [e.documents for e in entries] == [False, False, False, True]
    assert library.load("arithmetic").name == library.load(entries[0].name).name
    assert library.load("HANDBOOK_QA").documents.is_dir()
    with pytest.raises(TaskSetError, match="no task set 'nope'.*arithmetic"):
        library.find("nope")


def test_importing_a_csv_makes_a_set_of_the_users_and_refuses_a_taken_name(tmp_path):
    source = tmp_path / "tickets.csv"
    source.write_text("question,answer\nPrinter jams,hardware\nCannot log in,account\n", encoding="utf-8")
    library = TaskSetLibrary(tmp_path / "sets")
    path = library.import_file(source, check={"kind": "normalised"})
    assert path.parent == tmp_path / "sets" and source.read_text().startswith("question,answer")
    task_set = library.load("tickets")
    assert [i.expected for i in task_set.items] == ["hardware", "account"]
    assert not [e for e in library.entries() if e.problem]
    with pytest.raises(TaskSetError, match="already a task set named 'tickets'"):
        library.import_file(source)


def test_a_broken_file_of_the_users_is_listed_with_its_problem_not_fatal(tmp_path):
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "broken.json").write_text("{not json", encoding="utf-8")
    entries = TaskSetLibrary(tmp_path / "sets").entries()
    broken = [e for e in entries if e.path.stem == "broken"]
    assert broken and "not a JSON task set" in broken[0].problem and len(entries) == 5


def test_adding_to_a_shipped_set_copies_it_and_keeps_its_documents(tmp_path):
    library = TaskSetLibrary(tmp_path / "sets")
    shipped = library.find("handbook_qa")
    before = shipped.read_bytes()
    task_set, item = library.add_item("handbook_qa", "How many days of leave?", ["25"], split="test",
                                      note="from a conversation")
    assert shipped.read_bytes() == before
    assert task_set.path.parent == tmp_path / "sets" and task_set.name.endswith("(mine)")
    again = load_task_set(task_set.path)
    assert again.documents == load_task_set(shipped).documents.resolve()
    assert again.item(item.id).extra == {"note": "from a conversation"} and again.split_of(again.item(item.id)) == "test"
    # the copy is now the one found by the name it was given; adding the same input twice is refused
    with pytest.raises(TaskSetError, match="already has an item with this input"):
        library.add_item(task_set.name, "How many days of leave?", ["25"])
    # adding to the shipped set again grows the same copy rather than failing on its name
    grown, _ = library.add_item("handbook_qa", "Who approves carry-over?", ["Tomasz Wren"])
    assert grown.path == task_set.path and len(grown.items) == len(again.items) + 1


def test_a_typed_right_answer_takes_the_form_the_sets_check_compares(tmp_path):
    library = TaskSetLibrary(tmp_path / "sets")
    assert library.expected_from_text(library.load("extraction"), '{"name": "Ann"}') == {"name": "Ann"}
    with pytest.raises(TaskSetError, match="JSON object"):
        library.expected_from_text(library.load("extraction"), "Ann")
    assert library.expected_from_text(library.load("handbook_qa"), "25 days, twenty-five") == ["25 days", "twenty-five"]
    assert library.expected_from_text(library.load("arithmetic"), " 42 \n") == "42"
    json.dumps(library.expected_from_text(library.load("arithmetic"), "7"))


def test_a_json_set_imported_by_a_relative_path_keeps_its_documents(tmp_path, monkeypatch):
    import shutil

    from desktop_app_lab.library import SHIPPED_FOLDER

    shutil.copytree(SHIPPED_FOLDER / "handbook", tmp_path / "mine" / "handbook")
    shutil.copy(SHIPPED_FOLDER / "handbook_qa.json", tmp_path / "mine" / "handbook_qa.json")
    monkeypatch.chdir(tmp_path)
    library = TaskSetLibrary(tmp_path / "sets")
    made = load_task_set(library.import_file("mine/handbook_qa.json", name="Handbook, mine"))
    assert made.documents == (tmp_path / "mine" / "handbook").resolve() and made.documents.is_dir()


def test_a_broken_set_is_refused_when_read_with_what_to_fix(tmp_path):
    import json

    from desktop_app_lab.tasks import import_items, task_set_from_dict

    item = {"id": "q1", "input": "2+2?", "expected": "4"}
    with pytest.raises(TaskSetError, match="Unknown check .sideways.; the checks are"):
        task_set_from_dict({"name": "S", "items": [item], "check": {"kind": "sideways"}})
    with pytest.raises(TaskSetError, match="item 1"):
        task_set_from_dict({"name": "S", "items": [{**item, "check": {"kind": "regex", "pattern": "("}}]})
    with pytest.raises(TaskSetError, match="judge label 1 is for the item 'q9', which the set does not have"):
        task_set_from_dict({"name": "S", "items": [item], "judge_labels": [{"item": "q9", "answer": "4",
                                                                             "passed": True}]})
    with pytest.raises(TaskSetError, match="judge label 1 must name an item"):
        task_set_from_dict({"name": "S", "items": [item], "judge_labels": [{"item": "q1", "passed": "yes"}]})
    short = tmp_path / "short.csv"
    short.write_text("question,answer\n2+2?,4\n3+3?\n", encoding="utf-8")
    with pytest.raises(TaskSetError, match="item 2 has an empty expected answer"):
        import_items(short)
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"answer": "4", "input": None}) + "\n", encoding="utf-8")
    with pytest.raises(TaskSetError, match="item 1 has no input"):
        import_items(missing)
