"""The tool-call loop of the turn pipeline, driven by a scripted fake model."""

import json
import threading
import types

import pytest

from desktop_app.api import Tool, hookimpl, tool_from_function
from desktop_app.core.chat import ChatService, ToolCallFinished, ToolCallStarted, TurnFinished
from desktop_app.core.engine import TokenEvent
from desktop_app.core.settings import Settings
from desktop_app.core.store import Store
from desktop_app.plugins import PluginHost
from desktop_app.testing import FakeEngine


def add(a: float, b: float) -> str:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return str(a + b)


def read_secret(name: str) -> str:
    """Read one of the user's secrets.

    Args:
        name: Which secret.
    """
    return f"secret {name}"


def call(tool, **arguments):
    return json.dumps({"tool": tool, "arguments": arguments})


@pytest.fixture
def store(paths):
    s = Store(paths.database_file)
    yield s
    s.close()


@pytest.fixture
def tools():
    return {
        "add": tool_from_function(add, requires_approval=False),
        "read_secret": tool_from_function(read_secret),  # asks the user by default
    }


def offering(*offered, choice="auto", rounds=4):
    """A plugin that offers ``offered`` tools on every turn."""
    module = types.ModuleType("offer")

    def prepare_turn(turn):
        for tool in offered:
            turn.add_tool(tool)
        turn.set_option("tool_choice", choice)
        turn.set_option("max_tool_rounds", rounds)

    module.prepare_turn = hookimpl(prepare_turn)
    return module


def run(store, paths, engine, plugins=(), text="question", **kwargs):
    host = PluginHost(default_plugins=())
    for i, p in enumerate(plugins):
        host.register(p, name=f"p{i}")
    service = ChatService(store, engine, Settings.load(paths.settings_file), host.hook)
    conversation = store.create_conversation("t")
    events = []
    outcome = service.send(conversation.id, text, events.append, **kwargs)
    return outcome, events


def tool_calls(store, message_id):
    return [e["content"] for e in store.get_trace(message_id)["entries"] if e["kind"] == "tool_call"]


def test_two_rounds_of_calls_then_an_answer(store, paths, tools):
    engine = FakeEngine().enqueue(call("add", a=2, b=3), call("add", a=5, b=10), "The total is 15.")
    outcome, events = run(store, paths, engine, [offering(tools["add"])])
    assert isinstance(outcome, TurnFinished)
    assert outcome.message.content == "The total is 15."
    assert outcome.result.stats["tool_rounds"] == 2
    calls = tool_calls(store, outcome.message.id)
    assert [(c["tool"], c["arguments"], c["result"], c["decision"], c["round"]) for c in calls] == [
        ("add", {"a": 2, "b": 3}, "5", "allowed", 1),
        ("add", {"a": 5, "b": 10}, "15", "allowed", 2),
    ]
    assert all(c["duration_ms"] >= 0 and c["source"] == "" for c in calls)
    # The model saw its own call and the result before answering.
    last = engine.history[-1].messages
    assert last[-2].content == call("add", a=5, b=10)
    assert last[-1].content.startswith("Tool result from add: 15")
    # The tools are described in the system prompt of the prompt protocol.
    assert "- add(a: number (The first number.), b: number (The second number.)): Add two numbers." in last[0].content
    # Tool calls are events for the window, never answer text.
    assert [type(e) for e in events if isinstance(e, (ToolCallStarted, ToolCallFinished))] == [
        ToolCallStarted, ToolCallFinished, ToolCallStarted, ToolCallFinished]
    shown = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert shown == "The total is 15."


def test_each_round_constrains_calls_with_a_grammar(store, paths, tools):
    engine = FakeEngine().enqueue(call("add", a=1, b=1), "Two.")
    run(store, paths, engine, [offering(tools["add"])])
    first, second = (r.options for r in engine.history)
    assert 't0 ::= "{\\"tool\\": \\"add\\", \\"arguments\\": "' in first.grammar
    assert "text ::=" in first.grammar and first.grammar_trigger == "{"
    # After a call the model may call again (a different call) or answer.
    assert "call" in second.grammar


def test_required_tool_choice_has_no_text_branch(store, paths, tools):
    engine = FakeEngine().enqueue(call("add", a=1, b=1), "Two.")
    run(store, paths, engine, [offering(tools["add"], choice="required")])
    first = engine.history[0].options
    assert "text ::=" not in first.grammar and first.grammar_trigger == ""


@pytest.mark.parametrize("reply, expected", [
    ('{"tool": "add", "arguments": {"a": 1,', "not valid JSON"),
    (call("multiply", a=2, b=3), "There is no tool named 'multiply'. Tools: add."),
    (call("add", a="two", b=3), "'a' must be of type number"),
    (call("add", a=1), "missing 'b'"),
    ('{"arguments": {}}', "names no tool"),
])
def test_bad_calls_go_back_to_the_model_and_the_chat_goes_on(store, paths, tools, reply, expected):
    engine = FakeEngine().enqueue(reply, "Sorry, I could not compute that.")
    outcome, _ = run(store, paths, engine, [offering(tools["add"])])
    assert isinstance(outcome, TurnFinished)
    assert outcome.message.content == "Sorry, I could not compute that."
    told = engine.history[1].messages[-1].content
    assert expected in told
    (recorded,) = tool_calls(store, outcome.message.id)
    assert recorded["decision"] == "invalid" and expected in recorded["error"]


def test_a_denied_call_is_reported_to_the_model(store, paths, tools):
    asked = []

    def approver(call, tool):
        asked.append((call.name, call.arguments, tool.name))
        return False

    engine = FakeEngine().enqueue(call("read_secret", name="bank"), "I was not allowed to look.")
    outcome, _ = run(store, paths, engine, [offering(tools["read_secret"])], approve_tool=approver)
    assert asked == [("read_secret", {"name": "bank"}, "read_secret")]
    (recorded,) = tool_calls(store, outcome.message.id)
    assert (recorded["decision"], recorded["decided_by"]) == ("denied", "you")
    assert "did not allow" in engine.history[1].messages[-1].content


def test_an_approved_call_runs(store, paths, tools):
    engine = FakeEngine().enqueue(call("read_secret", name="bank"), "Done.")
    outcome, _ = run(store, paths, engine, [offering(tools["read_secret"])], approve_tool=lambda c, t: True)
    (recorded,) = tool_calls(store, outcome.message.id)
    assert (recorded["decision"], recorded["decided_by"], recorded["result"]) == ("approved", "you", "secret bank")


def test_without_anyone_to_ask_calls_needing_approval_are_refused(store, paths, tools):
    engine = FakeEngine().enqueue(call("read_secret", name="bank"), "Done.")
    outcome, _ = run(store, paths, engine, [offering(tools["read_secret"])])
    (recorded,) = tool_calls(store, outcome.message.id)
    assert (recorded["decision"], recorded["decided_by"]) == ("denied", "no one to ask")


def test_a_plugin_decides_before_the_user(store, paths, tools):
    decider = types.ModuleType("decider")
    seen = []

    def approve_tool_call(call):
        seen.append(call)
        return True

    decider.approve_tool_call = hookimpl(approve_tool_call)

    def never(call, tool):
        raise AssertionError("the user must not be asked")

    engine = FakeEngine().enqueue(call("read_secret", name="a"), "Done.")
    outcome, _ = run(store, paths, engine, [offering(tools["read_secret"]), decider], approve_tool=never)
    assert seen == [{"tool": "read_secret", "arguments": {"name": "a"}, "source": ""}]
    (recorded,) = tool_calls(store, outcome.message.id)
    assert (recorded["decision"], recorded["decided_by"]) == ("allowed", "policy")


def test_a_tool_that_raises_or_hangs_becomes_an_error_result(store, paths):
    def broken() -> str:
        """Broken."""
        raise RuntimeError("disk on fire")

    released = threading.Event()

    def hangs() -> str:
        """Hangs."""
        released.wait(120)  # until the test ends: had the turn waited, the result would be "late"
        return "late"

    offered = [tool_from_function(broken, requires_approval=False),
               tool_from_function(hangs, requires_approval=False, timeout=0.2)]
    engine = FakeEngine().enqueue(call("broken"), call("hangs"), "Both failed.")
    try:
        outcome, _ = run(store, paths, engine, [offering(*offered)])
    finally:
        released.set()
    errors = [c["error"] for c in tool_calls(store, outcome.message.id)]
    assert errors == ["RuntimeError: disk on fire", "hangs did not finish within 0.2 s."]
    assert outcome.message.content == "Both failed."


def test_rounds_are_bounded_and_the_last_reply_must_be_text(store, paths, tools):
    engine = FakeEngine().enqueue(call("add", a=1, b=1), call("add", a=2, b=2), "Enough.")
    outcome, _ = run(store, paths, engine, [offering(tools["add"], rounds=2)])
    assert outcome.message.content == "Enough."
    final = engine.history[-1].options
    # The last round cannot call: its grammar only stops the reply from opening like a call.
    assert "call" not in final.grammar and final.grammar_trigger == "{"


def test_a_repeated_call_is_not_run_twice(store, paths, tools):
    engine = FakeEngine().enqueue(call("add", a=1, b=1), call("add", a=1, b=1), "Two.")
    outcome, _ = run(store, paths, engine, [offering(tools["add"])])
    assert len(tool_calls(store, outcome.message.id)) == 1
    assert outcome.message.content == "Two."
    assert "call" not in engine.history[-1].options.grammar


def stopped_while_running(engine):
    """A tool during which Stop is pressed."""
    def waits() -> str:
        """Waits."""
        engine.cancel()  # Stop, pressed while the tool runs
        return "done"

    return tool_from_function(waits, requires_approval=False)


def test_stop_while_a_tool_runs_ends_the_turn_without_the_call_text(store, paths):
    engine = FakeEngine()
    waits = stopped_while_running(engine)
    engine.enqueue(call("waits"), "never used")
    outcome, _ = run(store, paths, engine, [offering(waits)])
    assert outcome.message.content == "" and outcome.message.status == "incomplete"
    assert not engine.cancel_event.is_set()  # the Stop was consumed


def test_turns_without_tools_are_untouched(store, paths):
    engine = FakeEngine().enqueue('{"tool": "x"}')
    outcome, _ = run(store, paths, engine)
    assert outcome.message.content == '{"tool": "x"}'
    assert engine.history[0].options.grammar is None


HERMES = (
    "{%- if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{%- if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n{{ c.function | tojson }}\n</tool_call>"
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_templates_that_know_tools_get_them_natively(store, paths, tools):
    engine = FakeEngine(template_source=HERMES).enqueue(
        '<tool_call>\n{"name": "add", "arguments": {"a": 4, "b": 4}}\n</tool_call>', "Eight.")
    outcome, events = run(store, paths, engine, [offering(tools["add"])])
    assert outcome.message.content == "Eight."
    first, second = engine.history
    assert first.tools[0]["function"]["name"] == "add"
    assert "Tools: [" in first.prompt and "You can use tools" not in first.prompt
    assert first.options.grammar_trigger == "<tool_call>"
    assert '<tool_call>\n{"arguments": {"a": 4, "b": 4}, "name": "add"}\n</tool_call>' in second.prompt
    assert second.messages[-1].role == "tool" and second.messages[-1].content == "8"
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == "Eight."


def test_a_plugin_can_make_the_user_decide_even_for_pure_tools(store, paths, tools):
    asker = types.ModuleType("asker")
    asker.approve_tool_call = hookimpl(lambda call: "ask")
    asked = []
    engine = FakeEngine().enqueue(call("add", a=1, b=2), "Three.")
    outcome, _ = run(store, paths, engine, [offering(tools["add"]), asker],
                     approve_tool=lambda c, t: asked.append(c.name) or "always")
    assert asked == ["add"]
    (recorded,) = tool_calls(store, outcome.message.id)
    assert (recorded["decision"], recorded["decided_by"], recorded["result"]) == ("approved", "you", "3")


def test_a_repeated_failing_call_is_not_run_again(store, paths, tools):
    engine = FakeEngine().enqueue(call("add", a="x", b=1), call("add", a="x", b=1), "I cannot add that.")
    outcome, _ = run(store, paths, engine, [offering(tools["add"])])
    assert [c["decision"] for c in tool_calls(store, outcome.message.id)] == ["invalid"]
    assert outcome.message.content == "I cannot add that."


def test_only_true_from_a_plugin_allows_a_call(store, paths, tools):
    sloppy = types.ModuleType("sloppy")
    sloppy.approve_tool_call = hookimpl(lambda call: "deny")  # a word, not a decision
    engine = FakeEngine().enqueue(call("read_secret", name="x"), "Done.")
    outcome, _ = run(store, paths, engine, [offering(tools["read_secret"]), sloppy],
                     approve_tool=lambda c, t: False)
    (recorded,) = tool_calls(store, outcome.message.id)
    assert (recorded["decision"], recorded["decided_by"]) == ("denied", "you")


def test_an_adapter_that_vanished_is_left_out_with_a_note(store, paths, tmp_path):
    from desktop_app.api import Adapter

    kept = tmp_path / "kept.gguf"
    kept.write_bytes(b"x")
    adapters = types.ModuleType("adapters")

    def prepare_turn(turn):
        turn.add_adapter(Adapter("kept", str(kept), 1.0))
        turn.add_adapter(Adapter("gone", str(tmp_path / "gone.gguf"), 0.5))

    adapters.prepare_turn = hookimpl(prepare_turn)
    engine = FakeEngine().enqueue("Answer.")
    outcome, _ = run(store, paths, engine, [adapters])
    assert isinstance(outcome, TurnFinished) and engine.adapters == [(str(kept), 1.0)]
    notes = [e["content"] for e in store.get_trace(outcome.message.id)["entries"] if e["kind"] == "note"]
    assert any("without the LoRA adapter gone" in n for n in notes)


def hermes_call(tool, **arguments):
    return "<tool_call>\n" + json.dumps({"name": tool, "arguments": arguments}) + "\n</tool_call>"


def shown(events):
    return "".join(e.text for e in events if isinstance(e, TokenEvent))


def test_several_calls_in_one_reply_all_run_in_order(store, paths, tools):
    reply = hermes_call("add", a=1, b=2) + "\n" + hermes_call("add", a=3, b=4)
    engine = FakeEngine(template_source=HERMES).enqueue(reply, "3 and 7.")
    outcome, events = run(store, paths, engine, [offering(tools["add"])])
    assert outcome.message.content == "3 and 7." and shown(events) == "3 and 7."
    assert outcome.result.stats["tool_rounds"] == 1
    calls = tool_calls(store, outcome.message.id)
    assert [(c["arguments"], c["result"], c["round"]) for c in calls] == [
        ({"a": 1, "b": 2}, "3", 1), ({"a": 3, "b": 4}, "7", 1)]
    assert [type(e).__name__ for e in events if isinstance(e, (ToolCallStarted, ToolCallFinished))] == [
        "ToolCallStarted", "ToolCallFinished", "ToolCallStarted", "ToolCallFinished"]
    # The model then sees one reply with both calls, and a result for each, matched by id.
    *_, asked, first, second = engine.history[-1].messages
    assert [c["id"] for c in asked.tool_calls] == ["call_1", "call_2"]
    assert (first.role, first.content, first.tool_call_id) == ("tool", "3", "call_1")
    assert (second.role, second.content, second.tool_call_id) == ("tool", "7", "call_2")


def test_the_native_grammar_lets_a_reply_hold_up_to_eight_calls(store, paths, tools):
    engine = FakeEngine(template_source=HERMES).enqueue(hermes_call("add", a=1, b=1), "Two.")
    run(store, paths, engine, [offering(tools["add"])])
    grammar = engine.history[0].options.grammar
    assert 'block ("\\n" block){0,7}' in grammar and 'block ::= "<tool_call>\\n" call "\\n</tool_call>"' in grammar


def test_calls_past_the_limit_of_one_reply_are_answered_with_an_error(store, paths, tools):
    reply = "\n".join(hermes_call("add", a=i, b=0) for i in range(9))
    engine = FakeEngine(template_source=HERMES).enqueue(reply, "Done.")
    outcome, _ = run(store, paths, engine, [offering(tools["add"])])
    calls = tool_calls(store, outcome.message.id)
    assert [c["result"] for c in calls[:8]] == [str(i) for i in range(8)]
    assert calls[8]["decision"] == "invalid" and "at most 8 calls" in calls[8]["error"]


def test_prompt_protocol_replies_may_hold_several_calls_too(store, paths, tools):
    engine = FakeEngine().enqueue(call("add", a=1, b=2) + "\n" + call("add", a=3, b=4), "3 and 7.")
    outcome, _ = run(store, paths, engine, [offering(tools["add"])])
    assert [c["result"] for c in tool_calls(store, outcome.message.id)] == ["3", "7"]
    told = engine.history[-1].messages[-1].content
    assert told.startswith("Tool result from add: 3\nTool result from add: 7\n\nUsing these results")


def test_only_the_new_calls_of_a_reply_run(store, paths, tools):
    again = call("add", a=1, b=2) + "\n" + call("add", a=1, b=2) + "\n" + call("add", a=3, b=4)
    engine = FakeEngine().enqueue(call("add", a=1, b=2), again, "Done.")
    outcome, _ = run(store, paths, engine, [offering(tools["add"])])
    assert [(c["result"], c["round"]) for c in tool_calls(store, outcome.message.id)] == [("3", 1), ("7", 2)]


def test_text_before_a_call_stays_shown_and_begins_the_answer(store, paths, tools):
    engine = FakeEngine(template_source=HERMES).enqueue(
        "Let me add those. " + hermes_call("add", a=4, b=4), "It is eight.")
    outcome, events = run(store, paths, engine, [offering(tools["add"])])
    assert shown(events) == "Let me add those.\n\nIt is eight."
    assert outcome.message.content == "Let me add those.\n\nIt is eight."
    assert tool_calls(store, outcome.message.id)[0]["result"] == "8"


def test_text_that_only_looks_like_the_start_of_a_call_is_shown_whole(store, paths, tools):
    engine = FakeEngine(template_source=HERMES).enqueue("Type <tool and press enter, then <tool_")
    outcome, events = run(store, paths, engine, [offering(tools["add"])])
    assert shown(events) == outcome.message.content == "Type <tool and press enter, then <tool_"
    assert tool_calls(store, outcome.message.id) == []


def test_stop_while_a_tool_runs_keeps_the_text_shown_before_the_call(store, paths):
    engine = FakeEngine(template_source=HERMES)
    waits = stopped_while_running(engine)
    engine.enqueue("One moment. " + hermes_call("waits"), "never used")
    outcome, _ = run(store, paths, engine, [offering(waits)])
    assert outcome.message.content == "One moment." and outcome.message.status == "incomplete"


def test_text_before_a_repeated_or_broken_call_is_kept_too(store, paths, tools):
    engine = FakeEngine(template_source=HERMES).enqueue(
        "Checking. <tool_call>\n{not json\n</tool_call>",
        hermes_call("add", a=1, b=1),
        "Once more. " + hermes_call("add", a=1, b=1),
        "Two.")
    outcome, events = run(store, paths, engine, [offering(tools["add"])])
    assert shown(events) == outcome.message.content == "Checking.\n\nOnce more.\n\nTwo."
    assert [c["decision"] for c in tool_calls(store, outcome.message.id)] == ["invalid", "allowed"]


def test_a_call_in_the_last_round_never_reaches_the_screen(store, paths, tools):
    # The model repeats its call (answer now, it is told), then still writes text and a call.
    engine = FakeEngine(template_source=HERMES).enqueue(
        hermes_call("add", a=1, b=1),
        hermes_call("add", a=1, b=1),
        "It is two. " + hermes_call("add", a=1, b=1))
    outcome, events = run(store, paths, engine, [offering(tools["add"])])
    assert shown(events).rstrip() == outcome.message.content.rstrip() == "It is two."
    # The model was told why it must answer, so it did not see the same prompt twice.
    assert engine.history[-1].prompt != engine.history[-2].prompt
    assert "You already made this call" in engine.history[-1].messages[-1].content


def test_stop_while_a_call_is_being_written_keeps_only_what_was_shown(store, paths, tools):
    engine = FakeEngine(template_source=HERMES).enqueue("One moment. " + hermes_call("add", a=1, b=1))
    engine.stop_after = 4  # "One", " moment.", " <tool_call>...", then Stop
    outcome, events = run(store, paths, engine, [offering(tools["add"])])
    assert shown(events) == outcome.message.content == "One moment."
    assert outcome.message.status == "incomplete" and tool_calls(store, outcome.message.id) == []


def test_a_tag_without_json_goes_back_to_the_model(store, paths, tools):
    engine = FakeEngine(template_source=HERMES).enqueue("Let me see. <tool_call>", "Sorry, it is two.")
    outcome, _ = run(store, paths, engine, [offering(tools["add"])])
    assert outcome.message.content == "Let me see.\n\nSorry, it is two."
    (bad,) = tool_calls(store, outcome.message.id)
    assert bad["decision"] == "invalid" and "holds no JSON object" in bad["error"]


def test_what_was_said_before_the_calls_is_in_the_models_history(store, paths, tools):
    engine = FakeEngine(template_source=HERMES).enqueue("Let me add. " + hermes_call("add", a=4, b=4), "Eight.")
    run(store, paths, engine, [offering(tools["add"])])
    asked = engine.history[-1].messages[-2]
    assert asked.role == "assistant" and asked.content == "Let me add." and asked.tool_calls


def test_a_block_left_open_does_not_swallow_the_next_call():
    from desktop_app.core.tool_protocol import NativeProtocol

    protocol = NativeProtocol([], HERMES)
    reply = '<tool_call>\n{"name": "a", "arguments": {}}\n<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>'
    assert [c.name for c in protocol.parse_calls(reply)] == ["a", "b"]
