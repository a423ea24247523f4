"""Shared fixtures: every test runs with its own config and data folders.

platformdirs follows the XDG variables on Linux, so pointing them at a temporary folder
keeps the user's real settings and conversations out of reach. Plugin discovery from
installed packages and the plugins folder is blocked unless a test opts in.
"""

from __future__ import annotations

import pytest

# Before any test moves HOME and XDG_CACHE_HOME: it remembers them, so that llama.cpp's programs
# are found in (and built once into) the machine's build cache, not a test's temporary one.
import tests.native_tools  # noqa: F401,E402


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Point every Parley folder at ``tmp_path`` and block external plugin discovery."""
    home = tmp_path / "home"
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PARLEY_HOME", raising=False)
    monkeypatch.setenv("PARLEY_LOAD_PLUGINS", "")
    return home


@pytest.fixture
def paths(isolated_dirs):
    """The app's folders, created, inside the temporary home."""
    from desktop_app.core.paths import AppPaths

    return AppPaths.default().ensure()


@pytest.fixture
def open_window(qtbot, paths):
    """Open Parley's real window, shown, once its model has loaded; closed after the test.

    ``open_window(settings)`` builds a context on the test's folders with these settings and
    closes it afterwards too; ``open_window(context=ctx)`` uses the caller's context.
    """
    opened: list[tuple] = []

    def open_(settings: dict | None = None, context=None):
        from desktop_app.context import build_context
        from desktop_app.ui.app import create_window

        owned = context is None
        context = build_context(paths) if owned else context
        for key, value in (settings or {}).items():
            context.settings.set(key, value)
        window = create_window(context)
        opened.append((window, context if owned else None))
        qtbot.addWidget(window)
        window.show()
        qtbot.waitUntil(lambda: context.engine.loaded and not window.model_loading, timeout=60_000)
        return window

    yield open_
    for window, context in reversed(opened):
        window.close()
        if context is not None:
            context.close()
