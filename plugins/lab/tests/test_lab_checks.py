"""Checks judge answers as a person would, and a broken check says what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop_app_lab.checks import check_answer, describe_check, validate_check
from desktop_app_lab.tasks import TaskSetError, load_task_set

SETS = Path(__file__).resolve().parents[1] / "desktop_app_lab" / "sets"


@pytest.mark.parametrize("answer, expected, passed", [
    ("The answer is 1,234.", "1234", True), ("4 + 29 = 33", "33", True), ("It costs $12.", 12, True),
    ("-3.5", "-3.5", True), ("I think 7, no wait: the answer is 8", "8", True), ("No idea.", "3", False),
    ("12 apples and 5 pears, so 17", "17", True), ("17.0", "17", True), ("18", "17", False),
])
def test_a_number_is_found_however_it_is_written(answer, expected, passed):
    assert check_answer({"kind": "number"}, answer, expected).passed is passed


def test_number_tolerance_absolute_and_relative():
    assert check_answer({"kind": "number", "tolerance": 0.5}, "about 10.4", "10").passed
    assert not check_answer({"kind": "number", "tolerance": 0.5}, "10.6", "10").passed
    verdict = check_answer({"kind": "number", "relative": 0.1}, "108", 100)
    assert verdict.passed and "within ±10" in verdict.detail and verdict.extracted == "108"
    assert "No number" in check_answer({"kind": "number"}, "many", "3").detail


def test_text_checks():
    assert check_answer({"kind": "exact"}, " Paris ", "Paris").passed
    assert not check_answer({"kind": "exact"}, "paris", "Paris").passed
    assert check_answer({"kind": "normalised"}, '"Billing."', "billing").passed
    assert check_answer({"kind": "regex", "pattern": r"\bLeeds\b"}, "She lives in leeds", "").passed
    assert not check_answer({"kind": "regex"}, "Leeds", r"^York$").passed
    verdict = check_answer({"kind": "contains_all"}, "Bring a pen and paper", ["pen", "Paper", "ink"])
    assert not verdict.passed and "'ink'" in verdict.detail
    assert check_answer({"kind": "contains_any"}, "At half  past eight", ["8:30", "half past eight"]).passed


def test_an_answer_pattern_picks_the_part_that_counts():
    check = {"kind": "normalised", "answer_pattern": r"(?i)\b(billing|delivery)\b"}
    verdict = check_answer(check, "This one is about Billing, I think.", "billing")
    assert verdict.passed and verdict.extracted == "Billing"
    assert "expected form" in check_answer(check, "No idea", "billing").detail


def test_json_answers_are_checked_against_the_schema_and_the_fields():
    check = {"kind": "json", "schema": {"type": "object", "required": ["name", "age"],
                                        "properties": {"age": {"type": "integer"}}}}
    expected = {"name": "Tom Baker", "age": 42}
    assert check_answer(check, 'Sure: ```json\n{"name": "tom baker", "age": 42}\n```', expected).passed
    verdict = check_answer(check, '{"name": "Tom Baker", "age": "42"}', expected)
    assert not verdict.passed and "schema" in verdict.detail and "age" in verdict.detail
    verdict = check_answer({"kind": "json"}, '{"name": "Tom", "age": 42}', expected)
    assert not verdict.passed and "Name is 'Tom', expected 'Tom Baker'" in verdict.detail
    assert check_answer({"kind": "json", "fields": ["age"]}, '{"name": "Tom", "age": 42}', expected).passed
    assert "no JSON object" in check_answer({"kind": "json"}, "Tom, 42", expected).detail


def test_a_broken_check_says_what_to_fix():
    with pytest.raises(TaskSetError, match="Unknown check 'fuzzy'.*exact, normalised"):
        validate_check({"kind": "fuzzy"})
    with pytest.raises(TaskSetError, match="tolerance must be a number of at least 0"):
        validate_check({"kind": "number", "tolerance": -1})
    with pytest.raises(TaskSetError, match="not a valid regular expression"):
        check_answer({"kind": "exact", "answer_pattern": "(unclosed"}, "x", "x")
    with pytest.raises(TaskSetError, match="needs a judge|judged by the model"):
        check_answer({"kind": "judge"}, "x", "x")
    with pytest.raises(TaskSetError, match="not a number"):
        check_answer({"kind": "number"}, "3", "three")
    assert describe_check({"kind": "number", "tolerance": 0.5}) == "the same number, within ±0.5"


@pytest.mark.parametrize("name", ["arithmetic", "classification", "extraction", "handbook_qa"])
def test_every_shipped_set_accepts_its_own_expected_answers(name):
    task_set = load_task_set(SETS / f"{name}.json")
    validate_check(task_set.check)
    for item in task_set.items:
        expected = item.expected
        answer = json.dumps(expected) if isinstance(expected, dict) else (
            expected[0] if isinstance(expected, list) else str(expected))
        verdict = check_answer(task_set.check_for(item), answer, expected)
        assert verdict.passed, (item.id, verdict.detail)
