"""The model as judge, for answers no rule can check, and how far to trust it.

The judge is asked, at temperature 0 and held to a small JSON shape by a grammar, whether an
answer agrees with the reference answer. A judge is only as good as its agreement with people:
a task set's ``judge_labels`` (answers a person marked right or wrong) measure it, as the share
of agreements and Cohen's kappa (agreement beyond chance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from desktop_app.api import ChatMessage, GenerationOptions

from desktop_app_lab.checks import Verdict

__all__ = ["Agreement", "DEFAULT_RUBRIC", "Judge", "describe_agreement", "judge_agreement"]

DEFAULT_RUBRIC = ("You check answers. Say whether the answer agrees with the reference answer on the facts "
                  "the question asks for. Wording, length and extra detail do not matter; a different or "
                  "missing fact makes it incorrect.")
VERDICT_SCHEMA = {"type": "object", "properties": {"verdict": {"enum": ["correct", "incorrect"]},
                                                   "reason": {"type": "string", "maxLength": 200}},
                  "required": ["verdict", "reason"]}


class Judge:
    """Judges answers with ``complete(messages, options)`` (the loaded model)."""

    def __init__(self, complete: Callable[[list[ChatMessage], GenerationOptions], Any],
                 rubric: str = DEFAULT_RUBRIC, max_tokens: int = 96):
        self.complete, self.rubric, self.max_tokens = complete, rubric, max_tokens

    def judge(self, question: str, answer: str, expected: Any) -> Verdict:
        """Whether ``answer`` agrees with ``expected``; an unreadable reply is judged wrong, saying so."""
        reference = " / ".join(map(str, expected)) if isinstance(expected, list) else str(expected)
        prompt = (f"Question: {question}\nReference answer: {reference}\nAnswer to check: {answer}\n\n"
                  'Reply with JSON: {"verdict": "correct" or "incorrect", "reason": a short reason}.')
        options = GenerationOptions(temperature=0.0, max_tokens=self.max_tokens, json_schema=VERDICT_SCHEMA)
        reply = self.complete([ChatMessage("system", self.rubric), ChatMessage("user", prompt)], options)
        text = reply if isinstance(reply, str) else getattr(reply, "text", "")
        try:
            data = json.loads(text)
            verdict, reason = data["verdict"], " ".join(str(data.get("reason", "")).split())
        except (ValueError, KeyError, TypeError):
            return Verdict(False, answer, f"The judge's reply could not be read: {text[:120]!r}.")
        if verdict not in ("correct", "incorrect"):
            return Verdict(False, answer, f"The judge's reply could not be read: {text[:120]!r}.")
        return Verdict(verdict == "correct", answer, f"Judge: {verdict}" + (f" ({reason})" if reason else "") + ".")


@dataclass
class Agreement:
    """How often the judge agrees with people's labels, and Cohen's kappa."""

    n: int
    agreed: int
    rate: float
    kappa: float | None
    disagreements: list[dict[str, Any]] = field(default_factory=list)


def cohen_kappa(pairs: list[tuple[bool, bool]]) -> float | None:
    """Agreement beyond chance of two raters (None when chance alone explains everything)."""
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    first, second = sum(a for a, _ in pairs) / n, sum(b for _, b in pairs) / n
    expected = first * second + (1 - first) * (1 - second)
    if expected >= 1.0:
        return None  # both said the same of every answer: kappa is undefined
    return (observed - expected) / (1 - expected)


def judge_agreement(judge: Judge, task_set: Any) -> Agreement:
    """The judge's verdicts on the set's labelled answers, compared with the labels."""
    pairs, disagreements = [], []
    for label in task_set.judge_labels:
        item = task_set.item(label["item"])
        verdict = judge.judge(item.input, label["answer"], item.expected)
        human = bool(label["passed"])
        pairs.append((human, verdict.passed))
        if human != verdict.passed:
            disagreements.append({"item": item.id, "answer": label["answer"], "label": human,
                                  "judge": verdict.passed, "detail": verdict.detail})
    agreed = sum(a == b for a, b in pairs)
    return Agreement(len(pairs), agreed, agreed / len(pairs) if pairs else 0.0, cohen_kappa(pairs), disagreements)


def describe_agreement(agreement: Agreement) -> str:
    """E.g. "The judge agrees with your labels on 7 of 8 (88%, κ 0.75)"."""
    if not agreement.n:
        return "The set has no labelled answers to check the judge against."
    kappa = f", κ {agreement.kappa:.2f}" if agreement.kappa is not None else ""
    return (f"The judge agrees with your labels on {agreement.agreed} of {agreement.n} "
            f"({agreement.rate:.0%}{kappa}).")
