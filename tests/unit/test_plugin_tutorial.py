"""docs/plugins.md cannot rot: its files are written out as the tutorial shows them, and the
tutorial's own tests run against them (in a separate Python, as a plugin author would)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
#: A file's name in bold, a blank line, then its code block; blocks of one file add up in order.
FILE_BLOCK = re.compile(r"^\*\*`([^`]+)`\*\*\n\n```\w*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def tutorial_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for name, code in FILE_BLOCK.findall(TUTORIAL.read_text(encoding="utf-8")):
        files[name] = files[name] + "\n\n" + code if name in files else code
    return files


def test_the_tutorial_shows_a_whole_plugin():
    assert set(tutorial_files()) == {"parley_glossary/__init__.py", "tests/test_glossary.py", "pyproject.toml"}


def test_the_tutorial_plugin_passes_its_own_tests(tmp_path):
    for name, code in tutorial_files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code, encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin",
                                            "HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout


def test_the_tutorial_plugin_loads_in_parley(tmp_path, monkeypatch):
    """Dropped into a host like any installed plugin: its hooks are all known ones."""
    from desktop_app.plugins import PluginHost

    monkeypatch.delenv("PARLEY_LOAD_PLUGINS", raising=False)
    (tmp_path / "parley_glossary").mkdir()
    (tmp_path / "parley_glossary" / "__init__.py").write_text(tutorial_files()["parley_glossary/__init__.py"])
    host = PluginHost(default_plugins=(), plugins_dir=tmp_path, entry_points=lambda: [])
    host.load_all()
    assert host.records["parley_glossary"].status == "enabled", host.records["parley_glossary"].error
