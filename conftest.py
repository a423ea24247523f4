"""Shared fixtures: every test runs with its own config and data folders.

platformdirs follows the XDG variables on Linux, so pointing them at a temporary folder
keeps the user's real settings and conversations out of reach. Plugin discovery from
installed packages and the plugins folder is blocked unless a test opts in.
"""

from __future__ import annotations

import pytest


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
