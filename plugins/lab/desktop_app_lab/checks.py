"""Checks: how an answer is judged right or wrong against what a task set expects.

A check is a small object in the task set, ``{"kind": ..., options}``:

- ``exact``: the same text (surrounding spaces ignored);
- ``normalised``: the same words, case, spacing, quotes and end punctuation ignored;
- ``number``: the same number, within ``tolerance`` (absolute) or ``relative`` (a fraction);
- ``regex``: the answer matches ``pattern`` (default: the expected text as a pattern);
- ``contains_all`` / ``contains_any``: the answer contains every / one of the expected phrases;
- ``json``: the answer's JSON object is valid for ``schema`` and its ``fields`` equal the
  expected ones (default: every field expected);
- ``judge``: the model judges the answer against the expected one (see :mod:`desktop_app_lab.judge`).

Every kind takes ``answer_pattern``: a regular expression the answer is first reduced to (its
first group, or the whole match), for answers that wrap the part that counts in other words.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from desktop_app_lab.tasks import TaskSetError

__all__ = ["CHECK_KINDS", "Verdict", "check_answer", "describe_check", "validate_check"]

CHECK_KINDS = ("exact", "normalised", "number", "regex", "contains_all", "contains_any", "json", "judge")


@dataclass
class Verdict:
    """Whether an answer is right, the part of it that was judged, and why (for people)."""

    passed: bool
    extracted: str
    detail: str


def _pattern(text: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise TaskSetError(f"The check's {what} {text!r} is not a valid regular expression ({exc}).") from exc


def validate_check(check: Any) -> dict[str, Any]:
    """The check with its defaults filled in; TaskSetError saying what to fix."""
    if not isinstance(check, dict) or not check.get("kind"):
        raise TaskSetError('A check is an object with a kind, e.g. {"kind": "exact"}.')
    kind = check["kind"]
    if kind not in CHECK_KINDS:
        raise TaskSetError(f"Unknown check {kind!r}; the checks are: {', '.join(CHECK_KINDS)}.")
    filled = dict(check)
    if filled.get("answer_pattern"):
        _pattern(str(filled["answer_pattern"]), "answer_pattern")
    if kind == "number":
        for option in ("tolerance", "relative"):
            value = filled.setdefault(option, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise TaskSetError(f"The number check's {option} must be a number of at least 0, not {value!r}.")
    elif kind == "regex":
        if filled.get("pattern"):
            _pattern(str(filled["pattern"]), "pattern")
        filled.setdefault("ignore_case", True)
    elif kind == "json":
        schema = filled.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise TaskSetError("The JSON check's schema must be an object (a JSON Schema).")
        fields = filled.get("fields")
        if fields is not None and not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
            raise TaskSetError("The JSON check's fields must be a list of field names.")
    return filled


def describe_check(check: dict[str, Any]) -> str:
    """The check in a few words, e.g. "the number, within ±0.5"."""
    check = validate_check(check)
    kind = check["kind"]
    if kind == "number":
        within = []
        if check["tolerance"]:
            within.append(f"±{check['tolerance']:g}")
        if check["relative"]:
            within.append(f"±{check['relative']:.0%}")
        text = "the same number" + (f", within {' or '.join(within)}" if within else "")
    else:
        text = {"exact": "exactly the expected text", "normalised": "the expected words (case and punctuation ignored)",
                "regex": "the answer matches the expected pattern",
                "contains_all": "the answer contains every expected phrase",
                "contains_any": "the answer contains one of the expected phrases",
                "json": "a JSON object" + (" valid for the schema" if check.get("schema") else "")
                        + " with the expected fields",
                "judge": "the model, as judge, finds it agrees with the expected answer"}[kind]
    if check.get("answer_pattern"):
        text += ", in the part of the answer a pattern picks out"
    return text


def normalise(text: str) -> str:
    """Lower case, one space between words, no quotes or punctuation around the answer."""
    text = " ".join(str(text).casefold().split())
    return text.strip(" \t\"'`“”‘’.,;:!?()[]*_")


_NUMBER = r"[-−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-−]?\d+(?:\.\d+)?|[-−]?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])[$£€]?({_NUMBER})")
_MARKED_RE = re.compile(rf"(?:answer(?: is)?|=|result(?: is)?)\s*[:=]?\s*[$£€]?({_NUMBER})", re.IGNORECASE)


def parse_number(text: Any) -> float | None:
    """A number written as a person would ("1,234", "-3.5", "$12", "12.")."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    match = _NUMBER_RE.search(str(text).strip())
    if not match:
        return None
    return float(match.group(1).replace(",", "").replace("−", "-"))


def find_number(answer: str) -> str | None:
    """The number an answer gives: the one after "answer is" or "=" when it says so, else its last."""
    marked = list(_MARKED_RE.finditer(answer))
    if marked:
        return marked[-1].group(1)
    found = list(_NUMBER_RE.finditer(answer))
    return found[-1].group(1) if found else None


def _phrases(expected: Any) -> list[str]:
    if isinstance(expected, list):
        return [str(e) for e in expected if str(e).strip()]
    return [str(expected)] if str(expected).strip() else []


def first_json_object(text: str) -> Any:
    """The first JSON object in ``text`` (fences and words around it allowed); ValueError if none."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("the answer holds no JSON object")


def _schema_problems(value: Any, schema: dict[str, Any]) -> list[str]:
    try:
        import jsonschema
    except ImportError:  # the few rules task sets use, when the library is missing
        return _basic_schema_problems(value, schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(str(p) for p in e.absolute_path) or 'the object'}: {e.message}"
            for e in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))]


def _basic_schema_problems(value: Any, schema: dict[str, Any]) -> list[str]:
    types = {"object": dict, "string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list}
    problems = []
    if schema.get("type") in types and not isinstance(value, types[schema["type"]]):
        return [f"the value is not of type {schema['type']}"]
    if isinstance(value, dict):
        problems += [f"{name}: missing" for name in schema.get("required", []) if name not in value]
        for name, sub in (schema.get("properties") or {}).items():
            if name in value and isinstance(sub, dict):
                problems += [f"{name}: {p}" for p in _basic_schema_problems(value[name], sub)]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{value!r} is not one of {schema['enum']}")
    return problems


def _same_value(got: Any, want: Any) -> bool:
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        number = parse_number(got)
        return number is not None and math.isclose(number, float(want), abs_tol=1e-9)
    if isinstance(want, str):
        return normalise(str(got)) == normalise(want)
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(_same_value(g, w) for g, w in zip(got, want))
    return got == want


def check_answer(check: dict[str, Any], answer: str, expected: Any, *, judge: Any = None,
                 question: str = "") -> Verdict:
    """Judge ``answer`` against ``expected`` by ``check``. TaskSetError for a broken check (or a
    judge check without a judge); a wrong answer is a Verdict, never an error."""
    check = validate_check(check)
    kind = check["kind"]
    text = str(answer or "").strip()
    if check.get("answer_pattern"):
        match = _pattern(str(check["answer_pattern"]), "answer_pattern").search(text)
        if match is None:
            return Verdict(False, text[:200], "The answer does not have the expected form (the check's "
                                              "answer_pattern found nothing in it).")
        text = (match.group(1) if match.groups() and match.group(1) is not None else match.group(0)).strip()
    if kind == "exact":
        want = str(expected).strip()
        return Verdict(text == want, text, "Exactly as expected." if text == want else f"Expected exactly {want!r}.")
    if kind == "normalised":
        passed = normalise(text) == normalise(str(expected))
        return Verdict(passed, text, "The expected words." if passed else f"Expected {str(expected)!r}.")
    if kind == "number":
        return _check_number(check, text, expected)
    if kind == "regex":
        pattern = str(check.get("pattern") or expected)
        flags = re.IGNORECASE if check.get("ignore_case", True) else 0
        try:
            passed = re.search(pattern, text, flags) is not None
        except re.error as exc:
            raise TaskSetError(f"The expected pattern {pattern!r} is not a valid regular expression ({exc}).") from exc
        return Verdict(passed, text, "Matches the pattern." if passed else f"Does not match {pattern!r}.")
    if kind in ("contains_all", "contains_any"):
        phrases = _phrases(expected)
        if not phrases:
            raise TaskSetError("A contains check needs at least one expected phrase.")
        haystack = " ".join(text.casefold().split())
        found = [p for p in phrases if " ".join(p.casefold().split()) in haystack]
        if kind == "contains_all":
            missing = [p for p in phrases if p not in found]
            return Verdict(not missing, text, "Contains every expected phrase." if not missing
                           else "Missing: " + ", ".join(repr(m) for m in missing) + ".")
        return Verdict(bool(found), text, f"Contains {found[0]!r}." if found
                       else "Contains none of: " + ", ".join(repr(p) for p in phrases) + ".")
    if kind == "json":
        return _check_json(check, text, expected)
    if judge is None:
        raise TaskSetError("This set is judged by the model; the run needs a judge (a loaded model).")
    verdict = judge.judge(question, text, expected)
    return Verdict(bool(verdict.passed), text, verdict.detail)


def _check_number(check: dict[str, Any], text: str, expected: Any) -> Verdict:
    want = parse_number(expected)
    if want is None:
        raise TaskSetError(f"The expected answer {expected!r} is not a number, but the check compares numbers.")
    found = find_number(text)
    if found is None:
        return Verdict(False, text[:200], f"No number in the answer; expected {want:g}.")
    got = float(found.replace(",", "").replace("−", "-"))
    allowed = max(float(check["tolerance"]), float(check["relative"]) * abs(want))
    passed = abs(got - want) <= allowed + 1e-9
    detail = f"{got:g} is {'' if passed else 'not '}{want:g}" + (f" (within ±{allowed:g})" if allowed else "") + "."
    return Verdict(passed, found, detail)


def _check_json(check: dict[str, Any], text: str, expected: Any) -> Verdict:
    try:
        value = first_json_object(text)
    except ValueError:
        return Verdict(False, text[:200], "The answer holds no JSON object.")
    shown = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if check.get("schema"):
        problems = _schema_problems(value, check["schema"])
        if problems:
            return Verdict(False, shown, "Not valid for the schema: " + "; ".join(problems[:3]) + ".")
    if not isinstance(expected, dict):
        return Verdict(True, shown, "A valid JSON object.")
    fields = check.get("fields") or list(expected)
    missing = [f for f in fields if f not in value]
    wrong = [f for f in fields if f in value and f in expected and not _same_value(value[f], expected[f])]
    if missing or wrong:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                [f"{f} is {value[f]!r}, expected {expected[f]!r}" for f in wrong]
        text = "; ".join(parts)
        return Verdict(False, shown, text[:1].upper() + text[1:] + ".")
    return Verdict(True, shown, f"Every expected field is right ({', '.join(fields)}).")
