"""The turn pipeline end to end with the real model, the store and plugins."""

import types

import pytest

from desktop_app.api import TurnResult, hookimpl
from desktop_app.core.chat import ChatService, TurnFailed, TurnFinished, TurnStarted
from desktop_app.core.engine import Engine, TokenEvent
from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT
from desktop_app.core.settings import Settings
from desktop_app.core.store import Store
from desktop_app.plugins import PluginHost


@pytest.fixture
def settings(paths):
    s = Settings.load(paths.settings_file)
    s.set("generation.temperature", 0.0)
    s.set("generation.max_tokens", 40)
    return s


@pytest.fixture
def store(paths):
    s = Store(paths.database_file)
    yield s
    s.close()


@pytest.fixture
def host():
    return PluginHost()


@pytest.fixture
def service(store, engine, settings, host):
    return ChatService(store, engine, settings, host.hook)


def plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def test_a_turn_is_stored_with_stats_and_a_labelled_trace(service, store, host):
    host.register(plugin("pirate", prepare_turn=lambda turn: turn.add_system("Talk like a pirate.")))
    conv = store.create_conversation()
    events = []
    outcome = service.send(conv.id, "Hello, who are you?", events.append)
    assert isinstance(outcome, TurnFinished)
    assert isinstance(events[0], TurnStarted) and events[0].user_message.content == "Hello, who are you?"
    assert any(isinstance(e, TokenEvent) for e in events) and events[-1] is outcome
    user, answer = store.history(conv.id)
    assert answer.status == "complete" and answer.content == outcome.result.text != ""
    assert answer.stats["generated_tokens"] > 0 and answer.stats["finish_reason"] in ("stop", "length")
    assert answer.model.endswith(".gguf")
    trace = store.get_trace(answer.id)
    assert "Talk like a pirate." in trace["prompt"] and DEFAULT_MODEL_SYSTEM_PROMPT in trace["prompt"]
    labels = [(e["plugin"], e["kind"]) for e in trace["entries"]]
    assert labels == [("core", "system"), ("pirate", "system")]


def test_the_user_message_is_committed_before_generation(service, store, engine):
    conv = store.create_conversation()
    seen = {}

    def on_event(event):
        if isinstance(event, TurnStarted):
            # A second connection sees the message: it is committed, not just pending.
            other = Store(store.path)
            seen["user"] = [m.content for m in other.history(conv.id)]
            other.close()

    service.send(conv.id, "Keep me safe", on_event)
    assert seen["user"] == ["Keep me safe", ""]


def test_follow_up_turns_carry_history_and_reuse_the_cache(service, store):
    conv = store.create_conversation()
    service.send(conv.id, "My name is Ada.")
    second = service.send(conv.id, "What is my name?")
    assert "My name is Ada." in second.result.prompt
    assert second.result.stats["prompt_tokens_evaluated"] < second.result.stats["prompt_tokens"] / 2


def test_a_conversation_system_prompt_replaces_the_default(service, store):
    conv = store.create_conversation(system_prompt="You only answer in French.")
    outcome = service.send(conv.id, "Hello")
    assert "You only answer in French." in outcome.result.prompt
    assert DEFAULT_MODEL_SYSTEM_PROMPT not in outcome.result.prompt


def test_a_plugin_that_raises_is_switched_off_and_the_chat_goes_on(service, store, host):
    def broken(turn):
        raise RuntimeError("plugin bug")

    host.register(plugin("broken", prepare_turn=broken))
    conv = store.create_conversation()
    outcome = service.send(conv.id, "Hi there")
    assert isinstance(outcome, TurnFinished) and outcome.message.status == "complete"
    assert host.records["broken"].status == "failed" and "plugin bug" in host.records["broken"].error


def test_cancel_keeps_the_partial_answer_marked_incomplete(service, store, engine):
    conv = store.create_conversation()
    count = 0

    def on_event(event):
        nonlocal count
        if isinstance(event, TokenEvent):
            count += 1
            if count == 4:
                engine.cancel()

    outcome = service.send(conv.id, "Write a long essay about Rome.", on_event, options={"max_tokens": 300})
    assert outcome.result.finish_reason == "cancelled"
    answer = store.history(conv.id)[-1]
    assert answer.status == "incomplete" and answer.content == outcome.result.text != ""


def test_regenerate_and_edit_make_branches(service, store):
    conv = store.create_conversation()
    first = service.send(conv.id, "Name a colour.")
    again = service.regenerate(conv.id, options={"temperature": 1.0, "seed": 7})
    user = store.history(conv.id)[0]
    assert [m.id for m in store.children(user.id)] == [first.message.id, again.message.id]
    edited = service.send(conv.id, "Name a fruit.", parent_id=user.parent_id)
    assert [m.content for m in store.history(conv.id)][0] == "Name a fruit."
    assert isinstance(edited, TurnFinished)
    assert len(store.all_messages(conv.id)) == 5


def test_generate_turn_strategy_owns_generation(service, store, host):
    calls = []

    def vote(turn, generate):
        results = [generate(turn) for _ in range(2)]
        calls.append(len(results))
        return TurnResult(results[0].text, results[0].finish_reason, results[0].stats,
                          results[0].prompt, samples=[r.text for r in results])

    host.register(plugin("twice", generate_turn=vote))
    conv = store.create_conversation()
    outcome = service.send(conv.id, "Say yes.")
    assert calls == [2]
    assert len(outcome.message.stats["samples"]) == 2


def test_after_turn_sees_the_result(service, store, host):
    seen = []
    host.register(plugin("log", after_turn=lambda turn, result: seen.append((turn.user_message, result.text))))
    conv = store.create_conversation()
    outcome = service.send(conv.id, "Hi")
    assert seen == [("Hi", outcome.result.text)]


def test_without_a_model_the_turn_fails_readably_and_the_message_is_kept(store, settings):
    service = ChatService(store, Engine(), settings)
    conv = store.create_conversation()
    outcome = service.send(conv.id, "Anyone there?")
    assert isinstance(outcome, TurnFailed) and "No model is loaded" in outcome.error
    user, answer = store.history(conv.id)
    assert user.content == "Anyone there?" and answer.status == "error"


def test_empty_messages_are_refused(service, store):
    conv = store.create_conversation()
    with pytest.raises(ValueError):
        service.send(conv.id, "   ")
    assert store.history(conv.id) == []
