"""Every start failure explains itself: a message a person can act on and an exit code, never an abort."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from desktop_app.cli import main
from desktop_app.core.errors import DataFolderError
from desktop_app.core.instance import AlreadyRunning, InstanceLock
from desktop_app.core.paths import AppPaths
from desktop_app.ui import startup_checks
from desktop_app.ui.startup_checks import (
    display_problem,
    install_hint,
    platform_plugin_problem,
    qt_platform,
    x_server_problem,
)

MISSING = "libparley-test-missing.so.1"


@pytest.fixture(scope="module")
def plugin_with_a_missing_library(tmp_path_factory) -> Path:
    """A shared library standing in for Qt's platform plugin, that needs a library nowhere to be found.

    It is linked against a library that is deleted afterwards, as when a system package is
    missing; ``ldd`` then reports it the way it reports libxcb-cursor.so.0 on such a desktop.
    """
    folder = tmp_path_factory.mktemp("qt-plugin")
    (folder / "dep.c").write_text("int parley_dep(void) { return 1; }\n")
    (folder / "plugin.c").write_text("int parley_dep(void);\nint parley_plugin(void) { return parley_dep(); }\n")
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build llama.cpp, so it is here"
    subprocess.run([cc, "-shared", "-fPIC", f"-Wl,-soname,{MISSING}", "-o", folder / MISSING, folder / "dep.c"],
                   check=True)
    plugin = folder / "libqxcb.so"
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,--no-as-needed", "-o", plugin, folder / "plugin.c", folder / MISSING],
                   check=True)
    (folder / MISSING).unlink()
    return plugin


def test_the_platform_qt_will_use():
    assert qt_platform({"QT_QPA_PLATFORM": "offscreen"}) == "offscreen"
    assert qt_platform({"QT_QPA_PLATFORM": "wayland;xcb"}) == "wayland"
    assert qt_platform({"QT_QPA_PLATFORM": "xcb:dpi=96"}) == "xcb"
    assert qt_platform({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}) == "wayland"
    assert qt_platform({"DISPLAY": ":0"}) == "xcb"


def test_each_display_plugin_needs_its_own_display():
    from desktop_app.ui.startup_checks import qt_platforms, window_problem

    # An exported QT_QPA_PLATFORM=xcb in an SSH session without X: Qt would abort.
    assert "DISPLAY is not set" in window_problem({"QT_QPA_PLATFORM": "xcb"})
    assert "WAYLAND_DISPLAY is not set" in window_problem({"QT_QPA_PLATFORM": "wayland"})
    assert window_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert qt_platforms({"WAYLAND_DISPLAY": "w", "XDG_SESSION_TYPE": "wayland"}) == ["wayland", "xcb"]


def test_a_fallback_plugin_that_works_is_enough(plugin_with_a_missing_library, monkeypatch):
    from desktop_app.ui.startup_checks import window_problem

    monkeypatch.setattr(startup_checks, "x_server_problem", lambda env, qt=None: None)
    # Wayland's plugin lacks a library, but Qt falls back to X, which is there.
    monkeypatch.setattr(startup_checks, "platform_plugin_path",
                        lambda qt: plugin_with_a_missing_library if qt == "wayland" else Path(sys.executable))
    assert window_problem({"QT_QPA_PLATFORM": "wayland;xcb", "WAYLAND_DISPLAY": "w", "DISPLAY": ":0"}) is None
    problem = window_problem({"QT_QPA_PLATFORM": "wayland", "WAYLAND_DISPLAY": "w"})
    assert MISSING in problem


def test_no_display_at_all_points_to_the_terminal_commands():
    problem = display_problem({}, "linux")
    assert "no display" in problem and "parley chat" in problem and "parley --help" in problem
    assert display_problem({"DISPLAY": ":0"}, "linux") is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert display_problem({}, "darwin") is None


def test_a_missing_system_library_of_the_qt_plugin_is_named(plugin_with_a_missing_library):
    problem = platform_plugin_problem(plugin_with_a_missing_library, "xcb")
    assert problem is not None
    assert f"needs system libraries that are not installed: {MISSING}" in problem
    assert f"apt-file search {MISSING}" in problem and "parley chat" in problem


def test_the_install_commands_for_debian_and_fedora():
    hint = install_hint(["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-randr.so.0", "libxcb-shape.so.0"])
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-randr0 libxcb-shape0" in hint
    assert "sudo dnf install xcb-util-cursor xcb-util-wm libxcb" in hint  # each package once


def test_a_plugin_whose_libraries_are_all_there_is_fine():
    assert platform_plugin_problem(Path(sys.executable), "xcb") is None


def test_a_display_that_does_not_answer_is_reported():
    problem = x_server_problem({"DISPLAY": ":4917"})
    if ctypes.util.find_library("xcb") is None:
        assert problem is None  # without libxcb, the library check reports it instead
    else:
        assert "':4917'" in problem and "does not answer" in problem and "parley chat" in problem
    assert x_server_problem({"DISPLAY": ":4917", "QT_QPA_PLATFORM": "offscreen"}) is None


def test_a_fallback_to_x_is_checked_against_the_x_server(monkeypatch):
    from desktop_app.ui.startup_checks import window_problem

    monkeypatch.setattr(startup_checks, "platform_plugin_problem", lambda plugin, qt: None)
    # Wayland has no display here, so Qt falls back to X, whose server must answer.
    problem = window_problem({"QT_QPA_PLATFORM": "wayland;xcb", "DISPLAY": ":4917"})
    if ctypes.util.find_library("xcb") is None:
        assert problem is None  # without libxcb there is no X server to ask
    else:
        assert "WAYLAND_DISPLAY is not set" in problem  # the first plugin's problem is the one shown
        assert "does not answer" in window_problem({"QT_QPA_PLATFORM": "xcb;wayland", "DISPLAY": ":4917"})


def test_the_app_exits_with_the_message_instead_of_aborting(plugin_with_a_missing_library, monkeypatch, capsys):
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(startup_checks, "platform_plugin_path", lambda platform: plugin_with_a_missing_library)
    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("parley: The window cannot open") and MISSING in err


def test_a_data_folder_that_cannot_be_written_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where Parley's folder should be")
    monkeypatch.setenv("PARLEY_HOME", str(blocker))
    with pytest.raises(DataFolderError, match="cannot write to its folder") as raised:
        AppPaths.default().ensure()
    assert "PARLEY_HOME=" in str(raised.value)
    assert main(["conversations", "list"]) == 1
    err = capsys.readouterr().err
    assert "cannot write to its folder" in err and str(blocker) in err
    assert blocker.read_text() == "a file where Parley's folder should be"


def test_a_read_only_folder_is_found_by_trying_a_write(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Root may write anywhere, so the refusal of a read-only disk is injected where it happens.
    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    with pytest.raises(DataFolderError, match="Permission denied"):
        AppPaths(tmp_path / "c", tmp_path / "d", tmp_path / "k", tmp_path / "l").ensure()


def test_one_lock_per_data_folder(tmp_path):
    first = InstanceLock(tmp_path).acquire("parley chat")
    with pytest.raises(AlreadyRunning) as refused:
        InstanceLock(tmp_path).acquire("the window")
    assert refused.value.holder == {"pid": os.getpid(), "command": "parley chat"}
    assert "already running on this data folder (parley chat, process" in str(refused.value)
    assert "PARLEY_HOME" in str(refused.value)
    first.release()
    InstanceLock(tmp_path).acquire("the window").release()


HOLDER = textwrap.dedent("""
    import sys
    from desktop_app.core.instance import InstanceLock
    lock = InstanceLock(sys.argv[1]).acquire("parley chat")
    print("held", flush=True)
    sys.stdin.read()
""")


def test_a_second_process_on_the_same_folder_is_refused(paths, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(paths.data_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["conversations", "list"]) == 1
        err = capsys.readouterr().err
        assert f"already running on this data folder (parley chat, process {holder.pid})" in err
    finally:
        holder.communicate("")
    # Once it has ended, however it ended, the folder is free again.
    assert main(["conversations", "list"]) == 0


def test_a_second_window_brings_the_first_to_the_front(paths):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    first = subprocess.Popen([sys.executable, "-m", "desktop_app"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not InstanceLock(paths.data_dir).holder().get("command") == "the window":
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        # The second start runs as its own process, as a user's would.
        second = subprocess.run([sys.executable, "-m", "desktop_app"], env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 0, second.stderr
        assert "already open; its window was brought to the front" in second.stderr
        assert first.poll() is None, "the first window is still running"
    finally:
        first.terminate()
        first.communicate(timeout=60)
