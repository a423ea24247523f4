"""Finding llama.cpp's own programs (tests/native_tools.py); nothing here builds them."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from tests import native_tools


def test_the_programs_live_in_the_machine_build_cache_under_the_wheel_key(isolated_dirs):
    folder = native_tools.native_dir()
    assert not folder.is_relative_to(isolated_dirs), "a test's temporary home would rebuild them every run"
    wheels = subprocess.run(
        ["make", "--no-print-directory", "-s", "-C", str(native_tools.ROOT), "--eval",
         "print-wheels: ; @echo $(LLAMA_WHEELS)", "print-wheels"],
        env=native_tools._make_env(), capture_output=True, text=True, check=True,
    ).stdout.strip()
    version_and_key = wheels.rsplit("/", 1)[1].removeprefix("llama-cpp-python-")
    assert folder.parent.name == f"llama-cpp-{version_and_key}"
    assert folder.parent.parent == Path(wheels).parent


def test_a_folder_of_ready_programs_can_be_named(tmp_path, monkeypatch):
    server = tmp_path / "llama-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(server.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PARLEY_NATIVE_DIR", str(tmp_path))
    assert native_tools.native_tool("llama-server") == server
    with pytest.raises(native_tools.NativeToolError, match="llama-bench is not in"):
        native_tools.native_tool("llama-bench")  # a named folder is never built into


def test_only_known_programs_are_asked_for():
    with pytest.raises(ValueError, match="llama-server"):
        native_tools.find_native_tool("llama-cli")
