"""Accuracy and time of prompting strategies on a small labelled task set, with the default model.

Strategies, all through Parley's real turn pipeline and the prompt-templates plugin:
zero-shot, few-shot (four worked examples as chat turns), chain-of-thought (the built-in
template, greedy), and self-consistency (the built-in template: the greedy chain plus up to
N-1 samples, majority vote, stopping early once decided). The task set is
tests/data/arithmetic.jsonl (40 questions).

Run: ``.venv/bin/python benchmarks/strategies.py [--limit N] [--samples N] [--only chain,self]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ZERO_SHOT = {"name": "Arithmetic zero-shot", "system": "Answer the arithmetic question with the number only."}
FEW_SHOT = {
    "name": "Arithmetic few-shot",
    "system": "Answer the arithmetic question with the number only.",
    "examples": [
        {"user": "What is 7 + 5?", "assistant": "12"},
        {"user": "What is 20 minus 8?", "assistant": "12"},
        {"user": "Calculate 6 * 4.", "assistant": "24"},
        {"user": "What is 31 plus 17?", "assistant": "48"},
    ],
}


def number_in(text: str, template_name: str, library) -> str:
    """The answer a strategy gave: the marked final answer if any, else the last number.

    The last number, as usual for free-text arithmetic answers ("... so 4 + 29 is 33").
    """
    if template_name in library.templates and library.get(template_name).answer_pattern:
        candidate = library.get(template_name).extract_answer(text)
        found = re.findall(r"-?\d+", candidate.replace(",", ""))
        if found:
            return found[-1]
    found = re.findall(r"-?\d+", text.replace(",", ""))
    return found[-1] if found else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument("--samples", type=int, default=5, help="self-consistency samples")
    parser.add_argument("--only", default="", help="comma-separated strategies to run, e.g. zero,chain,self "
                                                     "(prefixes of their names; times are relative to the first)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (ROOT / "tests" / "data" / "arithmetic.jsonl").read_text().splitlines()]
    if args.limit:
        rows = rows[: args.limit]
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    with tempfile.TemporaryDirectory() as home:
        os.environ["PARLEY_HOME"] = home
        from desktop_app.context import build_context
        from desktop_app_prompt_templates import state
        from desktop_app_prompt_templates.templates import template_from_dict

        context = build_context()
        context.settings.set("model.context_length", 2048)
        context.load_model(None)
        for data in (ZERO_SHOT, FEW_SHOT):
            state.library.save(template_from_dict(data))
        strategies = [
            ("zero-shot", ZERO_SHOT["name"], {}, {"temperature": 0.0, "max_tokens": 16}),
            ("few-shot", FEW_SHOT["name"], {}, {"temperature": 0.0, "max_tokens": 16}),
            ("chain-of-thought", "Chain-of-thought reasoner", {}, {"temperature": 0.0, "max_tokens": 192}),
            (f"self-consistency (N={args.samples})", "Self-consistency reasoner",
             {"samples": args.samples}, {"max_tokens": 192, "seed": 7}),
        ]
        if args.only:
            wanted = [w.strip() for w in args.only.split(",") if w.strip()]
            strategies = [s for s in strategies if any(s[0].startswith(w) for w in wanted)]
        print(f"{len(rows)} arithmetic questions, model {context.engine.model_path.name}")
        baseline_time = None
        for label, template, extra, options in strategies:
            correct = 0
            tokens = 0
            start = time.perf_counter()
            for row in rows:
                conv = context.store.create_conversation()
                outcome = context.chat.send(conv.id, row["question"], options=options,
                                            plugin_options={"prompt_templates": {"template": template, **extra}})
                result = outcome.result
                samples = result.samples or [result.text]
                if result.samples:
                    # The vote's winner is the strategy's answer.
                    stats = outcome.message.stats
                    votes = stats.get("votes") or {}
                    winner = stats.get("answer", max(votes, key=votes.get) if votes else "")
                    found = re.findall(r"-?\d+", winner.replace(",", ""))
                    given = found[-1] if found else ""
                else:
                    given = number_in(samples[0], template, state.library)
                correct += given == row["answer"]
                tokens += outcome.message.stats.get("generated_tokens", 0)
            elapsed = time.perf_counter() - start
            baseline_time = baseline_time or elapsed
            print(f"{label:28s} accuracy {correct:2d}/{len(rows)} = {correct / len(rows):5.1%}   "
                  f"time {elapsed:6.1f} s ({elapsed / baseline_time:4.1f}x {strategies[0][0]})   {tokens} tokens generated")
        context.close()


if __name__ == "__main__":
    main()
