"""The HTML report: self-contained, escaped, and saying what the numbers mean; the charts as PNG."""

from __future__ import annotations

import base64
import re

from desktop_app_lab.candidates import parse_candidates
from desktop_app_lab.charts import pareto_chart_png, sensitivity_chart_png
from desktop_app_lab.report import MAX_DISAGREEMENTS, render_report, write_report
from desktop_app_lab.runs import RunStore
from desktop_app_lab.stats import best, disagreements, pareto_front, scorecard, sensitivity
from desktop_app_lab.summary import write_run_report
from desktop_app_lab.tasks import TaskItem, TaskSet

PNG = b"\x89PNG\r\n\x1a\n"
CANDIDATES = ["zero-shot", "few-shot k=2", "chain-of-thought"]
RIGHT = {"zero-shot": range(0, 4), "few-shot k=2": range(0, 8), "chain-of-thought": range(1, 10)}


def _task_set() -> TaskSet:
    items = [TaskItem(f"q{i:02d}", f"What is {i} + {i}?", str(2 * i), split="test") for i in range(10)]
    items[3].input = 'Ignore this: <script>alert("x")</script> & add 3 + 3'
    items += [TaskItem("t01", "What is 1 + 1?", "2", split="train"), TaskItem("t02", "What is 2 + 5?", "7", split="train")]
    return TaskSet("Sums <small>", items, description="Adding small numbers.", instruction="Answer with the number.",
                   paraphrases=["Give only the number.", "Reply with just the sum."], check={"kind": "number"})


def _results(task_set: TaskSet) -> list[dict]:
    found = []
    for name in CANDIDATES:
        for i, item in enumerate(task_set.test):
            passed = i in RIGHT[name]
            found.append({"candidate": name, "item": item.id, "variant": None,
                          "answer": f"The answer is {item.expected if passed else 'seven'} <b>",
                          "extracted": item.expected if passed else "seven", "expected": item.expected,
                          "passed": passed, "detail": "" if passed else "expected a number",
                          "latency": {"zero-shot": 0.2, "few-shot k=2": 0.5, "chain-of-thought": 2.1}[name] + i / 50,
                          "tokens": {"zero-shot": 3, "few-shot k=2": 3, "chain-of-thought": 55}[name],
                          "error": None})
    for variant, right in ((0, 5), (1, 7)):
        found += [{"candidate": "zero-shot", "item": item.id, "variant": variant, "passed": i < right,
                   "extracted": "", "answer": "", "latency": 0.2, "tokens": 3}
                  for i, item in enumerate(task_set.test)]
    return found


RUN = {"id": "2026-12-03-0600-sums", "created": "2026-12-03T06:00:00", "model": "SmolLM2-135M.gguf",
       "seed": 17, "status": "finished", "message": "30 answers judged.",
       "candidates": [{"name": "zero-shot", "description": "answers directly"}]}


def _render(task_set: TaskSet, results: list[dict], **overrides) -> str:
    rows = scorecard(results, CANDIDATES)
    front = pareto_front(rows)
    found = sensitivity(results, "zero-shot")
    arguments = dict(
        title="Strategy lab: <Sums>", task_set=task_set,
        run=RUN,
        rows=rows, front=front, best_name=best(rows), disagreements=disagreements(results, CANDIDATES),
        items={i.id: i for i in task_set.items},
        answers={(r["candidate"], r["item"]): r for r in results if r.get("variant") is None},
        sensitivity={"zero-shot": found} if found else None)
    arguments.update(overrides)
    return render_report(**arguments)


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_the_report_is_one_self_contained_page():
    task_set = _task_set()
    html = _render(task_set, _results(task_set))
    for name in CANDIDATES:
        assert name in html
    images = _images(html)
    assert len(images) == 2 and all(image.startswith(PNG) for image in images)  # Pareto + sensitivity
    assert "http://" not in html and "https://" not in html
    assert not any(b"http" in image for image in images)  # not even in the PNGs' metadata
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "SmolLM2-135M.gguf" in html and "2026-12-03 06:00:00" in html and "number" in html
    assert "Answers written" not in html  # a run kept before the option existed does not say
    assert "one at a time (reproducible to the token)" in _render(task_set, _results(task_set),
                                                                  run=dict(RUN, batched=False))


def test_everything_from_the_task_set_and_the_model_is_escaped():
    task_set = _task_set()
    html = _render(task_set, _results(task_set))
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; add" in html
    assert "Strategy lab: &lt;Sums&gt;" in html and "Sums &lt;small&gt;" in html
    assert "<b>" not in html and "The answer is 6 &lt;b&gt;" in html


def test_the_scorecard_marks_the_winner_and_says_what_the_p_value_means():
    task_set = _task_set()
    html = _render(task_set, _results(task_set))
    winner = re.search(r'<tr class="winner">(.*?)</tr>', html, re.S).group(1)
    assert "chain-of-thought" in winner and "★ best" in winner
    assert "90%" in winner and "(9/10)" in winner
    # chain vs zero: won 6, lost 1, exact McNemar p = 0.125
    assert "+50 points · won 6, lost 1 · p = 0.125" in winner
    assert "not a significant difference" in winner
    assert "baseline" in html and "answers directly" in html
    assert "2.19 s" in winner and "2.27 s" in winner  # p50 and p95 latency of chain-of-thought
    assert html.count("Pareto front</span>") == 3


def test_a_significant_difference_is_called_one():
    task_set = TaskSet("Big", [TaskItem(f"q{i}", f"{i}?", "1", split="test") for i in range(30)])
    results = [{"candidate": name, "item": f"q{i}", "variant": None, "passed": name == "good" or i < 5,
                "extracted": "1", "latency": 0.1, "tokens": 1} for name in ("bad", "good") for i in range(30)]
    rows = scorecard(results, ["bad", "good"])
    html = render_report(title="Big", task_set=task_set, run={}, rows=rows, front=pareto_front(rows),
                         best_name=best(rows), disagreements=disagreements(results, ["bad", "good"]),
                         items={i.id: i for i in task_set.items},
                         answers={(r["candidate"], r["item"]): r for r in results})
    assert "a significant difference (better)" in html and "25 of the test items split the candidates." in html
    assert "Prompt sensitivity" not in html and len(_images(html)) == 1


def test_the_disagreements_table_and_every_answer():
    task_set = _task_set()
    html = _render(task_set, _results(task_set))
    assert "7 of the test items split the candidates." in html
    table = html.split("Where the candidates differ", 1)[1].split("Every answer", 1)[0]
    assert table.count("<tr>") == 1 + 7
    assert table.count("✓") + table.count("✗") == 7 * 3
    answers = html.split("Every answer", 1)[1]
    assert answers.count("<details>") == 3
    assert "chain-of-thought — 9 of 10 right" in answers and "zero-shot — 4 of 10 right" in answers
    assert "expected a number" in answers


def test_a_long_list_of_disagreements_is_cut_with_a_note():
    items = [TaskItem(f"q{i}", f"{i}?", "1", split="test") for i in range(MAX_DISAGREEMENTS + 5)]
    task_set = TaskSet("Many", items)
    results = [{"candidate": name, "item": item.id, "variant": None, "passed": name == "a", "extracted": "1",
                "latency": 0.1, "tokens": 1} for name in ("a", "b") for item in items]
    rows = scorecard(results, ["a", "b"])
    html = render_report(title="Many", task_set=task_set, run={}, rows=rows, front=["a"], best_name="a",
                         disagreements=disagreements(results, ["a", "b"]), items={i.id: i for i in items},
                         answers={(r["candidate"], r["item"]): r for r in results}, judge_agreement="The judge agreed 9 of 10 times.")
    assert f"Showing the first {MAX_DISAGREEMENTS} of {MAX_DISAGREEMENTS + 5} items" in html
    table = html.split("Where the candidates differ", 1)[1].split("Every answer", 1)[0]
    assert table.count("<tr>") == 1 + MAX_DISAGREEMENTS
    assert "The judge agreed 9 of 10 times." in html


def test_the_sensitivity_section_names_each_wording():
    task_set = _task_set()
    html = _render(task_set, _results(task_set))
    section = html.split("Prompt sensitivity", 1)[1].split("Where the candidates differ", 1)[0]
    assert "Reply with just the sum." in section and "Answer with the number." in section
    assert "from 40% to 70%" in section and "<img" in section


def test_charts_are_png_even_with_nothing_to_draw():
    task_set = _task_set()
    results = _results(task_set)
    rows = scorecard(results, CANDIDATES + ["never-ran"])
    assert pareto_chart_png(rows, pareto_front(rows), "t").startswith(PNG)
    assert pareto_chart_png([], [], "empty").startswith(PNG)
    assert sensitivity_chart_png("zero-shot", sensitivity(results, "zero-shot")).startswith(PNG)


def test_write_report_and_a_stored_runs_report(tmp_path):
    path = write_report(tmp_path / "out" / "report.html", "<p>hi</p>")
    assert path.read_text(encoding="utf-8") == "<p>hi</p>"

    task_set = _task_set()
    store = RunStore(tmp_path / "runs")
    run = store.create(task_set, parse_candidates("zero, few:2, chain"), model="m.gguf", paraphrases=True)
    for record in _results(task_set):
        run.record(record)
    written = write_run_report(store.get(run.id))
    assert written == run.folder / "report.html"
    html = written.read_text(encoding="utf-8")
    assert "Strategy lab: Sums &lt;small&gt;" in html and "m.gguf" in html
    assert "thinks step by step" in html  # the candidates' descriptions from the run
    assert len(_images(html)) == 2 and "https://" not in html
