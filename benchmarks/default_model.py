"""Which system prompt and sampling make the built-in model answer everyday questions best.

The built-in SmolLM2-135M is tiny: how it is asked matters more than for a large model. This
runs a small shipped question set (tests/data/everyday_questions.jsonl: 30 short factual
questions with their accepted answers) through the engine with each candidate system prompt
and sampling preset, and prints the share answered right. Sampled presets run with several
seeds; the table shows their mean and range. Parley's defaults for the built-in model
(``BUILTIN_MODEL_SAMPLING`` and ``DEFAULT_MODEL_SYSTEM_PROMPT`` in desktop_app/core/models.py)
were chosen from this table.

Run: ``.venv/bin/python benchmarks/default_model.py [--seeds N] [--limit N]``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from desktop_app.core.engine import DoneEvent, Engine, LoadConfig  # noqa: E402
from desktop_app.core.models import BUILTIN_MODEL_SAMPLING, DEFAULT_MODEL_SYSTEM_PROMPT, default_model_path  # noqa: E402
from desktop_app.core.settings import DEFAULT_SYSTEM_PROMPT  # noqa: E402
from desktop_app.core.turn import ChatMessage, GenerationOptions  # noqa: E402

QUESTIONS = ROOT / "tests" / "data" / "everyday_questions.jsonl"

PROMPTS = {
    "SmolLM's own": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "Parley (any model)": DEFAULT_SYSTEM_PROMPT,
    "the previous default": "You are a helpful AI assistant named SmolLM, trained by Hugging Face. "
                            "Answer the user's question directly and briefly.",
    "one short sentence": "You are a helpful assistant. Answer the question in one short, correct sentence.",
    "SmolLM, one sentence": "You are a helpful AI assistant named SmolLM, trained by Hugging Face. "
                            "Answer in one short, correct sentence.",
    "built-in default": DEFAULT_MODEL_SYSTEM_PROMPT,
}

PRESETS = {
    "greedy": dict(temperature=0.0, repeat_penalty=1.0),
    "t0.7 p0.95 k40 min-p0.05 pen1.1 (general default)": dict(
        temperature=0.7, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.1),
    "t0.2 min-p0.1": dict(temperature=0.2, top_p=1.0, top_k=0, min_p=0.1, repeat_penalty=1.0),
    "t0.3 p0.9 k40 pen1.05": dict(temperature=0.3, top_p=0.9, top_k=40, min_p=0.0, repeat_penalty=1.05),
    "built-in preset: " + ", ".join(f"{k} {v:g}" for k, v in BUILTIN_MODEL_SAMPLING.items()):
        dict(BUILTIN_MODEL_SAMPLING),
}


def is_right(answer: str, accepted: list[str]) -> bool:
    """Whether one of the accepted answers appears in ``answer`` as a word."""
    return any(re.search(rf"(?<![\w]){re.escape(a)}(?![\w])", answer, re.I) for a in accepted)


def score(engine: Engine, system: str, preset: dict, seed: int, items: list[dict]) -> tuple[int, list[str]]:
    """How many ``items`` the engine answers right, and the answers."""
    right, answers = 0, []
    for item in items:
        options = GenerationOptions(max_tokens=48, seed=seed, **preset)
        messages = [ChatMessage("system", system), ChatMessage("user", item["question"])]
        done = [e for e in engine.stream_chat(messages, options) if isinstance(e, DoneEvent)][-1]
        answers.append(done.text.strip())
        right += is_right(done.text, item["answers"])
    return right, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per sampled preset")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    args = parser.parse_args()
    items = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = items[: args.limit] if args.limit else items
    engine = Engine()
    engine.load(default_model_path(), LoadConfig(context_length=2048, threads=args.threads))
    started = time.perf_counter()
    width = max(map(len, PRESETS))
    print(f"{len(items)} questions; sampled presets: mean (min-max) over {args.seeds} seeds\n")
    print(f"{'system prompt':<22} {'sampling':<{width}}  right")
    best = (-1.0, "", "")
    for prompt_name, system in PROMPTS.items():
        for preset_name, preset in PRESETS.items():
            seeds = [0] if preset.get("temperature", 0) <= 0 else list(range(1, args.seeds + 1))
            rights = [score(engine, system, preset, seed, items)[0] for seed in seeds]
            mean = sum(rights) / len(rights) / len(items)
            spread = "" if len(rights) == 1 else f" ({min(rights)}-{max(rights)} of {len(items)})"
            print(f"{prompt_name:<22} {preset_name:<{width}}  {mean:6.1%}{spread}", flush=True)
            if mean > best[0]:
                best = (mean, prompt_name, preset_name)
    _, answers = score(engine, DEFAULT_MODEL_SYSTEM_PROMPT, BUILTIN_MODEL_SAMPLING, 1, items[:5])
    print(f"\nbest: {best[1]} + {best[2]} = {best[0]:.1%}   ({time.perf_counter() - started:.0f} s)")
    print("with the built-in defaults, the first answers (seed 1):")
    for item, answer in zip(items, answers):
        print(f"  {item['question']}  ->  {answer[:90]!r}")


if __name__ == "__main__":
    main()
