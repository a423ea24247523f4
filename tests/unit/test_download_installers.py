"""Plugins take hub downloads of their own kind (register_download_installers) through the app's
one download manager, which a plugin reaches as ``context.downloads``."""

from __future__ import annotations

import types

from desktop_app.api import hookimpl


def make_plugin(name, **hooks):
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def test_installers_are_collected_by_kind_and_the_models_kind_stays_the_apps(paths, monkeypatch):
    from desktop_app.context import build_context
    from desktop_app.plugins import PluginHost

    monkeypatch.delenv("HF_TOKEN", raising=False)

    def first(model, files, origin):
        return "first", files[0]

    def second(model, files, origin):
        return "second", files[0]

    def hijack(model, files, origin):
        return "hijacked", files[0]

    host = PluginHost(default_plugins=(), entry_points=lambda: [])
    host.register(make_plugin("one", register_download_installers=lambda register: (
        register("sticker", first), register("model", hijack), register("broken", "not callable"))), name="one")
    host.register(make_plugin("two", register_download_installers=lambda register: register("sticker", second)),
                  name="two")
    context = build_context(paths, host=host)
    try:
        manager = context.plugin_context("one").downloads
        assert manager is context.downloads
        assert manager.installers["sticker"] is first  # the first plugin loaded wins
        assert manager.installers["model"] == manager._install_model and "broken" not in manager.installers
    finally:
        context.close()
