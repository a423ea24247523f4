"""A run's report as one self-contained HTML page.

Everything is inside the file (inline CSS, charts as base64 PNG data URIs, no scripts, no outside
links), so it can be mailed, archived or opened offline and still look the same. Everything that
came from a task set or a model is HTML-escaped: an item may well contain markup.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence

from desktop_app.api import atomic_write_text

from desktop_app_lab.stats import (
    Disagreement,
    ScoreRow,
    Sensitivity,
    format_percent,
    format_seconds,
)
from desktop_app_lab.tasks import TaskItem, TaskSet

__all__ = ["render_report", "write_report", "MAX_DISAGREEMENTS"]

#: The disagreements table shows at most this many items (the rest are counted in a note).
MAX_DISAGREEMENTS = 50
#: Inputs longer than this are shortened in tables (the per-candidate sections keep them whole).
SHORT_INPUT = 300
SIGNIFICANCE = 0.05

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d1d1f; background: #fff; margin: 2rem auto; max-width: 72rem; padding: 0 1.25rem;
       line-height: 1.45; font-size: 15px; }
h1 { font-size: 1.6rem; margin-bottom: .25rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #e3e3e3; padding-bottom: .3rem; }
h3 { font-size: 1rem; }
.lead { color: #555; margin-top: 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1.2rem; }
dl.facts dt { color: #666; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; width: 100%; margin: .75rem 0; font-size: .92rem; }
th, td { border: 1px solid #e1e1e1; padding: .35rem .55rem; text-align: left; vertical-align: top; }
th { background: #f6f6f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.winner td { background: #f2f8ee; }
.badge { display: inline-block; font-size: .75rem; padding: 0 .4rem; border-radius: .6rem;
         border: 1px solid #b9d3a8; background: #e8f3df; color: #2d5a16; margin-left: .3rem; }
.badge.front { border-color: #b6cde4; background: #e8f0f9; color: #1f4f7d; }
.muted { color: #777; }
.desc { color: #666; font-size: .82rem; }
.ok { color: #2d7a1f; font-weight: 600; }
.bad { color: #b3261e; font-weight: 600; }
img.chart { max-width: 100%; height: auto; border: 1px solid #eee; }
details { border: 1px solid #e1e1e1; border-radius: 4px; margin: .6rem 0; padding: .3rem .7rem; }
summary { cursor: pointer; font-weight: 600; }
pre { white-space: pre-wrap; word-break: break-word; background: #fafafa; border: 1px solid #eee;
      padding: .4rem .6rem; margin: .2rem 0; font-size: .85rem; }
.note { color: #555; font-size: .88rem; }
"""


def _e(value: Any) -> str:
    """Text for HTML: escaped, None as an em dash, objects (JSON expectations) as compact JSON."""
    if value is None:
        return "—"
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
        except (TypeError, ValueError):
            value = str(value)
    return escape(value, quote=True)


def _short(text: Any, limit: int = SHORT_INPUT) -> str:
    raw = "" if text is None else str(text)
    return _e(raw if len(raw) <= limit else raw[: limit - 1].rstrip() + "…")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _check_description(task_set: TaskSet) -> str:
    """How answers were judged, in words when the checks module can say (else the check's kind)."""
    check = dict(task_set.check or {})
    try:
        from desktop_app_lab.checks import describe_check
    except ImportError:
        describe_check = None
    if describe_check is not None:
        try:
            return str(describe_check(check))
        except Exception:  # noqa: BLE001 - a report never fails over a description; the kind will do
            pass
    return str(check.get("kind") or "—")


def _comparison(row: ScoreRow, baseline: str) -> str:
    """The vs-baseline cell: the difference, the items won and lost, and what the p-value means."""
    if row.candidate == baseline:
        return '<span class="muted">baseline</span>'
    if row.diff is None or row.p_value is None:
        return '<span class="muted">no items in common</span>'
    points = row.diff * 100
    sign = "+" if points > 0 else ("−" if points < 0 else "±")
    head = f"{sign}{abs(points):.0f} points · won {row.wins}, lost {row.losses} · p = {row.p_value:.3g}"
    if not row.wins and not row.losses:
        words = "the same items right"
    elif row.p_value < SIGNIFICANCE:
        words = "a significant difference" + (" (better)" if points > 0 else " (worse)")
    else:
        words = "not a significant difference"
    return f"{escape(head)}<br><span class=\"note\">{escape(words)}</span>"


def _facts(title: str, task_set: TaskSet, run: Mapping[str, Any], judge_agreement: str | None) -> str:
    test_items = len(task_set.test)
    facts = [
        ("Task set", f"{task_set.name} ({test_items} test item{'s' if test_items != 1 else ''}, "
                     f"{len(task_set.train)} train)"),
        ("Model", run.get("model") or "the loaded model"),
        ("Seed", run.get("seed")),
        ("Answers written", None if "batched" not in run else
         "several at once, in one batch (each may differ from a one-at-a-time answer in a rare token)"
         if run["batched"] else "one at a time (reproducible to the token)"),
        ("Date", str(run.get("created") or "").replace("T", " ")),
        ("Run", run.get("id")),
        ("Status", " — ".join(str(x) for x in (run.get("status"), run.get("message")) if x)),
        ("Answers judged by", _check_description(task_set)),
    ]
    if run.get("judge") and run.get("judge") != judge_agreement:
        facts.append(("Judge", run.get("judge")))
    if judge_agreement:
        facts.append(("Judge agreement", judge_agreement))
    body = "".join(f"<dt>{escape(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v not in (None, ""))
    lead = f'<p class="lead">{_e(task_set.description)}</p>' if task_set.description else ""
    return f"<h1>{_e(title)}</h1>{lead}<dl class=\"facts\">{body}</dl>"


def _scorecard(rows: Sequence[ScoreRow], front: Sequence[str], best_name: str | None,
               descriptions: Mapping[str, str]) -> str:
    baseline = rows[0].candidate if rows else ""
    lines = []
    for row in rows:
        badges = ""
        if row.candidate == best_name:
            badges += '<span class="badge">★ best</span>'
        if row.candidate in front:
            badges += '<span class="badge front">Pareto front</span>'
        description = descriptions.get(row.candidate)
        name = f"<strong>{_e(row.candidate)}</strong>{badges}"
        if description and description != row.candidate:
            name += f'<br><span class="desc">{_e(description)}</span>'
        if row.n:
            accuracy = f"{format_percent(row.accuracy)} <span class=\"muted\">({row.correct}/{row.n})</span>"
            interval = f"{format_percent(row.ci_low)}–{format_percent(row.ci_high)}"
        else:
            accuracy, interval = '<span class="muted">no answers</span>', "—"
        tokens = "—" if row.tokens_mean is None else f"{row.tokens_mean:.0f}"
        marked = ' class="winner"' if row.candidate == best_name else ""
        lines.append(
            f"<tr{marked}><td>{name}</td>"
            f"<td class=\"num\">{accuracy}</td><td class=\"num\">{interval}</td>"
            f"<td class=\"num\">{format_seconds(row.latency_p50)}</td>"
            f"<td class=\"num\">{format_seconds(row.latency_p95)}</td>"
            f"<td class=\"num\">{tokens}</td><td class=\"num\">{row.errors}</td>"
            f"<td>{_comparison(row, baseline)}</td></tr>")
    head = ("<tr><th>Candidate</th><th>Accuracy</th><th>95% interval</th><th>Time p50</th><th>Time p95</th>"
            "<th>Tokens / answer</th><th>Errors</th><th>Versus the baseline</th></tr>")
    note = ("<p class=\"note\">The 95% interval is Wilson's. The comparison with the baseline (the first "
            "candidate) counts the items only one of the two got right and tests them with an exact McNemar "
            f"test; below p = {SIGNIFICANCE} the difference is unlikely to be chance. The Pareto front is the "
            "candidates no other beats on accuracy, time and tokens all at once.</p>")
    return f"<h2>Scorecard</h2><table>{head}{''.join(lines)}</table>{note}"


def _verdict(record: Mapping[str, Any] | None) -> str:
    if record is None:
        return '<span class="muted">not answered</span>'
    mark = '<span class="ok">✓</span>' if record.get("passed") else '<span class="bad">✗</span>'
    return f"{mark} {_short(record.get('extracted'), 120)}"


def _disagreements(disagreements: Sequence[Disagreement], candidates: Sequence[str],
                   items: Mapping[str, TaskItem], answers: Mapping[tuple[str, str], Mapping[str, Any]]) -> str:
    from desktop_app_lab.stats import summary_line

    html = f"<h2>Where the candidates differ</h2><p>{escape(summary_line(disagreements, candidates))}</p>"
    if not disagreements:
        return html
    head = "<tr><th>Item</th><th>Input</th><th>Expected</th>" + "".join(
        f"<th>{_e(name)}</th>" for name in candidates) + "</tr>"
    lines = []
    for found in disagreements[:MAX_DISAGREEMENTS]:
        item = items.get(found.item)
        expected = item.expected if item is not None else next(
            (answers[(c, found.item)].get("expected") for c in candidates if (c, found.item) in answers), None)
        cells = "".join(f"<td>{_verdict(answers.get((name, found.item)))}</td>" for name in candidates)
        lines.append(f"<tr><td>{_e(found.item)}</td><td>{_short(item.input if item else None)}</td>"
                     f"<td>{_short(expected, 120)}</td>{cells}</tr>")
    html += f"<table>{head}{''.join(lines)}</table>"
    if len(disagreements) > MAX_DISAGREEMENTS:
        html += (f"<p class=\"note\">Showing the first {MAX_DISAGREEMENTS} of {len(disagreements)} items; "
                 "every answer is in the sections below.</p>")
    return html


def _sensitivity(sensitivity: Mapping[str, Sensitivity], task_set: TaskSet) -> str:
    from desktop_app_lab.charts import sensitivity_chart_png

    parts = ["<h2>Prompt sensitivity</h2>"]
    for name, found in sensitivity.items():
        variants = found.variants or [None, *range(len(found.accuracies) - 1)]
        lines = []
        for variant, accuracy in zip(variants, found.accuracies):
            if variant is None:
                label, wording = "main", task_set.instruction
            else:
                label = f"paraphrase {variant + 1}"
                wording = task_set.paraphrases[variant] if variant < len(task_set.paraphrases) else None
            lines.append(f"<tr><td>{escape(label)}</td><td>{_short(wording)}</td>"
                         f"<td class=\"num\">{format_percent(accuracy)}</td></tr>")
        png = sensitivity_chart_png(name, found)
        parts.append(
            f"<h3>{_e(name)}</h3>"
            f"<p>Accuracy ranges from {format_percent(found.low)} to {format_percent(found.high)} "
            f"(a spread of {found.spread * 100:.0f} points; mean {format_percent(found.mean)}, "
            f"standard deviation {found.stdev * 100:.1f} points) across {len(found.accuracies)} wordings "
            "of the instruction.</p>"
            f"<img class=\"chart\" alt=\"Accuracy of {_e(name)} per instruction\" src=\"{_data_uri(png)}\">"
            f"<table><tr><th>Instruction</th><th>Wording</th><th>Accuracy</th></tr>{''.join(lines)}</table>")
    return "".join(parts)


def _answers(candidates: Sequence[str], items: Mapping[str, TaskItem],
             answers: Mapping[tuple[str, str], Mapping[str, Any]]) -> str:
    parts = ["<h2>Every answer</h2>"]
    known = list(items)
    for name in candidates:
        mine = {item: record for (candidate, item), record in answers.items() if candidate == name}
        ordered = [i for i in known if i in mine] + [i for i in mine if i not in items]
        right = sum(1 for i in ordered if mine[i].get("passed"))
        blocks = []
        for item_id in ordered:
            record = mine[item_id]
            item = items.get(item_id)
            facts = [format_seconds(record.get("latency") if isinstance(record.get("latency"), (int, float)) else None),
                     f"{record.get('tokens') or 0} tokens"]
            error = f"<p class=\"bad\">Error: {_e(record.get('error'))}</p>" if record.get("error") else ""
            detail = f"<p class=\"note\">{_e(record.get('detail'))}</p>" if record.get("detail") else ""
            blocks.append(
                f"<h3>{_e(item_id)}: {_verdict(record)} "
                f"<span class=\"muted\">· {escape(' · '.join(facts))}</span></h3>"
                f"<p><strong>Input</strong></p><pre>{_e(item.input if item else None)}</pre>"
                f"<p><strong>Expected</strong></p><pre>{_e(item.expected if item else record.get('expected'))}</pre>"
                f"<p><strong>Answer</strong></p><pre>{_e(record.get('answer') or '')}</pre>{detail}{error}")
        body = "".join(blocks) or '<p class="muted">No answers.</p>'
        parts.append(f"<details><summary>{_e(name)} — {right} of {len(ordered)} right</summary>{body}</details>")
    return "".join(parts)


def render_report(*, title: str, task_set: TaskSet, run: dict[str, Any], rows: Sequence[ScoreRow],
                  front: Sequence[str], best_name: str | None, disagreements: Sequence[Disagreement],
                  items: Mapping[str, TaskItem], answers: Mapping[tuple[str, str], Mapping[str, Any]],
                  sensitivity: Mapping[str, Sensitivity] | None = None,
                  judge_agreement: str | None = None) -> str:
    """The whole report as one HTML page: the run's facts, the scorecard with the winner marked,
    the accuracy-against-time chart, prompt sensitivity (when measured), the items that split the
    candidates, and every answer per candidate (folded away).

    ``run`` is :meth:`Run.to_dict`; ``answers`` maps (candidate, item id) to that answer's result
    under the main instruction; ``judge_agreement`` is a sentence on how often the judge agreed
    with people's verdicts, when it was checked.
    """
    from desktop_app_lab.charts import pareto_chart_png

    candidates = [r.candidate for r in rows]
    descriptions = {str(c.get("name")): str(c.get("description") or "")
                    for c in run.get("candidates") or [] if isinstance(c, dict)}
    chart = pareto_chart_png(rows, front, "Accuracy against time per answer")
    sections = [
        _facts(title, task_set, run, judge_agreement),
        _scorecard(rows, front, best_name, descriptions),
        "<h2>Accuracy against time</h2>"
        f"<img class=\"chart\" alt=\"Accuracy against mean time per answer\" src=\"{_data_uri(chart)}\">"
        "<p class=\"note\">Up and to the left is better. The bars are 95% intervals; the highlighted points "
        "joined by a dashed line are the Pareto front.</p>",
    ]
    if sensitivity:
        sections.append(_sensitivity(sensitivity, task_set))
    sections.append(_disagreements(disagreements, candidates, items, answers))
    sections.append(_answers(candidates, items, answers))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(sections) + "</body></html>\n")


def write_report(path: Path | str, html: str) -> Path:
    """Write the report atomically (a reader never sees half a page); returns its path."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, html)
    return target
