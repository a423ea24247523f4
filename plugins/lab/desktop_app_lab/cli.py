"""`parley lab`: task sets, runs, reports and applying the winner from the command line."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> None:
    """Add `parley lab ...`."""
    from desktop_app_lab.candidates import SPEC_HELP

    lab = subparsers.add_parser(
        "lab", help="measure which prompt, strategy, documents or adapter works best on your own task set"
    ).add_subparsers(title="actions", metavar="ACTION", required=True)
    lab.add_parser("sets", help="list the task sets (the shipped ones and yours)").set_defaults(handler=list_sets)
    p = lab.add_parser("import", help="make a task set from a JSONL, CSV or TSV file of inputs and answers")
    p.add_argument("file", type=Path)
    p.add_argument("--name", help="the task set's name (default: the file's)")
    p.add_argument("--check", default="normalised",
                   help="how answers are judged: exact, normalised, number, regex, contains_all, contains_any, "
                        "json or judge (default normalised)")
    p.set_defaults(handler=import_set)
    p = lab.add_parser("from-documents", help="propose a task set of questions and answers from a folder of documents")
    p.add_argument("folder", type=Path)
    p.add_argument("--name", help="the task set's name (default: the folder's)")
    p.add_argument("--count", type=int, default=10, help="how many questions to propose (default 10)")
    p.set_defaults(handler=set_from_documents)
    p = lab.add_parser("run", help="answer a task set's held-out items with each candidate and score them",
                       epilog=SPEC_HELP, formatter_class=_raw())
    p.add_argument("tasks", help="a task set's name (parley lab sets) or file")
    p.add_argument("--candidates", "-c", action="append",
                   help="the candidates to compare (default: a ladder suited to the set)")
    p.add_argument("--paraphrases", action="store_true",
                   help="also answer with each paraphrased instruction of the set (prompt sensitivity)")
    p.add_argument("--model", help="the model to answer with (default: the one the settings choose)")
    p.add_argument("--one-at-a-time", action="store_true",
                   help="answer one item at a time: slower, but greedy answers are reproducible to the token "
                        "(answers written together can differ in a rare token)")
    p.add_argument("--report", type=Path, metavar="HTML", help="write the HTML report here when done")
    p.set_defaults(handler=run_tasks)
    p = lab.add_parser("resume", help="finish a stopped or interrupted run")
    p.add_argument("run", help="a run's id (a unique start will do) or 'latest'")
    p.add_argument("--report", type=Path, metavar="HTML", help="write the HTML report here when done")
    p.set_defaults(handler=resume_run)
    lab.add_parser("runs", help="list the stored runs").set_defaults(handler=list_runs)
    p = lab.add_parser("report", help="print a run's scorecard and write its HTML report")
    p.add_argument("run", help="a run's id (a unique start will do) or 'latest'")
    p.add_argument("--output", "-o", type=Path, help="the HTML file (default: report.html in the run's folder)")
    p.set_defaults(handler=report_run)
    p = lab.add_parser("apply", help="save a run's candidate as a template new conversations use")
    p.add_argument("run", help="a run's id (a unique start will do) or 'latest'")
    p.add_argument("candidate", nargs="?", help="the candidate's name (default: the run's best)")
    p.add_argument("--name", help="the template's name")
    p.add_argument("--no-default", action="store_true", help="save it, but keep the current default template")
    p.add_argument("--profile", action="store_true", help="also save the whole setup as an API profile")
    p.set_defaults(handler=apply_run)
    p = lab.add_parser("optimise", aliases=["optimize"],
                       help="let the model propose better instructions, scored on the train split")
    p.add_argument("tasks", help="a task set's name or file")
    p.add_argument("--candidate", default="zero", help="the candidate whose instruction is improved (default zero)")
    p.add_argument("--budget-calls", type=int, default=60, help="stop after this many model calls (default 60)")
    p.add_argument("--budget-minutes", type=float, default=0, help="stop after this many minutes (default: none)")
    p.add_argument("--variants", type=int, default=4, help="instructions proposed per round (default 4)")
    p.set_defaults(handler=optimise_set)


def _raw():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def _state():
    from desktop_app_lab import state

    return state


def list_sets(args, context) -> int:
    """Handle `parley lab sets`."""
    for entry in _state().library.entries():
        where = "shipped" if entry.shipped else str(entry.path)
        if entry.problem:
            print(f"{entry.path.stem}\tcannot be read: {entry.problem}\t{where}")
        else:
            documents = ", documents" if entry.documents else ""
            print(f"{entry.path.stem}\t{entry.name}\t{entry.items} items ({entry.test} held out)\t"
                  f"{entry.check}{documents}\t{where}")
    return 0


def import_set(args, context) -> int:
    """Handle `parley lab import`."""
    from desktop_app_lab.checks import validate_check

    check = {"kind": args.check}
    validate_check(check)
    path = _state().library.import_file(args.file, name=args.name, check=check)
    task_set = _state().library.load(path)
    print(f"Imported {len(task_set.items)} items as {task_set.name!r} ({len(task_set.train)} train, "
          f"{len(task_set.test)} held out) into {path}.")
    return 0


def set_from_documents(args, context) -> int:
    """Handle `parley lab from-documents`."""
    from desktop_app_lab.from_documents import make_documents_set

    folder = args.folder.expanduser()
    name = args.name or folder.resolve().name.replace("_", " ").replace("-", " ")
    for warning in context.load_model(None):
        print(f"parley: warning: {warning}", file=sys.stderr)
    stop = threading.Event()
    try:
        path = make_documents_set(context, _state().library, folder, name, count=args.count,
                                  on_progress=lambda text: print(text, file=sys.stderr, flush=True), stop=stop)
    except KeyboardInterrupt:
        stop.set()
        return 130
    task_set = _state().library.load(path)
    for item in task_set.items:
        print(f"{item.id}\t{item.input}\t{item.expected[0]}\t{item.extra.get('source', '')}")
    print(f"Proposed {len(task_set.items)} questions as {task_set.name!r} in {path}. Review them (edit or delete "
          f"lines in that file), then: parley lab run {path.stem}")
    return 0


class _Printer:
    """Progress on the terminal: one line per answer, a count on stderr."""

    def __init__(self) -> None:
        self.last = ""

    def __call__(self, progress) -> None:
        if progress.result is not None:
            r = progress.result
            mark = "✓" if r["passed"] else "✗"
            shown = (r["extracted"] or r["answer"] or r.get("error") or "").replace("\n", " ")[:60]
            variant = f" [instruction {r['variant'] + 1}]" if r.get("variant") is not None else ""
            print(f"[{progress.done}/{progress.total}] {mark} {r['candidate']}{variant} · {r['item']}: {shown}",
                  flush=True)
        elif progress.message and progress.message != self.last:
            print(progress.message, file=sys.stderr, flush=True)
        self.last = progress.message


def _run_and_report(context, run, report: Path | None) -> int:
    from desktop_app_lab.runner import run_lab

    stop = threading.Event()
    try:
        run = run_lab(context, run, on_progress=_Printer(), stop=stop)
    except KeyboardInterrupt:
        stop.set()
        print(f"Stopped. Resume with: parley lab resume {run.id}", file=sys.stderr)
        return 130
    if run.status == "failed":
        print(f"parley: the run failed: {run.message}", file=sys.stderr)
        return 1
    _print_scorecard(run)
    if run.status == "stopped":
        print(f"{run.message} parley lab resume {run.id}", file=sys.stderr)
        return 1
    if report is not None:
        path = _write_report(context, run, report)
        print(f"Report: {path}")
    print(f"Run {run.id}. Apply the winner: parley lab apply {run.id}")
    return 0


def run_tasks(args, context) -> int:
    """Handle `parley lab run`."""
    from desktop_app_lab.candidates import default_candidates, parse_candidates

    state = _state()
    task_set = state.library.load(args.tasks)
    candidates = parse_candidates(args.candidates) if args.candidates else default_candidates(task_set)
    for warning in context.load_model(args.model):
        print(f"parley: warning: {warning}", file=sys.stderr)
    model = context.model.path.name if context.model.path else ""
    run = state.runs.create(task_set, candidates, model=model, paraphrases=args.paraphrases,
                            batched=not args.one_at_a_time)
    print(f"Run {run.id}: {len(candidates)} candidates on {len(task_set.test)} held-out items of "
          f"{task_set.name!r} with {model or 'no model'}.", file=sys.stderr)
    return _run_and_report(context, run, args.report)


def resume_run(args, context) -> int:
    """Handle `parley lab resume`."""
    from pathlib import Path as _Path

    state = _state()
    run = state.runs.get(args.run)
    model = None
    if run.model:
        model = next((e["name"] for e in context.library() if _Path(e["path"]).name == run.model), None)
    for warning in context.load_model(model):
        print(f"parley: warning: {warning}", file=sys.stderr)
    if run.model and context.model.path is not None and context.model.path.name != run.model:
        print(f"parley: warning: the run was made with {run.model}; resuming with {context.model.path.name}.",
              file=sys.stderr)
    print(f"Resuming {run.id}: {len(run.results)} answers kept.", file=sys.stderr)
    return _run_and_report(context, run, args.report)


def list_runs(args, context) -> int:
    """Handle `parley lab runs`."""
    runs = _state().runs.list()
    if not runs:
        print("No runs yet: parley lab run arithmetic")
    for run in runs:
        print(f"{run.id}\t{run.task_set_name}\t{run.status}\t{len(run.results)} answers\t"
              f"{len(run.candidates)} candidates\t{run.model}")
    return 0


def _print_scorecard(run) -> None:
    from desktop_app_lab.stats import describe_sensitivity, format_percent, format_seconds
    from desktop_app_lab.summary import summarise

    summary = summarise(run)
    width = max([len(r.candidate) for r in summary.rows] + [9])
    print(f"\n{run.task_set_name} · {run.model} · seed {run.seed} · {summary.rows[0].n if summary.rows else 0} "
          "held-out items")
    print(f"{'candidate':{width}s}  right   accuracy (95% CI)     p50      p95  tokens  vs baseline")
    for n, r in enumerate(summary.rows):
        ci = f"{format_percent(r.accuracy)} ({format_percent(r.ci_low)}–{format_percent(r.ci_high)})"
        baseline = "baseline" if n == 0 else "no items in common with the baseline"
        versus = "not answered yet" if not r.n else baseline if r.diff is None else (
            f"{r.diff * 100:+.1f} pts ({r.wins} won, {r.losses} lost, p={r.p_value:.3f})")
        marks = ("★" if r.candidate == summary.best else " ") + ("◆" if r.candidate in summary.front else " ")
        errors = f"  {r.errors} failed" if r.errors else ""
        print(f"{r.candidate:{width}s}  {r.correct:2d}/{r.n:<3d} {ci:19s} {format_seconds(r.latency_p50):>7s}"
              f"  {format_seconds(r.latency_p95):>7s}  {r.tokens_mean or 0:6.1f}  {versus}{errors} {marks}")
    print("★ best  ◆ on the accuracy/time Pareto front")
    if len(summary.candidates) > 1:
        print(summary.disagreement_line())
    if run.judge:
        print(run.judge)
    for name, found in summary.sensitivity.items():
        print(describe_sensitivity(name, found))


def _write_report(context, run, output: Path | None) -> Path:
    from desktop_app_lab.summary import write_run_report

    return write_run_report(run, output)


def report_run(args, context) -> int:
    """Handle `parley lab report`."""
    run = _state().runs.get(args.run)
    if not run.results:
        print(f"parley: run {run.id} has no answers yet (parley lab resume {run.id}).", file=sys.stderr)
        return 1
    _print_scorecard(run)
    path = _write_report(context, run, args.output)
    print(f"Report: {path}")
    return 0


def apply_run(args, context) -> int:
    """Handle `parley lab apply`."""
    from desktop_app_lab.apply import apply_candidate

    run = _state().runs.get(args.run)
    applied = apply_candidate(context, run, args.candidate, name=args.name, make_default=not args.no_default,
                              profile=True if args.profile else None)
    print(applied.describe())
    return 0


def optimise_set(args, context) -> int:
    """Handle `parley lab optimise`."""
    from desktop_app_lab.candidates import parse_candidate
    from desktop_app_lab.optimise import Budget, optimise

    state = _state()
    task_set = state.library.load(args.tasks)
    for warning in context.load_model(None):
        print(f"parley: warning: {warning}", file=sys.stderr)
    stop = threading.Event()
    try:
        result = optimise(context, task_set, parse_candidate(args.candidate),
                          budget=Budget(calls=args.budget_calls, minutes=args.budget_minutes),
                          variants=args.variants, on_progress=lambda text: print(text, file=sys.stderr, flush=True),
                          stop=stop)
    except KeyboardInterrupt:
        stop.set()
        return 130
    print(result.describe())
    return 0
