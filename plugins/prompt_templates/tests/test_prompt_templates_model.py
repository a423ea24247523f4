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


def test_self_consistency_votes_over_five_stored_samples(context):
    conv = context.store.create_conversation()
    progress = []
    outcome = context.chat.send(
        conv.id, "What is 3 + 4?",
        lambda e: progress.append(e.text) if isinstance(e, TokenEvent) else None,
        options={"max_tokens": 96, "seed": 1234},
        plugin_options={"prompt_templates": {"template": "Self-consistency reasoner"}},
    )
    assert isinstance(outcome, TurnFinished)
    stats = outcome.message.stats
    assert len(stats["samples"]) == 5 and stats["strategy"] == "self-consistency"
    votes = stats["votes"]
    assert sum(votes.values()) <= 5 and votes
    winner, count = max(votes.items(), key=lambda kv: kv[1])
    assert f"“{winner}” — {count} of 5 samples agree" in outcome.message.content
    assert any("Sample 5 of 5" in p for p in progress)
    # The samples really differ in sampling (different seeds), and are all kept.
    assert len(set(stats["samples"])) > 1


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
    assert len(outcome.message.stats["samples"]) < 5


def test_strategy_without_a_template_votes_on_whole_answers(context):
    conv = context.store.create_conversation()
    outcome = context.chat.send(conv.id, "Say yes or no.", options={"max_tokens": 8, "seed": 3},
                                plugin_options={"prompt_templates": {"strategy": "self-consistency", "samples": 3}})
    assert isinstance(outcome, TurnFinished) and len(outcome.message.stats["samples"]) == 3
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
