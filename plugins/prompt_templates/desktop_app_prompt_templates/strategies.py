"""Generation strategies that own a turn: self-consistency sampling with a majority vote."""

from __future__ import annotations

import copy
import random
from collections import Counter
from typing import Any, Callable

from desktop_app.api import Turn, TurnResult

from desktop_app_prompt_templates.templates import PromptTemplate

__all__ = ["self_consistency"]


def self_consistency(turn: Turn, generate: Callable[..., TurnResult], template: PromptTemplate,
                     samples: int, temperature: float) -> TurnResult:
    """Sample ``samples`` answers one after another, extract each final answer, return the majority.

    The chosen answer is the first sample whose final answer won; the vote count is its
    ``note`` (shown under it); all samples and the votes are kept with the answer. Stopping ends the current
    sample and votes among those finished.
    """
    emit = getattr(generate, "emit", None) or (lambda text: None)
    texts: list[str] = []
    results: list[TurnResult] = []
    base_seed = turn.options.seed if turn.options.seed >= 0 else random.randrange(1 << 30)
    cancelled = False
    for i in range(samples):
        emit(f"\n\n*Sample {i + 1} of {samples}…*\n\n" if i else f"*Sample 1 of {samples}…*\n\n")
        options = copy.copy(turn.options)
        options.temperature = temperature
        options.seed = base_seed + i  # different, but reproducible for a fixed seed
        result = generate(turn, options=options)
        if result.finish_reason == "cancelled":
            cancelled = True
            if result.text.strip():
                texts.append(result.text)
                results.append(result)
            break
        texts.append(result.text)
        results.append(result)
    if not results:
        return TurnResult("", "cancelled", {}, "", samples=[])
    answers = [template.extract_answer(t) for t in texts]
    votes = Counter(a for a in answers if a)
    if votes:
        winner, count = votes.most_common(1)[0]
        chosen = answers.index(winner)
    else:
        winner, count, chosen = "", 0, 0
    result = results[chosen]
    summary = (f"\n\n---\n*Self-consistency: “{winner}” — {count} of {len(texts)} samples agree.*"
               if winner else f"\n\n---\n*Self-consistency: no final answer found in {len(texts)} samples.*")
    stats: dict[str, Any] = dict(result.stats)
    stats["votes"] = dict(votes.most_common())
    stats["generated_tokens"] = sum(r.stats.get("generated_tokens", 0) for r in results)
    stats["strategy"] = "self-consistency"
    return TurnResult(result.text.rstrip(), "cancelled" if cancelled else result.finish_reason,
                      stats, result.prompt, samples=texts, note=summary)
