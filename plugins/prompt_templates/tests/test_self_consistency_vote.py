"""Self-consistency's vote on scripted answers: normalisation, the greedy chain's vote and tie-break,
early stop, and what the turn records. No sampler is involved, so the outcomes are fixed."""

from __future__ import annotations

import pytest

from desktop_app.api import GenerationOptions, Turn, TurnResult
from desktop_app_prompt_templates.library import builtin_templates
from desktop_app_prompt_templates.strategies import (
    canonical_answer, decided, final_answer, self_consistency, tally,
)
from desktop_app_prompt_templates.templates import PromptTemplate


@pytest.fixture
def reasoner() -> PromptTemplate:
    return next(t for t in builtin_templates()[0] if t.name == "Self-consistency reasoner")


class Scripted:
    """A ``generate`` that answers the queued texts in order and records the options it got."""

    def __init__(self, *texts: str, cancel_at: int | None = None) -> None:
        self.texts = list(texts)
        self.options: list[GenerationOptions] = []
        self.cancel_at = cancel_at
        self.shown: list[str] = []

    def emit(self, text: str) -> None:
        self.shown.append(text)

    def __call__(self, turn: Turn, options: GenerationOptions) -> TurnResult:
        index = len(self.options)
        self.options.append(options)
        reason = "cancelled" if index == self.cancel_at else "stop"
        return TurnResult(self.texts[index], reason, {"generated_tokens": 10}, "prompt")


def turn(seed: int = 40) -> Turn:
    return Turn(None, "What is 5 + 7?", options=GenerationOptions(seed=seed))


@pytest.mark.parametrize("text", ["12", "12.0", "$12", "12 apples", "**12**.", "1 + 11 = 12", "12.00 dollars"])
def test_spellings_of_one_number_vote_together(text):
    assert canonical_answer(text) == "12"


def test_other_answers_keep_their_own_form():
    assert canonical_answer("$1,200.50") == "1200.5"
    assert canonical_answer("-3") == "-3"
    assert canonical_answer("  Paris. ") == "paris"


def test_the_final_answer_line_wins_then_the_last_answer_or_equals(reasoner):
    assert final_answer(reasoner, "5 + 7 = 12\nFinal answer: 12 apples") == "12"
    assert final_answer(reasoner, "Final answer: 3\nOn second thought\nFinal answer: $13.0") == "13"
    # Cut off before its last line: what follows the last "=" or "answer" still votes.
    assert final_answer(reasoner, "First 5 + 7 = 12, so the answer is 12 and then") == "12"
    assert final_answer(reasoner, "We have 5 apples and 7 more") == ""  # no stated answer: no vote
    # Without a template the whole answer is the vote.
    assert final_answer(PromptTemplate("(none)"), " Yes. ") == "yes"


def test_tally_orders_by_count_then_the_greedy_chain_then_first_seen():
    assert tally(["8", "7", "7", "", "8", "7"]) == [("7", 3), ("8", 2)]
    assert tally(["8", "7", "7", "8"]) == [("8", 2), ("7", 2)]  # tie: the greedy chain's answer
    assert tally(["", "7", "9", "9", "7"]) == [("7", 2), ("9", 2)]  # greedy gave none: first seen
    assert tally(["", ""]) == []


def test_decided_only_when_the_rest_cannot_change_the_winner():
    assert decided(["12", "12", "12"], 2)  # 3 against at most 2
    assert not decided(["12", "12"], 3)  # three new answers could outvote it
    assert decided(["12", "12", "9"], 1)  # 9 could tie, and a tie goes to the greedy 12
    assert not decided(["9", "12", "12"], 1)  # 9 came first, so a tie would give it the win
    assert not decided(["12", "9", "9"], 1)
    assert decided(["12"], 0) and not decided([""], 1)


def test_greedy_chain_votes_first_and_the_rest_are_sampled(reasoner):
    generate = Scripted("Final answer: 8", "Final answer: 7", "Final answer: $7.0",
                        "Final answer: 8", "Final answer: 7 apples")
    t = turn(seed=40)
    result = self_consistency(t, generate, reasoner, samples=5, temperature=0.6)
    assert [o.temperature for o in generate.options] == [0.0, 0.6, 0.6, 0.6, 0.6]
    assert [o.seed for o in generate.options] == [40, 41, 42, 43, 44]
    assert result.stats["votes"] == {"7": 3, "8": 2} and result.stats["answer"] == "7"
    assert result.text == "Final answer: 7"  # the first answer that voted for the winner
    assert result.note.endswith("*Self-consistency: “7” — 3 of 5 samples agree.*")
    assert result.stats["samples_drawn"] == 5 and result.samples == generate.texts
    assert result.stats["generated_tokens"] == 50
    entry = next(e for e in t.trace if e.kind == "strategy")
    assert entry.plugin == "prompt_templates"
    assert entry.content["samples_drawn"] == 5 and entry.content["samples_planned"] == 5
    assert entry.content["votes"] == {"7": 3, "8": 2} and entry.content["stopped_early"] is False
    assert entry.content["answers"] == ["8", "7", "7", "8", "7"]


def test_a_tie_goes_to_the_greedy_chain(reasoner):
    generate = Scripted("Greedy.\nFinal answer: 12", "Final answer: 13", "Final answer: 13.", "Final answer: 12.0")
    result = self_consistency(turn(), generate, reasoner, samples=4, temperature=0.6)
    assert result.stats["answer"] == "12" and result.text == "Greedy.\nFinal answer: 12"
    assert list(result.stats["votes"].items()) == [("12", 2), ("13", 2)]


def test_sampling_stops_once_the_vote_is_decided(reasoner):
    generate = Scripted("Final answer: 12", "Final answer: 12", "so 5 + 7 = 12.0", "never", "drawn")
    t = turn()
    result = self_consistency(t, generate, reasoner, samples=5, temperature=0.6)
    assert len(generate.options) == 3  # 3 votes for 12; two more could not beat them
    assert result.stats["samples_drawn"] == 3 and result.stats["samples_planned"] == 5
    assert result.stats["votes"] == {"12": 3} and len(result.samples) == 3
    assert "3 of 3 samples (stopped early of 5) agree" in result.note
    assert not any("Sample 4" in s for s in generate.shown)
    assert next(e for e in t.trace if e.kind == "strategy").content["stopped_early"] is True


def test_one_sample_is_the_greedy_chain_alone(reasoner):
    generate = Scripted("Final answer: 12")
    result = self_consistency(turn(), generate, reasoner, samples=1, temperature=0.8)
    assert [o.temperature for o in generate.options] == [0.0]
    assert result.stats["answer"] == "12" and result.finish_reason == "stop"


def test_stop_votes_among_the_finished_answers(reasoner):
    generate = Scripted("Final answer: 12", "Final answer: 13", "Final ans", cancel_at=2)
    result = self_consistency(turn(), generate, reasoner, samples=5, temperature=0.6)
    assert result.finish_reason == "cancelled" and len(generate.options) == 3
    assert result.stats["answer"] == "12"  # 12 and 13 tie; the partial one states nothing
    assert "stopped early" not in result.note  # the user stopped it, not the vote


def test_no_final_answer_anywhere_says_so(reasoner):
    generate = Scripted("hmm", "well", "no idea")
    result = self_consistency(turn(), generate, reasoner, samples=3, temperature=0.6)
    assert result.stats["votes"] == {} and result.stats["answer"] == ""
    assert "no final answer found in 3 samples" in result.note and result.text == "hmm"
