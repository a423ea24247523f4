"""The plugin platform: each plugin's own context, the one collector, the per-conversation choice,
tools offered by core, the Backend protocol, model calls, and the test harness."""

from __future__ import annotations

import threading
import types

import pytest

from desktop_app.api import (
    ChatMessage,
    EngineError,
    GenerationOptions,
    Option,
    PluginContext,
    Turn,
    hookimpl,
    tool_from_function,
)
from desktop_app.testing import FakeEngine, PluginHarness


def make_plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def shout(text: str) -> str:
    """Say it louder.

    Args:
        text: What to say.
    """
    return text.upper()


def test_each_plugin_gets_its_own_context_with_its_own_settings_and_folders():
    seen = {}
    one = make_plugin("one", app_started=lambda context: seen.setdefault("one", context),
                      register_settings=lambda register: register([Option("level", int, 3, "How loud.")]))
    two = make_plugin("two", app_started=lambda context: seen.setdefault("two", context))
    with PluginHarness(plugins=[one, two], settings={"level": 7}) as harness:
        first, second = seen["one"], seen["two"]
        assert isinstance(first, PluginContext) and first.name == "one" and second.name == "two"
        assert first.settings.get("level") == 7 and first.settings.is_changed("level")
        first.settings.set("level", 9)
        assert harness.app.settings.get("plugins.one.level") == 9  # the plugin's keys, no prefix
        with pytest.raises(Exception, match="level"):
            first.settings.set("level", "loud")
        assert first.data_dir != second.data_dir and first.data_dir.parts[-2:] == ("plugin-data", "one")
        assert first.data_dir.is_dir() and first.cache_dir.is_dir()
        assert first.app_setting("chat.system_prompt") == ""
        assert not hasattr(first, "store") and not hasattr(first, "engine")


def test_built_in_plugins_keep_their_files_where_they_always_were():
    with PluginHarness(builtins=["prompt_templates"]) as harness:
        context = harness.app.plugin_context("prompt_templates")
        assert context.data_dir == harness.app.paths.data_dir


def test_app_closing_also_gets_the_plugins_own_context():
    closed = []
    plugin = make_plugin("tidy", app_closing=lambda context: closed.append(context.name))
    PluginHarness(plugins=[plugin]).close()
    assert closed == ["tidy"]


def test_conversations_are_readable_and_the_choice_follows_its_chain():
    plugin = make_plugin("picker")
    with PluginHarness(plugins=[plugin], replies=["a", "b", "c"]) as harness:
        context = harness.context()
        choice = context.choice("colour", default=lambda: {"colour": "grey"}, fields=("colour",))
        new = harness.new_conversation()
        assert choice.current(new) == ({"colour": "grey"}, False)
        choice.selection = {"colour": "blue"}  # the panel's pick for conversations without one
        assert choice.current(new) == ({"colour": "blue"}, False)
        turn = Turn(new, "hi", plugin_options={"picker": {"colour": "red", "other": 1}})
        assert choice.for_turn(turn) == {"colour": "red"}  # the turn's own wins, fields only
        assert choice.current(new) == ({"colour": "red"}, True)
        assert context.conversations.get(new).meta["picker"] == {"colour": "red"}
        assert choice.for_turn(Turn(new, "again")) == {"colour": "red"}  # it keeps what it started with
        other = harness.new_conversation()
        assert choice.for_turn(Turn(other, "hi")) == {"colour": "blue"}
        assert choice.remembered(other) == {"colour": "blue"}  # remembered from its first turn
        harness.send("hello")
        assert [m.role for m in context.conversations.messages(other)] == ["user", "assistant"]
        assert choice.current(10_000) == ({"colour": "blue"}, False)  # no such conversation: no choice


def test_collect_calls_each_plugin_on_its_own_and_drops_a_failing_one():
    good = make_plugin("good", register_prompt_templates=lambda register: register({"name": "A"}))

    def broken(register):
        register({"name": "half"})
        raise RuntimeError("boom")

    bad = make_plugin("bad", register_prompt_templates=broken)
    with PluginHarness(plugins=[good, bad]) as harness:
        found = harness.context("good").collect("register_prompt_templates")
        assert [(e.plugin, e.item) for e in found] == [("good", {"name": "A"})]
        assert harness.app.plugins.records["bad"].status == "failed"
        assert "boom" in harness.app.plugins.records["bad"].error


def test_an_always_offered_tool_reaches_the_model_without_the_tools_plugin():
    def register(register):
        register(tool_from_function(shout, requires_approval=False, always_offered=True))

    plugin = make_plugin("loud", register_tools=register)
    with PluginHarness(plugins=[plugin], replies=["No tools needed."]) as harness:
        assert "tools" not in harness.app.plugins.records
        reply = harness.send("hi")
    assert "shout(text: string (What to say.)): Say it louder." in reply.system  # described to the model
    assert ("loud", "tool") in [(e.plugin, e.kind) for e in reply.trace]


def test_a_tool_the_user_picks_is_not_offered_unasked():
    plugin = make_plugin("quiet", register_tools=lambda register: register(tool_from_function(shout)))
    with PluginHarness(plugins=[plugin], replies=["ok"]) as harness:
        assert "shout" in harness.tools()
        reply = harness.send("hi")
    assert "shout" not in reply.prompt and "tool" not in [e.kind for e in reply.trace]


def test_complete_asks_the_model_and_can_be_stopped():
    plugin = make_plugin("asker")
    with PluginHarness(plugins=[plugin], replies=["one two three four", "five six seven"]) as harness:
        context = harness.context()
        streamed = []
        result = context.complete([ChatMessage("user", "count")], GenerationOptions(max_tokens=8),
                                  on_token=streamed.append)
        assert result.text == "one two three four" and "".join(streamed) == result.text
        assert harness.engine.history[-1].messages[0].content == "count"
        stop = threading.Event()
        stop.set()
        assert context.complete([ChatMessage("user", "again")], stop=stop).finish_reason == "cancelled"
        # Given up before it ran: the model was never asked, and the next call gets the next reply.
        assert context.complete([ChatMessage("user", "again")]).text == "five six seven"
        with pytest.raises(EngineError, match="no reply queued"):
            context.complete([ChatMessage("user", "more")])


def test_complete_without_a_model_says_so():
    class Unloaded(FakeEngine):
        @property
        def loaded(self):
            return False

    with PluginHarness(plugins=[make_plugin("asker")]) as harness:
        context = harness.context()
        context._engine = Unloaded()
        with pytest.raises(EngineError, match="No model is loaded"):
            context.complete([ChatMessage("user", "hi")])


def test_a_backend_that_lacks_part_of_the_interface_is_refused_by_name(paths):
    from desktop_app.context import build_context
    from desktop_app.plugins import PluginHost

    class Half:
        loaded = True

    host = PluginHost(default_plugins=(), entry_points=lambda: [])
    host.register(make_plugin("halfway", register_backends=lambda register: register("half", lambda s: Half())),
                  name="halfway")
    from desktop_app.core.settings import Settings

    settings = Settings.load(paths.ensure().settings_file)
    settings.set("model.backend", "half")
    context = build_context(paths, host=host, settings=settings)
    try:
        assert type(context.engine.active).__name__ == "Engine"
        warning = next(w for w in context.warnings if "half" in w)
        assert "lacks" in warning and "stream_chat" in warning and "desktop_app.api.Backend" in warning
    finally:
        context.close()


def test_the_harness_refuses_a_broken_plugin_with_its_error():
    with pytest.raises(ValueError, match="unknown hook"):
        PluginHarness(plugins=[make_plugin("typo", prepare_trun=lambda turn: None)])
    with pytest.raises(ValueError, match="nope"):
        PluginHarness(plugins=[make_plugin("crash", app_started=lambda context: 1 / 0 if context else None,
                                           register_settings=lambda register: (_ for _ in ()).throw(
                                               RuntimeError("nope")))])


def test_the_harness_reports_the_exact_prompt_and_a_failed_turn():
    plugin = make_plugin("french", prepare_turn=lambda turn: turn.add_system("Always answer in French."))
    with PluginHarness(plugins=[plugin], replies=["Bonjour", RuntimeError("the model broke")],
                       settings={"chat.system_prompt": "Be brief."}) as harness:
        reply = harness.send("Hello")
        assert reply.system == "Be brief.\n\nAlways answer in French."
        assert reply.prompt.startswith("<|im_start|>system\nBe brief.\n\nAlways answer in French.<|im_end|>")
        assert [(e.plugin, e.kind) for e in reply.trace] == [("core", "system"), ("french", "system")]
        failed = harness.send("Again")
        assert failed.error and "the model broke" in failed.error
        assert harness.conversation_id == reply.conversation_id  # one conversation goes on


def test_plugin_commands_get_the_plugins_context(paths, capsys, monkeypatch):
    import sys

    from desktop_app import cli
    from desktop_app.core.settings import Settings
    from desktop_app.plugins import PluginHost

    def register(subparsers):
        subparsers.add_parser("whoami").set_defaults(
            handler=lambda args, context: print(type(context).__name__, context.name))

    monkeypatch.setitem(sys.modules, "ident", make_plugin("ident", register_commands=register))
    host = PluginHost(default_plugins=("ident",), entry_points=lambda: []).load_all()
    args = cli.build_parser(host).parse_args(["whoami"])
    assert args.handler_plugin == "ident"
    assert cli.build_parser(host).parse_args(["models", "list"]).handler_plugin is None  # Parley's own
    settings = Settings.load(paths.ensure().settings_file)
    assert cli._run(args.handler, args, paths, host, settings) == 0
    assert capsys.readouterr().out.split() == ["PluginContext", "ident"]


def test_complete_with_tools_hands_the_calls_back_and_reads_their_results():
    tool = tool_from_function(shout)
    call = '{"tool": "shout", "arguments": {"text": "hi"}}'
    with PluginHarness(plugins=[make_plugin("api")], replies=[call, call, "It says HI."]) as harness:
        context = harness.context()
        streamed = []
        first = context.complete([ChatMessage("user", "Shout hi")], tools=[tool], on_token=streamed.append)
        assert [(c.name, c.arguments) for c in first.tool_calls] == [("shout", {"text": "hi"})]
        again = context.complete([ChatMessage("user", "Shout hi")], tools=[tool])
        assert again.tool_calls[0].id != first.tool_calls[0].id  # unique: clients index calls by id
        assert first.text == "" and streamed == []  # the call is not shown as text
        asked = harness.engine.history[-1]
        assert "shout(text: string (What to say.))" in asked.messages[0].content
        # What a caller counts before queuing is exactly what the model got, tools included.
        assert context.prompt_for([ChatMessage("user", "Shout hi")], tools=[tool]) == asked.prompt
        assert "shout" not in context.prompt_for([ChatMessage("user", "Shout hi")])
        assert asked.options.grammar  # calls are held to the tools' schemas
        second = context.complete([
            ChatMessage("user", "Shout hi"),
            ChatMessage("assistant", "", tool_calls=[{"id": "call_1", "type": "function",
                                                      "function": {"name": "shout", "arguments": '{"text": "hi"}'}}]),
            ChatMessage("tool", "HI", name="shout", tool_call_id="call_1"),
        ], tools=[tool])
        assert second.text == "It says HI." and second.tool_calls == []
        sent = harness.engine.history[-1].messages
        assert sent[-2].content == '{"tool": "shout", "arguments": {"text": "hi"}}'
        assert sent[-1].role == "user" and sent[-1].content.startswith("Tool result from shout: HI")
        with pytest.raises(ValueError, match="must follow"):
            context.complete([ChatMessage("tool", "HI", tool_call_id="x")], tools=[tool])
        with pytest.raises(ValueError, match="tool_choice"):
            context.complete([ChatMessage("user", "hi")], tools=[tool], tool_choice="sometimes")


def test_run_turn_answers_with_the_whole_pipeline_and_keeps_nothing_unless_asked():
    with PluginHarness(plugins=[make_plugin("api")], builtins=["prompt_templates"],
                       replies=["Hallo!", "Bonjour!"]) as harness:
        context = harness.context()
        setup = {"plugins": {"prompt_templates": {"template": "Translator", "variables": {"language": "German"}}}}
        run = context.run_turn([ChatMessage("user", "Good morning"), ChatMessage("assistant", "Morning!"),
                                ChatMessage("user", "Hello")], setup=setup)
        assert run.text == "Hallo!" and run.finish_reason == "stop" and run.conversation_id is None
        asked = harness.engine.history[-1].messages
        assert asked[0].content.startswith("You are a professional translator.")  # the template's system prompt
        assert [m.content for m in asked[1:3]] == ["Good morning", "Morning!"]
        assert "German" in asked[3].content and "Hello" in asked[3].content  # the template wraps the message
        assert ("prompt_templates", "system_replaced") in [(e.plugin, e.kind) for e in run.trace]
        assert context.conversations.list() == []  # nothing of it stays
        kept = context.run_turn([ChatMessage("system", "Be French."), ChatMessage("user", "Hi")], store=True)
        assert kept.text == "Bonjour!" and kept.conversation_id is not None
        assert context.conversations.get(kept.conversation_id).system_prompt == "Be French."
        assert [m.content for m in context.conversations.messages(kept.conversation_id)] == ["Hi", "Bonjour!"]
        with pytest.raises(ValueError, match="last message must be the user's"):
            context.run_turn([ChatMessage("assistant", "Hi")])


def test_run_turn_stores_only_a_whole_exchange():
    with PluginHarness(plugins=[make_plugin("api")], replies=[RuntimeError("out of memory"), "one two three"]) as harness:
        context = harness.context()
        failed = context.run_turn([ChatMessage("user", "Hi")], store=True)
        assert failed.error == "out of memory" and failed.conversation_id is None
        assert context.conversations.list() == []  # no question left without its answer
        harness.engine.stop_after = 1
        stopped = context.run_turn([ChatMessage("user", "Hi")], store=True)
        assert stopped.finish_reason == "cancelled" and stopped.conversation_id is None
        assert context.conversations.list() == []  # nor a half-written answer


def test_run_turn_refuses_a_tool_that_would_ask_the_user():
    asking = tool_from_function(shout, requires_approval=True, always_offered=True)
    plugin = make_plugin("asker", register_tools=lambda register: register(asking))
    with PluginHarness(plugins=[plugin], replies=['{"tool": "shout", "arguments": {"text": "hi"}}',
                                                   "I could not."]) as harness:
        run = harness.context().run_turn([ChatMessage("user", "Shout hi")])
    calls = [e.content for e in run.trace if e.kind == "tool_call"]
    assert calls and calls[0]["decision"] == "denied" and "no one can be asked" in calls[0]["error"]
    assert run.text == "I could not."


def test_the_library_lists_the_models_and_the_loaded_one_first():
    with PluginHarness(plugins=[make_plugin("api")]) as harness:
        library = harness.context().library()
    assert library[0]["loaded"] and library[0]["path"].endswith("scripted-model.gguf")
    from desktop_app.core.models import DEFAULT_MODEL_NAME

    assert [e["loaded"] for e in library].count(True) == 1
    assert any(e["name"] == DEFAULT_MODEL_NAME and not e["loaded"] for e in library)


def test_a_stop_that_comes_too_late_is_taken_back_so_the_next_answer_is_whole():
    with PluginHarness(plugins=[make_plugin("asker")], replies=["one two three", "four five six"]) as harness:
        context = harness.context()
        stop = threading.Event()
        words = []

        def on_token(text):
            words.append(text)
            if len(words) == 3:
                stop.set()  # after the last word: the answer is already whole

        assert context.complete([ChatMessage("user", "a")], on_token=on_token, stop=stop).text == "one two three"
        assert not harness.engine.cancel_event.is_set()
        assert context.complete([ChatMessage("user", "b")]).finish_reason == "stop"


def test_a_model_call_from_a_turn_or_its_tools_runs_at_once_instead_of_waiting_for_itself():
    from desktop_app.core.plugin_context import EngineRunnerSlot, mark_engine_thread
    from desktop_app.core.tools import run_tool

    slot = EngineRunnerSlot()
    slot.runner = lambda fn: (_ for _ in ()).throw(AssertionError("queued behind itself"))
    seen = []

    def engine_thread():
        mark_engine_thread()
        tool = tool_from_function(lambda text: slot.run(lambda: text.upper()), name="inner",
                                  description="calls the model")
        seen.append(run_tool(tool, {"text": "hi"}))

    worker = threading.Thread(target=engine_thread)
    worker.start()
    worker.join()
    assert seen[0][:2] == ("HI", "")


def test_collect_refuses_a_hook_that_is_not_a_register_hook():
    with PluginHarness(plugins=[make_plugin("api", prepare_turn=lambda turn: None)]) as harness:
        with pytest.raises(ValueError, match="not a register_"):
            harness.context().collect("prepare_turn")
        assert harness.app.plugins.records["api"].status == "enabled"


def test_the_default_template_setting_applies_as_soon_as_it_changes():
    with PluginHarness(builtins=["prompt_templates"], replies=["ok"]) as harness:
        harness.app.settings.set("plugins.prompt_templates.default_template", "Translator")
        reply = harness.send("Hello")
    assert reply.system.startswith("You are a professional translator.")


def test_a_command_of_a_plugin_switched_off_does_not_run(paths, capsys, monkeypatch):
    import sys

    from desktop_app import cli
    from desktop_app.core.settings import Settings
    from desktop_app.plugins import PluginHost

    ran = []

    def register(subparsers):
        subparsers.add_parser("boom").set_defaults(handler=lambda args, context: ran.append(1))

    monkeypatch.setitem(sys.modules, "flaky", make_plugin("flaky", register_commands=register,
                                                          app_started=lambda context: 1 / 0))
    host = PluginHost(default_plugins=("flaky",), entry_points=lambda: []).load_all()
    args = cli.build_parser(host).parse_args(["boom"])
    assert cli._run(args.handler, args, paths.ensure(), host, Settings.load(paths.settings_file)) == 1
    assert not ran and "switched off" in capsys.readouterr().err


def test_a_fixed_setup_uses_only_what_it_keeps_not_the_panels_pick():
    tool = tool_from_function(shout)
    with PluginHarness(builtins=["tools"], plugins=[make_plugin("loud", register_tools=lambda register: register(tool))],
                       replies=["plain answer", "with tools"]) as harness:
        from desktop_app_tools import state as tools

        tools.choice.selection = {"tools": ["shout"]}  # what the Tools panel has ticked right now
        run = harness.context("loud").run_turn([ChatMessage("system", "Be short."), ChatMessage("user", "Hi")],
                                               setup={"system_prompt": "You are the handbook assistant."})
        assert "tool" not in [e.kind for e in run.trace]
        assert harness.engine.history[-1].messages[0].content == "You are the handbook assistant.\n\nBe short."
        kept = harness.context("loud").run_turn([ChatMessage("user", "Hi")],
                                                setup={"plugins": {"tools": {"tools": ["shout"]}}})
        assert "tool" in [e.kind for e in kept.trace]  # what the setup keeps does apply
        stop = threading.Event()
        stop.set()
        assert harness.context("loud").run_turn([ChatMessage("user", "Hi")], stop=stop).finish_reason == "cancelled"
