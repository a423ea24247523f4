"""A plugin author's ten minutes: `parley plugins new`, its own tests, `parley plugins install`,
and the plugin in the window (its panel, its setting, its line in the prompt)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import sysconfig

from PySide6.QtWidgets import QDockWidget

from desktop_app.cli import main
from tests.unit.plugin_wheels import throwaway_environment


def test_a_new_plugin_passes_its_tests_installs_and_shows_up_in_the_window(qtbot, make_window, tmp_path,
                                                                             monkeypatch, capsys):
    assert main(["plugins", "new", "hello", "--folder", str(tmp_path)]) == 0
    folder = tmp_path / "parley-hello"
    assert "parley plugins install" in capsys.readouterr().out

    # Its own generated tests pass, run as its author would (a fresh Python, in its folder).
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=folder,
                         env={**os.environ, "PYTHONPATH": str(folder)}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "3 passed" in run.stdout, run.stdout + run.stderr

    # Installed with pip, offline, into a throwaway environment that sees Parley's packages.
    venv = throwaway_environment(tmp_path / "venv")
    monkeypatch.setattr(sys, "executable", str(venv))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["plugins", "install", str(folder), "--trust", "--no-index"]) == 0
    out = capsys.readouterr().out
    assert "hello_count_words" in out and "Hello" in out and "Installed and enabled hello" in out

    # The next start finds it through its entry point, like a real start-up.
    site = subprocess.run([str(venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert site != sysconfig.get_paths()["purelib"]
    monkeypatch.syspath_prepend(site)
    monkeypatch.setenv("PARLEY_LOAD_PLUGINS", "hello")
    window = make_window(settings={"generation.max_tokens": 4})
    record = window.context.plugins.records["hello"]
    assert record.status == "enabled" and record.source == "package parley-hello" and record.version == "0.1.0"
    docks = {d.windowTitle(): d for d in window.findChildren(QDockWidget)}
    panel = docks["Hello"].widget()
    panel.edit.setText("-- sent from my desk")
    panel.edit.editingFinished.emit()
    assert window.context.settings.get("plugins.hello.signature") == "-- sent from my desk"
    assert "hello_count_words" in window.context.tools().tools

    window.composer.edit.setPlainText("Hi")
    window.send(window.composer.edit.toPlainText())
    qtbot.waitUntil(lambda: window.generating_conversation is None and window.current_conversation is not None,
                    timeout=120_000)
    answer = window.context.store.history(window.current_conversation)[-1]
    trace = window.context.store.get_trace(answer.id)
    assert "End every answer with this line: -- sent from my desk" in trace["prompt"]
    assert ("hello", "system") in [(e["plugin"], e["kind"]) for e in trace["entries"]]
