"""llama.cpp's own programs (``llama-server``, ``llama-bench``), for benchmarks and tests.

``make native`` builds them once per machine from the llama.cpp sources vendored in the
pinned llama-cpp-python release, into the build cache outside the clone (next to the
llama-cpp-python wheel, under the same version and CPU key). The Makefile alone knows that
folder; this module asks it (``make native-dir``) and, when a program is missing, runs
``make native``, which downloads nothing but that release's sdist from the package registry.

Tests give every test a temporary ``HOME`` and ``XDG_CACHE_HOME`` (conftest.py), and the
cache lives under those; so this module remembers them as they were when it was imported
(the root conftest imports it first) and hands make those.

    from tests.native_tools import native_tool
    server = native_tool("llama-server")  # a Path; built first if need be

``PARLEY_NATIVE_DIR`` points at a folder of ready programs instead (a CI cache, say).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["NativeToolError", "native_dir", "native_tool", "find_native_tool", "TOOLS"]

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("llama-server", "llama-bench")

#: The variables that place the build cache, as they were before any test replaced them.
_MACHINE_ENV = {name: os.environ.get(name) for name in ("HOME", "XDG_CACHE_HOME", "BUILD_CACHE")}


class NativeToolError(RuntimeError):
    """A llama.cpp program is missing and could not be built."""


def _make_env() -> dict[str, str]:
    env = dict(os.environ)
    for name, value in _MACHINE_ENV.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _make(*args: str, capture: bool) -> subprocess.CompletedProcess:
    make = shutil.which("make")
    if make is None:
        raise NativeToolError("llama.cpp's programs are built by `make native`, and `make` is not installed.")
    return subprocess.run([make, "--no-print-directory", "-C", str(ROOT), *args], env=_make_env(),
                          capture_output=capture, text=True)


def native_dir() -> Path:
    """The folder ``make native`` puts the programs in (they may not be built yet)."""
    override = os.environ.get("PARLEY_NATIVE_DIR")
    return Path(override) if override else _build_cache_dir()


@functools.cache  # one machine, one folder: make is asked once per process
def _build_cache_dir() -> Path:
    done = _make("-s", "native-dir", capture=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise NativeToolError(f"`make native-dir` failed: {done.stderr.strip() or done.stdout.strip()}")
    return Path(done.stdout.strip().splitlines()[-1])


def find_native_tool(name: str) -> Path | None:
    """The built program ``name`` (one of :data:`TOOLS`), or None when it is not built."""
    if name not in TOOLS:
        raise ValueError(f"unknown llama.cpp program {name!r}; known: {', '.join(TOOLS)}")
    path = native_dir() / name
    return path if os.access(path, os.X_OK) else None


def native_tool(name: str, build: bool = True) -> Path:
    """The program ``name``, running ``make native`` first when it is missing and ``build`` is true.

    The build takes about 10 minutes on one core, once per machine; its output goes to this
    process's stderr. Raises :class:`NativeToolError` when the program is still missing.
    """
    path = find_native_tool(name)
    if path is not None:
        return path
    if build and not os.environ.get("PARLEY_NATIVE_DIR"):
        print(f"{name} is not built yet: running `make native` (about 10 minutes, once per machine)",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        done = _make("native", capture=False)
        path = find_native_tool(name)
        if path is not None:
            return path
        if done.returncode != 0:
            raise NativeToolError(f"`make native` failed (exit code {done.returncode}); its output is above.")
    raise NativeToolError(f"{name} is not in {native_dir()}; run `make native` in {ROOT}.")


if __name__ == "__main__":
    # `python tests/native_tools.py` prints where the programs are, building them if need be.
    for tool in TOOLS:
        print(native_tool(tool))
