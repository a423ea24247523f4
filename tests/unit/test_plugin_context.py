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
        assert type(context.engine).__name__ == "Engine"
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
