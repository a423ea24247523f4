"""Installing, removing and trusting plugins (desktop_app.plugin_install and `parley plugins`).

pip runs only offline (``--no-index --find-links`` a folder of wheels the tests write) and
only in a throwaway environment that sees the shared .venv's packages but installs into
its own folder, so the shared environment is never changed.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from desktop_app.cli import main
from desktop_app.plugin_inspect import InstallCancelled, run_process
from desktop_app.plugin_install import (
    CannotRemove,
    NotAPlugin,
    PipFailed,
    PluginClash,
    PluginConflict,
    PluginInstaller,
    TrustRequired,
)
from desktop_app.plugins import PluginHost
from tests.unit.plugin_wheels import HELLO, make_wheel, throwaway_environment

HELLO_FILE = HELLO + '''

@hookimpl
def prepare_turn(turn):
    turn.add_system("Say hello.")
'''


@pytest.fixture(autouse=True)
def offline_pip(monkeypatch):
    """pip sees no configuration and no index: only the folders a test names."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A throwaway environment for pip installs (its python)."""
    return throwaway_environment(tmp_path_factory.mktemp("env") / "venv")


def write_plugin(folder: Path, name: str = "hello", text: str = HELLO_FILE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def pip_installer(paths, venv, wheels: Path) -> PluginInstaller:
    return PluginInstaller(paths.plugins_dir, python=str(venv), pip_args=["--no-index", "--find-links", str(wheels)])


def venv_plugins(venv, names: str) -> dict:
    """What a plugin host in the throwaway environment loads (a real start-up, in a process)."""
    code = ("import json; from desktop_app.plugins import PluginHost\n"
            "host = PluginHost(default_plugins=()).load_all()\n"
            "print(json.dumps({n: [r.source, r.status, r.version] for n, r in host.records.items()}))\n")
    env = {**os.environ, "PARLEY_LOAD_PLUGINS": names}
    out = subprocess.run([str(venv), "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def venv_has(venv, dist: str) -> bool:
    code = f"import importlib.metadata as m\ntry:\n    m.version({dist!r}); print('yes')\nexcept m.PackageNotFoundError:\n    print('no')"
    return subprocess.run([str(venv), "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "yes"


class Terminal(io.StringIO):
    """Standard input as a terminal that answers ``text``."""

    def isatty(self) -> bool:
        return True


# -- files and folders ---------------------------------------------------------------------------
def test_a_file_is_looked_at_in_another_process_then_copied(tmp_path, paths, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # An earlier test in this process may have loaded a plugin of that name; this one must not.
    monkeypatch.delitem(sys.modules, "parley_user_plugins.hello", raising=False)
    source = write_plugin(tmp_path / "src", text=HELLO_FILE + "\nopen('imported-here', 'w').close()\n")
    installer = PluginInstaller(paths.plugins_dir)
    steps = []
    candidate = installer.prepare(source, progress=lambda step, line: steps.append(step))
    try:
        [plugin] = candidate.plugins
        assert (plugin.name, plugin.description) == ("hello", "Says hello.")
        assert plugin.hooks == ["prepare_turn", "register_panels", "register_tools"]
        assert plugin.tools == ["greet — Greet someone by name."]
        assert plugin.panels == ["Hello panel"]
        text = candidate.summary_text()
        assert f"the file {source}" in text and "full rights" in text
        assert steps and not (paths.plugins_dir / "hello.py").exists()
        # The import ran elsewhere: not in this process, and not in this folder.
        assert "parley_user_plugins.hello" not in sys.modules and not Path("imported-here").exists()
        assert installer.install(candidate, trusted=True) == ["hello"]
    finally:
        candidate.close()
    assert (paths.plugins_dir / "hello.py").read_text() == source.read_text()
    monkeypatch.setenv("PARLEY_LOAD_PLUGINS", "hello")
    host = PluginHost(default_plugins=(), plugins_dir=paths.plugins_dir).load_all()
    assert host.records["hello"].status == "enabled"
    assert "greet" in host.tools().tools


def test_a_package_folder_is_copied_without_its_caches(tmp_path, paths):
    package = tmp_path / "weather"
    package.mkdir()
    (package / "__init__.py").write_text("from .hooks import register_tools\n")
    (package / "hooks.py").write_text(HELLO.replace('"""Says hello."""', '"""Weather."""'))
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "junk.pyc").write_bytes(b"x")
    installer = PluginInstaller(paths.plugins_dir)
    candidate = installer.prepare(str(package))
    assert candidate.kind == "package folder" and candidate.plugins[0].tools[0].startswith("greet")
    installer.install(candidate, trusted=True)
    candidate.close()
    installed = paths.plugins_dir / "weather"
    assert (installed / "hooks.py").is_file() and not (installed / "__pycache__").exists()
    assert not [p for p in paths.plugins_dir.iterdir() if p.name.startswith(".installing")]


def test_install_without_trust_installs_nothing(tmp_path, paths):
    installer = PluginInstaller(paths.plugins_dir)
    candidate = installer.prepare(write_plugin(tmp_path / "src"))
    with pytest.raises(TrustRequired, match="explicit trust"):
        installer.install(candidate, trusted=False)
    candidate.close()
    assert list(paths.plugins_dir.iterdir()) == []


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: tmp / "nothing.py", "does not exist"),
    (lambda tmp: tmp / "nowhere" / "plugin", "does not exist"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "has no __init__.py"),
    (lambda tmp: (tmp / "notes.txt").write_text("hi") and tmp / "notes.txt", "is not a plugin"),
    (lambda tmp: write_plugin(tmp, "plain", "x = 1\n"), "implements no Parley hooks"),
    (lambda tmp: write_plugin(tmp, "broken", "raise RuntimeError('no config')\n"),
     r"failed when Parley tried it: it could not be imported: RuntimeError: no config \(broken.py, line 1\)"),
    (lambda tmp: write_plugin(tmp, "unknown", HELLO + "\n@hookimpl\ndef nonsense():\n    pass\n"),
     "implements unknown hook"),
    (lambda tmp: write_plugin(tmp, "_private"), "starts with “_”"),
    (lambda tmp: "not a requirement!!", "not a file, a folder or a valid pip requirement"),
])
def test_bad_inputs_get_a_message_that_says_what_to_do(tmp_path, paths, make, message):
    with pytest.raises(NotAPlugin, match=message):
        PluginInstaller(paths.plugins_dir).prepare(make(tmp_path))
    assert list(paths.plugins_dir.iterdir()) == []


def test_a_name_already_installed_is_refused(tmp_path, paths):
    write_plugin(paths.plugins_dir)
    installer = PluginInstaller(paths.plugins_dir)
    with pytest.raises(PluginClash, match=r"'hello' is already installed .*parley plugins remove hello"):
        installer.prepare(write_plugin(tmp_path / "src"))
    with pytest.raises(PluginClash, match="name of a built-in plugin"):
        installer.prepare(write_plugin(tmp_path / "src", "tools"))


def test_remove_moves_a_folder_plugin_aside_and_keeps_it(tmp_path, paths):
    installer = PluginInstaller(paths.plugins_dir)
    write_plugin(paths.plugins_dir)
    message = installer.remove("hello")
    assert "moved hello.py to" in message
    [kept] = (paths.plugins_dir / "_removed").iterdir()
    assert kept.read_text() == HELLO_FILE and kept.name.startswith("hello-")
    assert "hello" not in installer.installed()
    # The same name can be installed again, and removed again without losing the first copy.
    write_plugin(paths.plugins_dir)
    installer.remove("hello")
    assert len(list((paths.plugins_dir / "_removed").iterdir())) == 2
    host = PluginHost(default_plugins=(), plugins_dir=paths.plugins_dir).load_all()
    assert host.records == {}


def test_remove_refuses_built_in_and_unknown_plugins(paths):
    installer = PluginInstaller(paths.plugins_dir)
    with pytest.raises(CannotRemove, match="built into Parley .* disable it instead: `parley plugins disable tools`"):
        installer.remove("tools")
    with pytest.raises(CannotRemove, match="no installed plugin called 'ghost'"):
        installer.remove("ghost")


def test_cancel_stops_the_process_at_once():
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(InstallCancelled):
        run_process([sys.executable, "-c", "import time; print('go', flush=True); time.sleep(60)"], cancel=cancel)
    assert time.monotonic() - started < 10


def test_cancel_before_the_look_installs_nothing(tmp_path, paths):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(InstallCancelled):
        PluginInstaller(paths.plugins_dir).prepare(write_plugin(tmp_path / "src"), cancel=cancel)
    assert list(paths.plugins_dir.iterdir()) == []


# -- the command line ----------------------------------------------------------------------------
def test_cli_without_a_terminal_needs_trust(tmp_path, paths, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    source = write_plugin(tmp_path / "src")
    assert main(["plugins", "install", str(source)]) == 1
    assert "add --trust" in capsys.readouterr().err
    assert list(paths.plugins_dir.iterdir()) == []


def test_cli_asks_and_declining_installs_nothing(tmp_path, paths, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", Terminal("no\n"))
    assert main(["plugins", "install", str(write_plugin(tmp_path / "src"))]) == 1
    captured = capsys.readouterr()
    assert "Panels:    Hello panel" in captured.out and "Type yes" in captured.err
    assert "Not installed." in captured.err and list(paths.plugins_dir.iterdir()) == []


def test_cli_installs_after_yes_and_enables_then_removes(tmp_path, paths, capsys, monkeypatch):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    write_plugin(paths.plugins_dir)
    assert main(["plugins", "disable", "hello"]) == 0
    assert main(["plugins", "remove", "hello"]) == 0
    monkeypatch.setattr("sys.stdin", Terminal("yes\n"))
    assert main(["plugins", "install", str(write_plugin(tmp_path / "src"))]) == 0
    assert "Installed and enabled hello" in capsys.readouterr().out
    assert main(["plugins", "list"]) == 0
    assert "hello\tplugins folder\tenabled" in capsys.readouterr().out
    assert main(["plugins", "remove", "tools"]) == 1
    assert "disable it instead: `parley plugins disable tools`" in capsys.readouterr().err
    assert main(["plugins", "install", str(tmp_path / "src" / "hello.py"), "--trust"]) == 1
    assert "already installed" in capsys.readouterr().err


def test_cli_trust_flag_installs_without_asking(tmp_path, paths, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["plugins", "install", "--trust", str(write_plugin(tmp_path / "src"))]) == 0
    assert (paths.plugins_dir / "hello.py").is_file()


# -- pip -----------------------------------------------------------------------------------------
def test_a_wheel_is_looked_at_before_pip_installs_it_then_removed(tmp_path, paths, venv):
    wheel = make_wheel(tmp_path / "wheels")
    installer = pip_installer(paths, venv, tmp_path / "wheels")
    candidate = installer.prepare(str(wheel))
    try:
        [plugin] = candidate.plugins
        assert (candidate.distribution, candidate.version, plugin.name) == ("parley-hello", "0.1", "hello")
        assert plugin.tools == ["greet — Greet someone by name."] and plugin.panels == ["Hello panel"]
        assert "pip package parley-hello 0.1" in candidate.summary_text()
        assert not venv_has(venv, "parley-hello")  # looked at, not installed
        assert installer.install(candidate, trusted=True) == ["hello"]
    finally:
        candidate.close()
    assert venv_plugins(venv, "hello") == {"hello": ["package parley-hello", "enabled", "0.1"]}
    with pytest.raises(PluginClash, match="parley-hello 0.1 is already installed.*parley plugins remove hello"):
        installer.prepare("parley-hello==0.1")
    assert "uninstalled the package parley-hello" in installer.remove("hello")
    assert not venv_has(venv, "parley-hello")
    assert not _shared_has("parley-hello")


def test_a_requirement_is_fetched_with_its_new_dependency(tmp_path, paths, venv):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "parley-greeter", "0.2", module="parley_greeter", entry_points={"greeter": "parley_greeter"},
               requires=["parley-greeting-words>=1", "pluggy>=1"],
               source="from parley_greeting_words import WORD\n" + HELLO)
    make_wheel(wheels, "parley-greeting-words", "1.0", module="parley_greeting_words", entry_points={},
               source="WORD = 'hi'\n")
    installer = pip_installer(paths, venv, wheels)
    candidate = installer.prepare("parley-greeter==0.2")
    try:
        assert candidate.new_dependencies == ["parley-greeting-words 1.0"]
        assert "pip will also install: parley-greeting-words 1.0" in candidate.summary_text()
        installer.install(candidate, trusted=True)
    finally:
        candidate.close()
    try:
        assert venv_plugins(venv, "greeter")["greeter"][1] == "enabled"
    finally:
        installer.remove("greeter")
        subprocess.run([str(venv), "-m", "pip", "uninstall", "-y", "parley-greeting-words"], capture_output=True)


def test_a_plugin_needing_another_pluggy_is_refused_and_nothing_changes(tmp_path, paths, venv):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "hello", "0.1", module="hello_plugin", requires=["pluggy>=99"])
    pluggy = importlib.metadata.version("pluggy")
    with pytest.raises(PluginConflict, match=rf"hello 0\.1 needs pluggy>=99, but Parley uses pluggy {pluggy}"):
        pip_installer(paths, venv, wheels).prepare("hello==0.1")
    assert not venv_has(venv, "hello") and importlib.metadata.version("pluggy") == pluggy


def test_a_conflict_deeper_down_is_named_from_pips_resolver(tmp_path, paths, venv):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "outer", "0.1", module="outer", entry_points={"outer": "outer"}, requires=["inner"])
    make_wheel(wheels, "inner", "1.0", module="inner", entry_points={}, requires=["pluggy>=99"], source="")
    with pytest.raises(PluginConflict, match=r"outer 0\.1 cannot be installed: inner 1\.0 needs pluggy>=99, but "
                                             r"Parley uses pluggy"):
        pip_installer(paths, venv, wheels).prepare("outer")
    assert not venv_has(venv, "outer") and not venv_has(venv, "inner")


def test_pip_failures_end_with_pips_own_words(tmp_path, paths, venv):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "needy", "0.1", module="needy", entry_points={"needy": "needy"}, requires=["nothere>=1"])
    make_wheel(wheels, "library", "0.1", module="library", entry_points={})
    installer = pip_installer(paths, venv, wheels)
    with pytest.raises(PipFailed, match=r"(?s)could not get parley-nope.*No matching distribution"):
        installer.prepare("parley-nope==1.0")
    with pytest.raises(PipFailed, match=r"(?s)needy 0\.1's requirements.*nothere"):
        installer.prepare("needy")
    with pytest.raises(NotAPlugin, match="declares no entry point in the group “desktop_app”"):
        installer.prepare("library")


def test_cli_installs_a_wheel_offline_into_the_environment_it_runs_in(tmp_path, paths, venv, capsys, monkeypatch):
    # The command uses sys.executable's environment: the throwaway one here.
    monkeypatch.setattr(sys, "executable", str(venv))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    wheels = tmp_path / "wheels"
    make_wheel(wheels)
    assert main(["plugins", "install", "parley-hello", "--trust", "--no-index", "--find-links", str(wheels)]) == 0
    captured = capsys.readouterr()
    assert "Tools:     greet" in captured.out and "Installed and enabled hello" in captured.out
    try:
        assert venv_has(venv, "parley-hello")
    finally:
        assert main(["plugins", "remove", "hello"]) == 0
    assert not venv_has(venv, "parley-hello")


def _shared_has(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
