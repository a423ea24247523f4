"""``parley plugins new NAME``: a ready plugin package to start from.

It writes a pip-installable project: a ``pyproject.toml`` with the entry point Parley finds
plugins by, a module with a hook that adds to the prompt, a setting, a tool and a side
panel, a test that runs the plugin in :class:`desktop_app.testing.PluginHarness`, and a
README saying how to try, test and install it.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

__all__ = ["ScaffoldError", "check_plugin_name", "write_plugin_package"]

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")


class ScaffoldError(ValueError):
    """The plugin cannot be written there (a bad name, or the folder exists)."""


def check_plugin_name(name: str) -> str:
    """The plugin name, checked: lowercase letters, digits and ``_``, starting with a letter."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise ScaffoldError(
            f"{name!r} cannot be a plugin name: use lowercase letters, digits and _ (at most 40), "
            "starting with a letter, e.g. my_notes.")
    return name


def write_plugin_package(name: str, parent: Path) -> Path:
    """Write the package for plugin ``name`` into ``parent / "parley-<name>"``; returns that folder.

    Nothing is overwritten: an existing folder is refused with a message.
    """
    check_plugin_name(name)
    folder = Path(parent) / f"parley-{name.replace('_', '-')}"
    if folder.exists():
        raise ScaffoldError(f"{folder} already exists; pick another name or folder, or remove it first.")
    values = {
        "name": name,
        "package": f"parley_{name}",
        "dist": f"parley-{name.replace('_', '-')}",
        "title": name.replace("_", " ").title(),
    }
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"{values['package']}/__init__.py": _PLUGIN,
        f"{values['package']}/panel.py": _PANEL,
        f"tests/test_{name}.py": _TEST,
    }
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values), encoding="utf-8")
    return folder


_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$title: a Parley plugin."
readme = "README.md"
requires-python = ">=3.10"
# Parley itself provides desktop_app (and PySide6 for the panel); list only what you add.
dependencies = []

# Parley finds plugins by this entry point group; the name on the left is the plugin's name.
[project.entry-points.desktop_app]
$name = "$package"

[tool.setuptools]
packages = ["$package"]
'''

_PLUGIN = '''\
"""$title: a Parley plugin.

Parley calls the functions marked ``@hookimpl``; each one's name says when. The plugin
imports only ``desktop_app.api``, and everything else of the app comes through its
``PluginContext`` (given to ``app_started``).
"""

from __future__ import annotations

from desktop_app.api import Option, PluginContext, Turn, hookimpl, tool_from_function

__version__ = "0.1.0"

#: This plugin's context: its settings, folders, the conversations and the model.
context: PluginContext | None = None


@hookimpl
def app_started(context: PluginContext) -> None:
    """Keep the plugin's context for the other hooks."""
    globals()["context"] = context


@hookimpl
def register_settings(register) -> None:
    """The plugin's settings; the user changes them in Settings → Plugins."""
    register([
        Option("signature", str, "", "A line every answer should end with; empty: none."),
    ])


@hookimpl
def prepare_turn(turn: Turn) -> None:
    """Before each answer: ask the model to sign it (the trace shows this plugin added it)."""
    signature = context.settings.get("signature") if context is not None else ""
    if signature:
        turn.add_system(f"End every answer with this line: {signature}")


def count_words(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text whose words to count.
    """
    return len(text.split())


@hookimpl
def register_tools(register) -> None:
    """A tool the model may call once the user switches it on in the Tools panel."""
    register(tool_from_function(count_words, name="${name}_count_words", requires_approval=False))


@hookimpl
def register_panels(register) -> None:
    """A side panel, opened from the View menu. Qt is imported only when the window is built."""

    def make(context, parent):
        from .panel import SignaturePanel  # relative: works installed with pip or copied into the plugins folder

        return SignaturePanel(context, parent)

    register("$title", make, area="right")
'''

_PANEL = '''\
"""$title's side panel: shows and changes the plugin's signature setting."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QLineEdit, QVBoxLayout, QWidget


class SignaturePanel(QWidget):
    """A line edit for the signature; saved to the settings as the user finishes typing."""

    def __init__(self, context, parent=None):
        super().__init__(parent)
        self.context = context
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Every answer ends with:", self))
        self.edit = QLineEdit(context.settings.get("signature"), self)
        self.edit.setPlaceholderText("nothing")
        self.edit.editingFinished.connect(self.save)
        layout.addWidget(self.edit)
        layout.addStretch(1)

    def save(self) -> None:
        """Keep the typed signature for the next answers."""
        self.context.settings.set("signature", self.edit.text().strip())
        self.context.settings.save()
'''

_TEST = '''\
"""Tests of the $name plugin: a real Parley around it, with a scripted model (no model file)."""

from desktop_app.testing import PluginHarness

import $package as plugin


def test_the_signature_reaches_the_prompt():
    with PluginHarness(plugins={"$name": plugin}, replies=["Hello!"],
                       settings={"signature": "-- sent from Parley"}) as harness:
        reply = harness.send("Hi there")
    assert reply.answer == "Hello!"
    assert reply.system.endswith("End every answer with this line: -- sent from Parley")
    assert ("$name", "system") in [(entry.plugin, entry.kind) for entry in reply.trace]


def test_without_a_signature_the_prompt_is_left_alone():
    with PluginHarness(plugins={"$name": plugin}, replies=["Hello!"]) as harness:
        reply = harness.send("Hi there")
    assert "End every answer" not in reply.prompt
    assert "$name" not in [entry.plugin for entry in reply.trace]


def test_the_tool_counts_words():
    with PluginHarness(plugins={"$name": plugin}) as harness:
        tool = harness.tools()["${name}_count_words"]
    assert tool.function(text="one two  three") == 3
'''

_README = '''\
# $title

A Parley plugin, made with `parley plugins new $name`.

- `$package/__init__.py`: the hooks. `prepare_turn` asks the model to sign its answers with
  the `signature` setting; `register_tools` adds a word-count tool; `register_panels` adds
  the "$title" side panel (`$package/panel.py`).
- `tests/test_$name.py`: tests that run the plugin in a real Parley with a scripted model.

Try it, test it, install it (from this folder, with Parley's own Python):

```sh
python -m pytest tests          # the plugin's tests
parley plugins install .        # install it into Parley; it asks you to trust the code
parley plugins list             # $name is there; open the window: View → $title
```

Parley's `docs/plugins.md` describes every hook and the plugin context.
'''
