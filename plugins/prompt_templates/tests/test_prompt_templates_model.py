"""The templates with the real SmolLM2 model: JSON that always matches, self-consistency voting."""

from __future__ import annotations

import json

import pytest

from desktop_app.core.chat import TurnFinished
from desktop_app.core.engine import TokenEvent

TEXTS = [
    "Hi, I'm Maria, 34 years old, and I live in Porto.",
    "Our new colleague Kenji Watanabe (age 29) moved here from Osaka last spring.",
    "Name: Olu. Age: 61. City: Lagos.",
    "The weather is lovely today.",  # nothing to extract: still valid JSON of the right shape
    "Grandpa Joe turned ninety-one this year; he still lives in Dublin.",
]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    import os

    from desktop_app.context import build_context
    from desktop_app.core.paths import AppPaths

    home = tmp_path_factory.mktemp("home")
    paths = AppPaths(home / "config", home / "data", home / "cache", home / "logs").ensure()
    saved = os.environ.get("PARLEY_LOAD_PLUGINS")
    os.environ["PARLEY_LOAD_PLUGINS"] = ""
    ctx = build_context(paths)
    ctx.settings.set("model.context_length", 2048)
    ctx.load_model(None)
    yield ctx
    ctx.close()
    if saved is None:
        os.environ.pop("PARLEY_LOAD_PLUGINS", None)


def test_json_extractor_always_returns_json_matching_the_schema(context):
    for text in TEXTS:
        conv = context.store.create_conversation()
        outcome = context.chat.send(conv.id, text, plugin_options={"prompt_templates": {"template": "JSON extractor"}})
        assert isinstance(outcome, TurnFinished), outcome
        data = json.loads(outcome.result.text)
        assert set(data) == {"name", "age", "city"}
        assert isinstance(data["name"], str) and isinstance(data["city"], str)
        assert isinstance(data["age"], int) and not isinstance(data["age"], bool)
    assert json.loads(context.chat.send(
        context.store.create_conversation().id, TEXTS[0],
        plugin_options={"prompt_templates": {"template": "JSON extractor"}}).result.text)["name"] == "Maria"


@pytest.fixture(scope="module")
def quick_reasoner(context):
    """The self-consistency template with short samples, so five real ones stay cheap on a slow
    machine. A turn's max_tokens cannot do this: the template's preset (384) is applied after it."""
    from desktop_app_prompt_templates import state

    template = state.library.duplicate("Self-consistency reasoner", "Quick reasoner")
    template.preset["max_tokens"] = 48
    return state.library.save(template, replacing=template.name).name


def test_self_consistency_votes_for_the_majority_answer_of_five_samples(context):
    """The vote itself, on scripted samples: which answers the real model samples depends on the
    machine, so whether its five agree proves nothing about the counting."""
    from desktop_app.core.chat import ChatService
    from desktop_app.testing import FakeEngine

    replies = ["3 + 4 is 8.\nFinal answer: 8", "3 plus 4 makes 7.\nFinal answer: 7", "Final answer: 7.",
               "Adding gives 8.\nfinal answer: 8", "Counting on from 3: 7.\nFINAL ANSWER: 7"]
    engine = FakeEngine().enqueue(*replies)
    service = ChatService(context.store, engine, context.settings, context.plugins.hook)
    progress = []
    outcome = service.send(
        context.store.create_conversation().id, "What is 3 + 4?",
        lambda e: progress.append(e.text) if isinstance(e, TokenEvent) else None,
        options={"seed": 1234}, plugin_options={"prompt_templates": {"template": "Self-consistency reasoner"}},
    )
    assert isinstance(outcome, TurnFinished)
    stats = outcome.message.stats
    assert stats["strategy"] == "self-consistency" and stats["samples"] == replies  # all kept, in order
    assert stats["votes"] == {"7": 3, "8": 2}
    # The answer is the first sample that voted for the winner, then the count.
    assert outcome.message.content == replies[1] + "\n\n---\n*Self-consistency: “7” — 3 of 5 samples agree.*"
    assert any("Sample 5 of 5" in p for p in progress)
    # The greedy chain first, then samples at the template's temperature, each with its own,
    # reproducible seed.
    assert [r.options.seed for r in engine.history] == [1234, 1235, 1236, 1237, 1238]
    assert [r.options.temperature for r in engine.history] == [0.0, 0.5, 0.5, 0.5, 0.5]
    # The answer trace says how many were drawn and how they voted.
    trace = context.store.get_trace(outcome.message.id)
    entry = next(e for e in trace["entries"] if e["kind"] == "strategy")
    assert entry["content"]["samples_drawn"] == 5 and entry["content"]["votes"] == {"7": 3, "8": 2}


def test_self_consistency_stores_five_real_samples_and_says_how_they_voted(context, quick_reasoner):
    conv = context.store.create_conversation()
    scheduler = context.engine._loaded.scheduler
    scheduler.widest = 0
    progress = []
    outcome = context.chat.send(
        conv.id, "What is 3 + 4?",
        lambda e: progress.append(e.text) if isinstance(e, TokenEvent) else None,
        options={"seed": 1234},
        plugin_options={"prompt_templates": {"template": quick_reasoner}},
    )
    assert isinstance(outcome, TurnFinished)
    stats = outcome.message.stats
    # How many are drawn depends on how the model's answers vote (it stops once decided).
    drawn = stats["samples_drawn"]
    assert 3 <= drawn <= 5 and len(stats["samples"]) == drawn and stats["strategy"] == "self-consistency"
    assert 0 < stats["generated_tokens"] <= drawn * 48  # the copy's preset is what limits each sample
    # What the samples say is the model's choice; the summary must match the stored votes.
    votes = stats["votes"]
    assert sum(votes.values()) <= drawn
    if votes:
        winner, count = next(iter(votes.items()))
        assert stats["answer"] == winner and count == max(votes.values())
        assert f"“{winner}” — {count} of {drawn} samples" in outcome.message.content
    else:
        assert f"no final answer found in {drawn} samples" in outcome.message.content
    # The five are written together: one batch, the prompt evaluated once.
    assert any("Writing 5 samples at once" in p for p in progress)
    assert scheduler.widest == 5


def test_stop_cancels_all_samples(context):
    conv = context.store.create_conversation()
    count = 0

    def on_event(event):
        nonlocal count
        if isinstance(event, TokenEvent):
            count += 1
            if count == 30:
                context.engine.cancel()

    outcome = context.chat.send(conv.id, "Explain why the sky is blue.", on_event,
                                options={"max_tokens": 64},
                                plugin_options={"prompt_templates": {"template": "Self-consistency reasoner"}})
    assert outcome.result.finish_reason == "cancelled"
    assert outcome.message.status == "incomplete"
    # The five are written at once, so Stop ends them all: the vote is among the finished ones
    # and the greedy chain as far as it got, the one the user watched.
    stats = outcome.message.stats
    assert stats["samples_drawn"] < 5 or stats["generated_tokens"] < 5 * 64


def test_strategy_without_a_template_votes_on_whole_answers(context):
    conv = context.store.create_conversation()
    outcome = context.chat.send(conv.id, "Say yes or no.", options={"max_tokens": 8, "seed": 3},
                                plugin_options={"prompt_templates": {"strategy": "self-consistency", "samples": 3}})
    # Two equal answers out of three decide the vote, so the third may not be drawn.
    assert isinstance(outcome, TurnFinished) and 2 <= len(outcome.message.stats["samples"]) <= 3
    assert context.plugins.records["prompt_templates"].status == "enabled"


def test_a_generation_failure_inside_the_strategy_fails_the_turn_not_the_plugin(context):
    from desktop_app.core.chat import TurnFailed

    context.engine.unload()
    try:
        conv = context.store.create_conversation()
        outcome = context.chat.send(conv.id, "What is 1 + 1?",
                                    plugin_options={"prompt_templates": {"template": "Self-consistency reasoner"}})
        assert isinstance(outcome, TurnFailed) and "No model is loaded" in outcome.error
        assert context.plugins.records["prompt_templates"].status == "enabled"
    finally:
        context.load_model(None)
