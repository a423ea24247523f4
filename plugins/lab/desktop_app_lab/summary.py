"""A run's results, summed up once for the terminal, the window and the HTML report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop_app_lab.runs import Run
from desktop_app_lab.tasks import TaskSet

__all__ = ["RunSummary", "summarise", "write_run_report"]


@dataclass
class RunSummary:
    """Everything a person looks at after a run."""

    run: Run
    task_set: TaskSet
    rows: list[Any]
    front: list[str]
    best: str | None
    disagreements: list[Any]
    #: candidate name -> Sensitivity, for the candidate whose instruction was paraphrased
    sensitivity: dict[str, Any] = field(default_factory=dict)
    #: results by (candidate, item) of the main instruction
    answers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def candidates(self) -> list[str]:
        """The run's candidate names, the baseline first."""
        return [c.name for c in self.run.candidates]

    def disagreement_line(self) -> str:
        """How many held-out items the candidates disagree on, in a sentence."""
        from desktop_app_lab.stats import summary_line

        return summary_line(self.disagreements, self.candidates)


def summarise(run: Run) -> RunSummary:
    """The scorecard (baseline: the first candidate), Pareto front, winner, the items that flip
    between candidates and prompt sensitivity, from the run's latest results."""
    from desktop_app_lab.stats import best, disagreements, pareto_front, scorecard, sensitivity

    results = run.latest()
    names = [c.name for c in run.candidates]
    rows = scorecard(results, names)
    scored = [r for r in rows if r.n]
    summary = RunSummary(run, run.task_set(), rows, pareto_front(scored) if scored else [],
                         best(scored) if scored else None, disagreements(results, names))
    if run.paraphrases and run.sensitivity_candidate:
        found = sensitivity(results, run.sensitivity_candidate)
        if found is not None:
            summary.sensitivity[run.sensitivity_candidate] = found
    summary.answers = {(r["candidate"], r["item"]): r for r in results if r.get("variant") is None}
    return summary


def write_run_report(run: Run, path: Path | None = None) -> Path:
    """Write the run's self-contained HTML report (default: report.html in the run's folder)."""
    from desktop_app_lab.report import render_report, write_report

    summary = summarise(run)
    info = run.to_dict()
    html = render_report(title=f"Strategy lab: {run.task_set_name}", task_set=summary.task_set, run=info,
                         rows=summary.rows, front=summary.front, best_name=summary.best,
                         disagreements=summary.disagreements,
                         items={i.id: i for i in summary.task_set.items}, answers=summary.answers,
                         sensitivity=summary.sensitivity or None, judge_agreement=run.judge or None)
    return write_report(path or run.folder / "report.html", html)
