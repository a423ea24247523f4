import importlib.metadata
import sys
import textwrap
import types

import pytest

from desktop_app.api import Turn, hookimpl
from desktop_app.plugins import PluginHost


def make_plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def test_builtin_plugins_load_from_import_strings(monkeypatch):
    module = make_plugin("parley_test_builtin", prepare_turn=lambda turn: turn.add_system("built-in"))
    monkeypatch.setitem(sys.modules, "parley_test_builtin", module)
    host = PluginHost(default_plugins=["parley_test_builtin"]).load_all()
    assert host.records["parley_test_builtin"].source == "built-in"
    turn = Turn(None, "hi")
    host.hook.prepare_turn(turn=turn)
    assert turn.system_prompt == "built-in"
    assert turn.trace[0].plugin == "parley_test_builtin"


def entry_point(name, value):
    return importlib.metadata.EntryPoint(name=name, value=value, group="desktop_app")


def test_entry_points_respect_the_allowlist(monkeypatch):
    monkeypatch.setitem(sys.modules, "ep_one", make_plugin("ep_one"))
    monkeypatch.setitem(sys.modules, "ep_two", make_plugin("ep_two"))
    eps = [entry_point("one", "ep_one"), entry_point("two", "ep_two")]
    monkeypatch.setenv("PARLEY_LOAD_PLUGINS", "two")
    host = PluginHost(default_plugins=(), entry_points=lambda: eps).load_all()
    assert list(host.records) == ["two"]
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    host = PluginHost(default_plugins=(), entry_points=lambda: eps).load_all()
    assert list(host.records) == ["one", "two"]
    assert host.records["one"].source.startswith("package")


def test_the_test_suite_blocks_discovery_by_default(tmp_path):
    (tmp_path / "stray.py").write_text("raise SystemExit('must not be imported')")
    host = PluginHost(default_plugins=(), plugins_dir=tmp_path,
                      entry_points=lambda: [entry_point("x", "nowhere")]).load_all()
    assert host.records == {}


def test_plugins_folder_loads_files_and_packages(tmp_path, monkeypatch):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (tmp_path / "shout.py").write_text(textwrap.dedent("""
        from desktop_app.api import hookimpl
        __version__ = "1.2"
        @hookimpl
        def prepare_turn(turn):
            turn.set_user_message(turn.user_message.upper())
    """))
    pkg = tmp_path / "polite"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .impl import prepare_turn\n")
    (pkg / "impl.py").write_text(textwrap.dedent("""
        from desktop_app.api import hookimpl
        @hookimpl
        def prepare_turn(turn):
            turn.add_system("Be polite.")
    """))
    (tmp_path / "_private.py").write_text("raise RuntimeError")
    (tmp_path / "notes.txt").write_text("ignored")
    host = PluginHost(default_plugins=(), plugins_dir=tmp_path).load_all()
    assert sorted(host.records) == ["polite", "shout"]
    assert host.records["shout"].version == "1.2"
    assert host.records["shout"].source == "plugins folder"
    turn = Turn(None, "hello")
    host.hook.prepare_turn(turn=turn)
    assert turn.user_message == "HELLO" and turn.system_prompt == "Be polite."
    assert {e.plugin for e in turn.trace} == {"shout", "polite"}


def test_a_plugin_that_fails_to_import_is_recorded_and_the_rest_load(tmp_path, monkeypatch):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (tmp_path / "broken.py").write_text("import does_not_exist_anywhere\n")
    (tmp_path / "fine.py").write_text("x = 1\n")
    host = PluginHost(plugins_dir=tmp_path).load_all()
    assert host.records["broken"].status == "failed"
    assert "does_not_exist_anywhere" in host.records["broken"].error
    assert "broken.py, line 1" in host.records["broken"].error
    assert host.records["fine"].status == "enabled"


def test_a_plugin_that_raises_in_a_hook_is_switched_off_and_others_still_run():
    host = PluginHost()

    def explode(turn):
        raise ZeroDivisionError("oops")

    host.register(make_plugin("bad", prepare_turn=explode))
    host.register(make_plugin("good", prepare_turn=lambda turn: turn.add_system("ok")))
    turn = Turn(None, "hi")
    host.hook.prepare_turn(turn=turn)
    assert turn.system_prompt == "ok"
    record = host.records["bad"]
    assert record.status == "failed" and "ZeroDivisionError: oops" in record.error
    assert [r.name for r in host.failed()] == ["bad"]
    # It stays off for the session: the next turn does not call it at all.
    host.hook.prepare_turn(turn=Turn(None, "again"))
    assert host.pm.get_plugin("bad") is None


def test_firstresult_hooks_skip_a_failing_plugin():
    host = PluginHost()

    def bad(call):
        raise ValueError

    host.register(make_plugin("approve", approve_tool_call=lambda call: True))
    host.register(make_plugin("bad", approve_tool_call=bad))
    assert host.hook.approve_tool_call(call={"tool": "x"}) is True


def test_a_historic_hook_that_raises_fails_only_that_plugin():
    host = PluginHost()
    host.hook.app_started.call_historic(kwargs={"context": object()})

    def boom(context):
        raise RuntimeError("start failed")

    assert host.register(make_plugin("late", app_started=boom)) is None
    assert host.records["late"].status == "failed"


def test_unknown_hooks_are_refused():
    host = PluginHost()
    assert host.register(make_plugin("typo", prepare_trun=lambda turn: None)) is None
    assert "prepare_trun" in host.records["typo"].error


def test_disabled_plugins_are_not_imported_but_listed(tmp_path, monkeypatch):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (tmp_path / "off.py").write_text("raise SystemExit('imported')\n")
    host = PluginHost(plugins_dir=tmp_path, disabled=["off"]).load_all()
    assert host.records["off"].status == "disabled"


def test_disable_takes_effect_at_once(monkeypatch):
    host = PluginHost()
    host.register(make_plugin("sys", prepare_turn=lambda turn: turn.add_system("x")))
    host.set_enabled("sys", False)
    turn = Turn(None, "hi")
    host.hook.prepare_turn(turn=turn)
    assert turn.system_prompt == "" and host.disabled == {"sys"}
    with pytest.raises(KeyError, match="no plugin"):
        host.set_enabled("ghost", True)


def test_the_built_in_plugins_load_by_default_and_are_named_without_prefix():
    host = PluginHost().load_all()
    assert host.records["prompt_templates"].source == "built-in"
    assert host.records["prompt_templates"].status == "enabled"


def _host_with(*plugins):
    host = PluginHost(default_plugins=())
    for i, plugin in enumerate(plugins):
        host.register(plugin, name=f"p{i}")
    return host


def test_a_plugin_backend_is_used_when_the_settings_pick_it(paths):
    from desktop_app.context import build_context
    from desktop_app.core.chat import TurnFinished
    from desktop_app.core.engine import Engine
    from desktop_app.core.settings import Settings
    from desktop_app.testing import FakeEngine

    made = []

    def factory(settings):
        made.append(settings)
        return FakeEngine().enqueue("Hello from the other backend.")

    backend = make_plugin("scripted", register_backends=lambda register: register("scripted", factory))
    settings = Settings.load(paths.settings_file)
    assert build_context(paths, host=_host_with(backend), settings=settings).engine.active.__class__ is Engine
    settings.set("model.backend", "scripted")
    context = build_context(paths, host=_host_with(backend), settings=settings)
    try:
        assert isinstance(context.engine.active, FakeEngine) and made == [settings]
        context.load_model()
        conversation = context.store.create_conversation("t")
        outcome = context.chat.send(conversation.id, "Hi")
        assert isinstance(outcome, TurnFinished) and outcome.message.content == "Hello from the other backend."
    finally:
        context.close()


def test_a_missing_or_failing_backend_falls_back_to_llama_cpp_with_a_warning(paths):
    from desktop_app.context import build_context
    from desktop_app.core.engine import Engine
    from desktop_app.core.settings import Settings

    def broken(settings):
        raise RuntimeError("server unreachable")

    settings = Settings.load(paths.settings_file)
    settings.set("model.backend", "nowhere")
    context = build_context(paths, host=_host_with(), settings=settings)
    assert isinstance(context.engine.active, Engine)
    assert "The backend 'nowhere' is not available (backends: llama.cpp)" in context.warnings[-1]
    context.close()
    plugin = make_plugin("remote", register_backends=lambda register: register("remote", broken))
    settings.set("model.backend", "remote")
    context = build_context(paths, host=_host_with(plugin), settings=settings)
    assert isinstance(context.engine.active, Engine)
    assert "failed to start (server unreachable); using llama.cpp" in context.warnings[-1]
    context.close()
