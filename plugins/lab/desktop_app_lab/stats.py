"""The numbers a run is judged by: accuracy with its uncertainty, speed, paired comparisons.

Plain Python on purpose (no numpy): a run has tens to hundreds of answers, and the summary must
work wherever the lab does. Only the main instruction's answers (``variant`` None) are scored;
paraphrased instructions feed :func:`sensitivity` alone.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

__all__ = [
    "Disagreement",
    "ScoreRow",
    "Sensitivity",
    "best",
    "describe_sensitivity",
    "disagreements",
    "format_percent",
    "format_seconds",
    "mcnemar_p",
    "pareto_front",
    "percentile",
    "scorecard",
    "sensitivity",
    "summary_line",
    "wilson_interval",
]


# -- the statistics -------------------------------------------------------------------------------
def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for ``correct`` right answers out of ``n`` (95% by default).

    Unlike the textbook ``p ± z·se`` it stays inside [0, 1] and is honest at 0/n and n/n,
    which small task sets hit often. ``n`` = 0 says nothing: (0.0, 1.0).
    """
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - margin), min(1.0, centre + margin)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100) by linear interpolation between ranks; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, not {q}")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for paired verdicts.

    ``b`` and ``c`` are the discordant pairs (only the first right; only the second right).
    Under "no difference" each is a fair coin flip, so the p-value is twice the smaller binomial
    tail. The exact test rather than the chi-squared one because task sets are small.
    """
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# -- the scorecard --------------------------------------------------------------------------------
@dataclass
class ScoreRow:
    """One candidate's line of the scorecard.

    ``diff``, ``wins``, ``losses`` and ``p_value`` compare it with the baseline on the items both
    answered (``diff`` = its accuracy minus the baseline's there; ``wins`` = items only it got
    right); all None for the baseline itself, or when the two share no item.
    """

    candidate: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    latency_p50: float | None
    latency_p95: float | None
    latency_mean: float | None
    tokens_mean: float | None
    errors: int
    diff: float | None = None
    wins: int | None = None
    losses: int | None = None
    p_value: float | None = None


def _main_answers(results: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """candidate -> item -> result, of the main instruction only."""
    by_candidate: dict[str, dict[str, dict[str, Any]]] = {}
    for record in results:
        if record.get("variant") is None:
            by_candidate.setdefault(record["candidate"], {})[record["item"]] = record
    return by_candidate


def _numbers(records: Iterable[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in records if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]


def _row(name: str, answers: dict[str, dict[str, Any]]) -> ScoreRow:
    records = list(answers.values())
    n = len(records)
    correct = sum(1 for r in records if r.get("passed"))
    low, high = wilson_interval(correct, n)
    latencies = _numbers(records, "latency")
    tokens = _numbers(records, "tokens")
    return ScoreRow(name, n, correct, correct / n if n else 0.0, low, high,
                    percentile(latencies, 50), percentile(latencies, 95), _mean(latencies), _mean(tokens),
                    sum(1 for r in records if r.get("error")))


def scorecard(results: Iterable[dict[str, Any]], candidates: Sequence[str],
              baseline: str | None = None) -> list[ScoreRow]:
    """One row per candidate, in the order given (a candidate with no answers gets an n=0 row).

    Every row but the baseline's (default: the first candidate) carries a paired comparison with
    it over the items both answered: the accuracy difference, the items won and lost, and the
    exact McNemar p-value.
    """
    by_candidate = _main_answers(results)
    if baseline is None and candidates:
        baseline = candidates[0]
    base_answers = by_candidate.get(baseline or "", {})
    rows = []
    for name in candidates:
        answers = by_candidate.get(name, {})
        row = _row(name, answers)
        if name != baseline:
            shared = [item for item in answers if item in base_answers]
            if shared:
                mine = [bool(answers[i].get("passed")) for i in shared]
                theirs = [bool(base_answers[i].get("passed")) for i in shared]
                row.wins = sum(1 for a, b in zip(mine, theirs) if a and not b)
                row.losses = sum(1 for a, b in zip(mine, theirs) if b and not a)
                row.diff = (row.wins - row.losses) / len(shared)
                row.p_value = mcnemar_p(row.wins, row.losses)
        rows.append(row)
    return rows


def _cost(value: float | None) -> float:
    # No measurement counts as the worst, so it can never put a candidate on the front.
    return math.inf if value is None else value


def pareto_front(rows: Sequence[ScoreRow]) -> list[str]:
    """The candidates no other beats on both counts the chart shows: accuracy (higher is
    better) and mean latency (lower is better); between two equal on both, fewer tokens wins.
    Rows with no answers are left out."""
    scored = [r for r in rows if r.n]

    def dominates(a: ScoreRow, b: ScoreRow) -> bool:
        a_time, b_time = _cost(a.latency_mean), _cost(b.latency_mean)
        if a.accuracy < b.accuracy or a_time > b_time:
            return False
        if a.accuracy > b.accuracy or a_time < b_time:
            return True
        return _cost(a.tokens_mean) < _cost(b.tokens_mean)

    return [r.candidate for r in scored if not any(dominates(other, r) for other in scored if other is not r)]


def best(rows: Sequence[ScoreRow]) -> str | None:
    """The most accurate candidate (the faster on mean latency when tied); None when none answered."""
    scored = [r for r in rows if r.n]
    if not scored:
        return None
    return min(scored, key=lambda r: (-r.accuracy, _cost(r.latency_mean))).candidate


# -- where the candidates differ ------------------------------------------------------------------
@dataclass
class Disagreement:
    """An item some candidates got right and others wrong: candidate -> passed."""

    item: str
    verdicts: dict[str, bool]


def disagreements(results: Iterable[dict[str, Any]], candidates: Sequence[str]) -> list[Disagreement]:
    """The items (in the order first answered) on which the candidates' verdicts differ, main
    instruction only; only candidates that answered an item have a verdict for it."""
    by_candidate = _main_answers(results)
    order: dict[str, None] = {}
    for name in candidates:
        for item in by_candidate.get(name, {}):
            order.setdefault(item, None)
    found = []
    for item in order:
        verdicts = {name: bool(by_candidate[name][item].get("passed"))
                    for name in candidates if item in by_candidate.get(name, {})}
        if len(set(verdicts.values())) > 1:
            found.append(Disagreement(item, verdicts))
    return found


def summary_line(disagreements: Sequence[Disagreement], candidates: Sequence[str]) -> str:
    """One sentence on how much the candidates differ, for the top of a summary."""
    if len(candidates) < 2:
        return "Only one candidate, so there is nothing to compare it with."
    count = len(disagreements)
    if count == 0:
        return "Every candidate got the same items right."
    if count == 1:
        return "1 of the test items split the candidates."
    return f"{count} of the test items split the candidates."


# -- prompt sensitivity ---------------------------------------------------------------------------
@dataclass
class Sensitivity:
    """How much a candidate's accuracy moves when its instruction is reworded.

    ``accuracies`` are per instruction: the main one first, then each paraphrase in order
    (``variants`` says which: None for the main one, else the paraphrase's index).
    """

    accuracies: list[float]
    mean: float
    stdev: float
    low: float
    high: float
    spread: float
    variants: list[int | None] = field(default_factory=list)


def sensitivity(results: Iterable[dict[str, Any]], candidate: str) -> Sensitivity | None:
    """The candidate's accuracy under each instruction it was asked with; None unless it has
    answers for the main instruction and at least one paraphrase (nothing to compare yet).

    Each accuracy is over the items answered with that instruction (a stopped run may have
    answered fewer with some).
    """
    tallies: dict[int | None, list[bool]] = {}
    for record in results:
        if record.get("candidate") == candidate:
            tallies.setdefault(record.get("variant"), []).append(bool(record.get("passed")))
    if None not in tallies or len(tallies) < 2:
        return None
    variants: list[int | None] = [None, *sorted(v for v in tallies if v is not None)]
    accuracies = [sum(tallies[v]) / len(tallies[v]) for v in variants]
    low, high = min(accuracies), max(accuracies)
    return Sensitivity(accuracies, statistics.fmean(accuracies), statistics.stdev(accuracies),
                       low, high, high - low, variants)


# -- formatting -----------------------------------------------------------------------------------
def describe_sensitivity(candidate: str, found: Sensitivity) -> str:
    """One sentence on how far a candidate's accuracy moves across reworded instructions."""
    return (f"Prompt sensitivity of {candidate}: accuracy {format_percent(found.low)}–{format_percent(found.high)} "
            f"over {len(found.accuracies)} instructions (spread {found.spread * 100:.1f} pts).")


def format_percent(x: float | None) -> str:
    """A fraction as a whole percentage ("84%"); "—" for None."""
    if x is None:
        return "—"
    return f"{x * 100:.0f}%"


def format_seconds(x: float | None) -> str:
    """A duration for people: "12 ms", "0.84 s", "14.2 s", "2 min 05 s"; "—" for None."""
    if x is None:
        return "—"
    if x < 0.1:
        return f"{x * 1000:.0f} ms"
    if x < 10:
        return f"{x:.2f} s"
    if x < 60:
        return f"{x:.1f} s"
    minutes, seconds = divmod(round(x), 60)
    return f"{minutes} min {seconds:02d} s"
