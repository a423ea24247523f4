"""Accuracy and time of prompting strategies on the shipped arithmetic task set, with the default model.

The candidates are the strategy lab's own (zero-shot, few-shot with four worked examples from the
train split, chain-of-thought, self-consistency with N samples): the same conversation setups,
answered here by a plain loop of conversations through ``chat.send``, the path a person's chat
takes, and judged by the set's own check. The lab answers through ``run_turn`` instead, so running
both on the same model and seed shows the lab's scores are the chat's (``parley lab run arithmetic``
prints the same numbers). Times are relative to the first strategy in the same run.

Run: ``.venv/bin/python benchmarks/strategies.py [--limit N] [--samples N] [--only zero,chain,self]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Measured:
    """One strategy's answers to the items: verdicts by item id, time and tokens."""

    label: str
    verdicts: dict[str, bool] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    tokens: int = 0

    @property
    def correct(self) -> int:
        """How many items it got right."""
        return sum(self.verdicts.values())


def measure(context, task_set, candidate, items) -> Measured:
    """Answer ``items`` as ``candidate`` would in the lab, one new conversation per item."""
    from desktop_app_lab.candidates import build_setup, final_answer_text
    from desktop_app_lab.checks import check_answer

    setup, options = build_setup(candidate, task_set)
    measured = Measured(candidate.name)
    start = time.perf_counter()
    for item in items:
        conversation = context.store.create_conversation()
        outcome = context.chat.send(conversation.id, item.input, options=options, plugin_options=setup["plugins"])
        if not hasattr(outcome, "result"):  # a failed turn counts as wrong, but is said
            print(f"  {candidate.name} · {item.id}: the turn failed: {getattr(outcome, 'error', outcome)}",
                  file=sys.stderr)
        text = outcome.result.text if hasattr(outcome, "result") else ""
        verdict = check_answer(task_set.check_for(item), final_answer_text(text, candidate.strategy), item.expected)
        measured.verdicts[item.id] = verdict.passed
        measured.answers[item.id] = verdict.extracted
        if hasattr(outcome, "message"):
            measured.tokens += int(outcome.message.stats.get("generated_tokens", 0) or 0)
    measured.seconds = time.perf_counter() - start
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N held-out questions")
    parser.add_argument("--samples", type=int, default=5, help="self-consistency samples")
    parser.add_argument("--only", default="", help="comma-separated strategies to run, e.g. zero,chain,self "
                                                     "(prefixes of their names; times are relative to the first)")
    args = parser.parse_args()
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    with tempfile.TemporaryDirectory() as home:
        os.environ["PARLEY_HOME"] = home
        from desktop_app.context import build_context
        from desktop_app_lab.candidates import parse_candidates
        from desktop_app_lab.library import TaskSetLibrary

        task_set = TaskSetLibrary(Path(home) / "sets").load("arithmetic")
        items = task_set.test[: args.limit] if args.limit else task_set.test
        candidates = parse_candidates([f"zero, few:4, chain, self:{args.samples}"])
        if args.only:
            wanted = [w.strip() for w in args.only.split(",") if w.strip()]
            candidates = [c for c in candidates if any(c.name.startswith(w) for w in wanted)]
        context = build_context()
        context.settings.set("model.context_length", 2048)
        context.load_model(None)
        print(f"{len(items)} held-out questions of {task_set.name!r}, model {context.engine.model_path.name}")
        baseline = None
        for candidate in candidates:
            m = measure(context, task_set, candidate, items)
            baseline = baseline or m
            print(f"{m.label:28s} accuracy {m.correct:2d}/{len(items)} = {m.correct / len(items):5.1%}   "
                  f"time {m.seconds:6.1f} s ({m.seconds / baseline.seconds:4.1f}x {baseline.label})   "
                  f"{m.tokens} tokens generated")
        context.close()


if __name__ == "__main__":
    main()
