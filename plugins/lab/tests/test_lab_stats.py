"""The lab's statistics: intervals, percentiles, the paired test, the scorecard and its verdicts."""

from __future__ import annotations

import pytest

from desktop_app_lab.stats import (
    ScoreRow,
    best,
    disagreements,
    format_percent,
    format_seconds,
    mcnemar_p,
    pareto_front,
    percentile,
    scorecard,
    sensitivity,
    summary_line,
    wilson_interval,
)

ITEMS = [f"q{i:02d}" for i in range(10)]
#: Which items each candidate gets right under the main instruction.
RIGHT = {
    "zero": set(ITEMS[:4]),                 # 4/10
    "few": set(ITEMS[:8]),                  # 8/10
    "chain": set(ITEMS[1:]),                # 9/10: loses q00 to zero, wins q04..q09
}
LATENCY = {"zero": 0.2, "few": 0.5, "chain": 2.0}
TOKENS = {"zero": 4, "few": 4, "chain": 60}


def _record(candidate, item, passed, variant=None, latency=None, tokens=None, error=None):
    return {"candidate": candidate, "item": item, "variant": variant, "answer": "x", "extracted": "x",
            "expected": "y", "passed": passed, "detail": "", "error": error,
            "latency": LATENCY[candidate] if latency is None else latency,
            "tokens": TOKENS[candidate] if tokens is None else tokens}


def results():
    found = [_record(name, item, item in right) for name, right in RIGHT.items() for item in ITEMS]
    # chain-of-thought under two paraphrased instructions: 5/10 and 7/10 (never scored, only compared)
    found += [_record("chain", item, i < 5, variant=0) for i, item in enumerate(ITEMS)]
    found += [_record("chain", item, i < 7, variant=1) for i, item in enumerate(ITEMS)]
    return found


# -- numbers ---------------------------------------------------------------------------------------
def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=5e-4) and high == pytest.approx(0.9433, abs=5e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=5e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=5e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # more answers, narrower interval around the same rate
    assert wilson_interval(80, 100)[1] - wilson_interval(80, 100)[0] < high - low


def test_percentile_interpolates_between_ranks():
    values = [4, 1, 3, 2]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 4
    assert percentile([5.0], 95) == 5.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_mcnemar_is_the_exact_two_sided_binomial_test():
    assert mcnemar_p(1, 6) == pytest.approx(0.125)
    assert mcnemar_p(6, 1) == pytest.approx(0.125)
    assert mcnemar_p(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(0, 0) == 1.0


# -- the scorecard ---------------------------------------------------------------------------------
def test_scorecard_scores_the_main_instruction_and_pairs_with_the_baseline():
    rows = scorecard(results(), ["zero", "few", "chain", "missing"])
    assert [r.candidate for r in rows] == ["zero", "few", "chain", "missing"]
    zero, few, chain, missing = rows
    assert (zero.n, zero.correct, zero.accuracy) == (10, 4, 0.4)
    assert (chain.n, chain.correct) == (10, 9)  # the paraphrased answers are not counted
    assert zero.diff is zero.wins is zero.losses is zero.p_value is None
    assert (chain.wins, chain.losses) == (6, 1)
    assert chain.diff == pytest.approx(0.5) and chain.p_value == pytest.approx(0.125)
    assert (few.wins, few.losses) == (4, 0) and few.p_value == pytest.approx(2 / 16)
    assert (chain.ci_low, chain.ci_high) == pytest.approx(wilson_interval(9, 10))
    assert chain.latency_p50 == pytest.approx(2.0) and chain.tokens_mean == pytest.approx(60)
    assert (missing.n, missing.accuracy, missing.latency_mean, missing.diff) == (0, 0.0, None, None)
    assert (missing.ci_low, missing.ci_high) == (0.0, 1.0)


def test_scorecard_latency_tokens_and_errors():
    records = [_record("zero", f"q{i}", True, latency=float(i + 1), tokens=10 * (i + 1)) for i in range(5)]
    records.append(_record("zero", "q9", False, latency=9.0, tokens=0, error="the model stopped"))
    (row,) = scorecard(records, ["zero"])
    assert row.latency_p50 == pytest.approx(3.5)
    assert row.latency_p95 == pytest.approx(8.0)  # rank 4.75 of [1, 2, 3, 4, 5, 9]
    assert row.latency_mean == pytest.approx(24 / 6)
    assert row.tokens_mean == pytest.approx(150 / 6)
    assert row.errors == 1 and row.correct == 5


def test_another_baseline_and_only_shared_items_are_paired():
    records = [_record("zero", "q1", True), _record("zero", "q2", False),
               _record("few", "q2", True), _record("few", "q3", True)]
    zero, few = scorecard(records, ["zero", "few"], baseline="few")
    assert few.p_value is None and zero.wins == 0 and zero.losses == 1  # only q2 is shared
    assert zero.diff == pytest.approx(-1.0)


def _row(name, accuracy, latency, tokens, n=10):
    return ScoreRow(name, n, round(accuracy * n), accuracy, 0.0, 1.0, latency, latency, latency, tokens, 0)


def test_pareto_front_leaves_out_the_dominated():
    rows = scorecard(results(), ["zero", "few", "chain"])
    assert pareto_front(rows) == ["zero", "few", "chain"]  # each trades accuracy for time
    rows.append(_row("slow-and-worse", 0.5, 3.0, 80))
    rows.append(_row("equal-but-wordier", 0.8, 0.5, 9))  # few is as good and as fast, with fewer tokens
    rows.append(_row("unanswered", 1.0, None, None, n=0))
    rows.append(_row("terse-but-slower-and-worse", 0.7, 0.6, 1))  # tokens alone do not put it on the chart's front
    assert pareto_front(rows) == ["zero", "few", "chain"]
    assert pareto_front([_row("a", 0.5, 1.0, 5), _row("b", 0.5, 1.0, 5)]) == ["a", "b"]  # ties both stay


def test_best_is_the_most_accurate_then_the_faster():
    assert best(scorecard(results(), ["zero", "few", "chain"])) == "chain"
    assert best([_row("slow", 0.9, 2.0, 5), _row("fast", 0.9, 1.0, 5), _row("worse", 0.8, 0.1, 1)]) == "fast"
    assert best([_row("none", 0.0, None, None, n=0)]) is None
    assert best([]) is None


# -- disagreements and sensitivity -----------------------------------------------------------------
def test_disagreements_are_the_items_that_split_the_candidates():
    found = disagreements(results(), ["zero", "few", "chain"])
    assert [d.item for d in found] == ["q00", "q04", "q05", "q06", "q07", "q08", "q09"]
    assert found[0].verdicts == {"zero": True, "few": True, "chain": False}
    assert summary_line(found, ["zero", "few", "chain"]) == "7 of the test items split the candidates."
    assert summary_line(found[:1], ["zero", "few"]) == "1 of the test items split the candidates."
    same = [_record("zero", "q1", True), _record("few", "q1", True), _record("few", "q2", False)]
    assert disagreements(same, ["zero", "few"]) == []
    assert summary_line([], ["zero", "few"]) == "Every candidate got the same items right."
    assert "nothing to compare" in summary_line([], ["zero"])


def test_sensitivity_is_accuracy_per_instruction_main_first():
    found = sensitivity(results(), "chain")
    assert found is not None
    assert found.accuracies == pytest.approx([0.9, 0.5, 0.7])
    assert found.variants == [None, 0, 1]
    assert found.mean == pytest.approx(0.7) and found.stdev == pytest.approx(0.2)
    assert (found.low, found.high, found.spread) == pytest.approx((0.5, 0.9, 0.4))
    assert sensitivity(results(), "zero") is None  # never asked with a paraphrase
    assert sensitivity(results(), "nobody") is None


def test_formatting_for_people():
    assert format_percent(0.843) == "84%" and format_percent(1.0) == "100%" and format_percent(None) == "—"
    assert format_seconds(0.84) == "0.84 s"
    assert format_seconds(0.012) == "12 ms"
    assert format_seconds(14.23) == "14.2 s"
    assert format_seconds(125) == "2 min 05 s"
    assert format_seconds(None) == "—"
