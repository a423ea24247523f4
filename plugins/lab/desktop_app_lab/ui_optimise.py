"""Prompt optimisation from the lab window: ask for a budget, search in the background with
progress and Stop, then show what was found and the held-out run that measures it."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QInputDialog

from desktop_app.api import ParleyError

__all__ = ["optimise_in_window"]


def optimise_in_window(lab: Any, calls: int | None = None) -> Any:
    """Improve the instruction of the lab's first ticked candidate within a budget of model
    calls (asked for when ``calls`` is None). Returns the background job, or None when there is
    nothing to do (the reason is in the status line)."""
    from desktop_app_lab.optimise import Budget, optimise

    candidates = lab.chosen_candidates()
    if not candidates:
        lab.status.setText("Tick the candidate whose instruction should be improved.")
        return None
    if not lab.model_loaded("it proposes the instructions and answers with them."):
        return None
    candidate = candidates[0]
    if calls is None:
        calls, ok = QInputDialog.getInt(
            lab, "Optimise prompt",
            f"Improve the instruction of {candidate.name}.\nBudget (model calls: each train item answered is one, "
            "N with self-consistency):", 60, 5, 2000)
        if not ok:
            return None
    try:
        task_set = lab.task_set()
    except ParleyError as exc:
        lab.status.setText(str(exc))
        return None

    def work(tell, stop) -> Any:
        return optimise(lab.context, task_set, candidate, budget=Budget(calls=calls), on_progress=tell,
                        stop=stop, runs=lab.runs)

    def done(result: Any) -> None:
        lab.optimised = result
        text = result.describe()
        lab.status.setText(text.splitlines()[-1])
        if result.run is not None:
            lab._list_runs_keep(result.run)
        lab.verdict.setText(text)  # after the run is shown, whose summary would replace it

    return lab.start_job(work, done, "Optimising failed: {}")
