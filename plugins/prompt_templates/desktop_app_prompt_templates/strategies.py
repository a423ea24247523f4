"""Generation strategies that own a turn: self-consistency sampling with a majority vote.

Self-consistency pays for several answers, so it has to earn it. The greedy chain (temperature 0)
is always the first vote: on a small model it is the single most reliable answer, and a sampled
majority should have to outvote it, not replace it by chance. Ties go to it. Final answers are
reduced to a canonical form before the vote ("12", "12.0", "$12" and "12 apples" are one vote),
and sampling stops as soon as the samples still to come could not change the winner.
"""

from __future__ import annotations

import copy
import random
import re
from collections import Counter
from typing import Any, Callable

from desktop_app.api import TraceEntry, Turn, TurnResult

from desktop_app_prompt_templates.templates import PromptTemplate, normalise_answer

__all__ = ["canonical_answer", "decided", "final_answer", "self_consistency", "tally"]

PLUGIN = "prompt_templates"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# Where a free-text answer states its result: after "answer" (answer is / answer: ...) or "=".
_ANSWER_MARK = re.compile(r"(?i)\banswer\b|=")


def canonical_answer(text: str) -> str:
    """One spelling per answer, so equal answers vote together.

    A final answer holding a number votes as its last number, written plainly ("$1,200.00" and
    "1200 dollars" are "1200"); anything else votes as its normalised text.
    """
    cleaned = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    numbers = _NUMBER.findall(cleaned)
    if not numbers:
        return normalise_answer(text)
    number = numbers[-1]
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return "0" if number in ("-0", "") else number


def final_answer(template: PromptTemplate, text: str) -> str:
    """The canonical final answer of one sample, or "" when it gives none.

    With an ``answer_pattern`` its last match is the answer; a sample cut off before that line
    still counts with what follows its last "answer" or "=". Without a pattern (no template) the
    whole answer is the vote.
    """
    if template.answer_pattern:
        matches = list(re.finditer(template.answer_pattern, text))
        if matches:
            last = matches[-1]
            return canonical_answer(last.group(1) if last.groups() else last.group(0))
        marks = list(_ANSWER_MARK.finditer(text))
        if marks:
            rest = text[marks[-1].end():]
            return canonical_answer(rest) if _NUMBER.search(rest) else ""
        return ""
    return normalise_answer(text)


def tally(answers: list[str]) -> list[tuple[str, int]]:
    """The votes, best first: by count, ties to the greedy chain's (the first) answer, then to
    the answer that came first. Empty answers do not vote."""
    votes = Counter(a for a in answers if a)
    first = {a: answers.index(a) for a in votes}
    return sorted(votes.items(), key=lambda item: (-item[1], first[item[0]]))


def decided(answers: list[str], remaining: int) -> bool:
    """Whether ``remaining`` more samples could no longer change the winner of ``answers``.

    The runner-up (or an answer not seen yet) would need more than the gap; it may also reach a
    tie only if the tie would still go to the leader, which came first.
    """
    ranked = tally(answers)
    if not ranked:
        return remaining == 0
    first = {a: answers.index(a) for a, _ in ranked}
    leader, lead = ranked[0]
    if remaining > lead:  # an answer not seen yet could still outvote it
        return False
    for other, count in ranked[1:]:
        # A tie goes to whichever came first, so one that came first must stay below.
        if count + remaining > lead or (count + remaining == lead and first[other] < first[leader]):
            return False
    return True


def settled(answers: dict[int, str], samples: int) -> bool:
    """Whether the samples not finished yet could no longer change the winner.

    ``answers`` holds the final answers of the finished samples, by index (0 is the greedy
    chain). Samples written together finish in any order: while an earlier one is still being
    written, a tie it might make could go to it, so the leader must then win outright.
    """
    remaining = samples - len(answers)
    ordered = [answers[i] for i in sorted(answers)]
    if sorted(answers) == list(range(len(answers))):
        return decided(ordered, remaining)
    ranked = tally(ordered)
    if not ranked:
        return remaining == 0
    lead = ranked[0][1]
    second = ranked[1][1] if len(ranked) > 1 else 0
    return lead > remaining and lead > second + remaining


def self_consistency(turn: Turn, generate: Callable[..., TurnResult], template: PromptTemplate,
                     samples: int, temperature: float) -> TurnResult:
    """Answer with the greedy chain plus up to ``samples - 1`` sampled ones, and return the majority.

    The first answer is greedy (temperature 0); the others are sampled at ``temperature`` with
    seeds following the turn's. Sampling stops early once the vote is decided. The chosen answer
    is the first one whose final answer won; the vote is its ``note`` (shown under it); all
    answers drawn, the tally and how many were drawn are kept in its stats and in the turn's
    trace. Stopping ends the current answer and votes among those finished.
    """
    emit = getattr(generate, "emit", None) or (lambda text: None)
    if getattr(generate, "many", None) is not None and samples > 1:
        return _self_consistency_together(turn, generate, template, samples, temperature, emit)
    results: list[TurnResult] = []
    answers: list[str] = []
    cancelled = False
    samples = max(1, samples)
    for i, options in enumerate(_sample_options(turn, samples, temperature)):
        if i and decided(answers, samples - i):
            break
        emit(f"\n\n*Sample {i + 1} of {samples}…*\n\n" if i else f"*Sample 1 of {samples}…*\n\n")
        result = generate(turn, options=options)
        if result.finish_reason == "cancelled":
            cancelled = True
            if result.text.strip():
                results.append(result)
                answers.append(final_answer(template, result.text))
            break
        results.append(result)
        answers.append(final_answer(template, result.text))
    return _vote(turn, template, results, samples, temperature, cancelled)


def _sample_options(turn: Turn, samples: int, temperature: float) -> list[Any]:
    """The options of each sample: the greedy chain first, then sampled ones with seeds after the turn's."""
    base_seed = turn.options.seed if turn.options.seed >= 0 else random.randrange(1 << 30)
    out = []
    for i in range(samples):
        options = copy.copy(turn.options)
        options.temperature = temperature if i else 0.0
        options.seed = base_seed + i  # different, but reproducible for a fixed seed
        out.append(options)
    return out


def _self_consistency_together(turn: Turn, generate: Callable[..., TurnResult], template: PromptTemplate,
                               samples: int, temperature: float, emit: Callable[[str], None]) -> TurnResult:
    """Self-consistency with every sample written at once (one batch, the prompt evaluated once)."""
    # The greedy chain streams as it is written; the others are reported as they end.
    emit(f"*Writing {samples} samples at once; sample 1 of {samples}…*\n\n")
    finished: dict[int, str] = {}

    def on_result(index: int, result: TurnResult) -> bool:
        finished[index] = final_answer(template, result.text)
        emit(f"\n\n*Sample {index + 1} of {samples}: {finished[index] or 'no final answer'}*\n\n")
        return settled(finished, samples)

    drawn = generate.many(turn, _sample_options(turn, samples, temperature), on_result=on_result, show=0)
    # Samples stopped because the vote was settled do not count. When the user stops, the vote
    # is among those finished and the greedy chain as far as it got (the one they watched), as
    # when samples are written one after another.
    stopped_by_user = not settled(finished, samples) and any(
        r.finish_reason == "cancelled" for i, r in enumerate(drawn) if i not in finished)
    kept = [r for i, r in enumerate(drawn) if i in finished or (stopped_by_user and i == 0 and r.text.strip())]
    return _vote(turn, template, kept, samples, temperature, stopped_by_user)


def _vote(turn: Turn, template: PromptTemplate, results: list[TurnResult], samples: int, temperature: float,
          cancelled: bool) -> TurnResult:
    """The majority answer among ``results`` (in sample order), with the vote as its note."""
    texts = [r.text for r in results]
    answers = [final_answer(template, r.text) for r in results]
    if not results:
        return TurnResult("", "cancelled", {}, "", samples=[])
    ranked = tally(answers)
    if ranked:
        winner, count = ranked[0]
        chosen = answers.index(winner)
    else:
        winner, count, chosen = "", 0, 0
    result = results[chosen]
    early = len(texts) < samples and not cancelled
    drawn = f"{len(texts)} samples" + (f" (stopped early of {samples})" if early else "")
    summary = (f"\n\n---\n*Self-consistency: “{winner}” — {count} of {drawn} agree.*"
               if winner else f"\n\n---\n*Self-consistency: no final answer found in {drawn}.*")
    stats: dict[str, Any] = dict(result.stats)
    stats["votes"] = dict(ranked)
    stats["answer"] = winner
    stats["samples_drawn"] = len(texts)
    stats["samples_planned"] = samples
    stats["generated_tokens"] = sum(r.stats.get("generated_tokens", 0) for r in results)
    stats["strategy"] = "self-consistency"
    turn.trace.append(TraceEntry(PLUGIN, "strategy", {
        "strategy": "self-consistency", "samples_drawn": len(texts), "samples_planned": samples,
        "stopped_early": early, "votes": dict(ranked), "answers": answers, "winner": winner,
        "temperature": temperature,
    }))
    return TurnResult(result.text.rstrip(), "cancelled" if cancelled else result.finish_reason,
                      stats, result.prompt, samples=texts, note=summary)
