"""The model as judge: its replies read, its agreement with people's labels measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from desktop_app_lab.judge import Judge, cohen_kappa, describe_agreement, judge_agreement
from desktop_app_lab.tasks import load_task_set

SETS = Path(__file__).resolve().parents[1] / "desktop_app_lab" / "sets"


def test_kappa_and_agreement_are_counted_right():
    assert cohen_kappa([(True, True), (False, False)]) == 1.0
    assert cohen_kappa([(True, False), (False, True)]) == -1.0
    assert cohen_kappa([(True, True), (True, True)]) is None  # nothing beyond chance to measure
    assert cohen_kappa([(True, True), (True, False), (False, False), (False, False)]) == pytest.approx(0.5)


def test_a_judge_that_always_says_correct_agrees_only_with_the_right_labels():
    task_set = load_task_set(SETS / "handbook_qa.json")
    asked = []

    def complete(messages, options):
        asked.append((messages, options))
        return '{"verdict": "correct", "reason": "same fact"}'

    agreement = judge_agreement(Judge(complete), task_set)
    right = sum(bool(label["passed"]) for label in task_set.judge_labels)
    assert agreement.n == len(task_set.judge_labels) == 8 and agreement.agreed == right
    assert len(agreement.disagreements) == 8 - right and agreement.kappa in (None, 0.0)
    assert asked[0][1].json_schema["properties"]["verdict"]["enum"] == ["correct", "incorrect"]
    assert f"on {right} of 8" in describe_agreement(agreement)


def test_an_unreadable_reply_is_judged_wrong_saying_so():
    verdict = Judge(lambda m, o: "yes!!").judge("q", "a", "b")
    assert not verdict.passed and "could not be read" in verdict.detail


def test_the_built_in_model_judges_held_to_the_verdict_shape(paths):
    from desktop_app.context import build_context

    context = build_context(paths)
    try:
        context.load_model(None)
        lab = context.plugin_context("lab")
        verdict = Judge(lambda messages, options: lab.complete(messages, options)).judge(
            "What time does the office open?", "It opens at 8:30.", ["8:30"])
        assert isinstance(verdict.passed, bool) and verdict.detail.startswith("Judge: ")
    finally:
        context.close()
