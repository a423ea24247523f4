"""Look at a plugin before it is installed, in a separate short-lived Python process.

What a plugin adds (tools, side panels, commands...) is only known once its module is
imported and its ``register_*`` hooks are called. That runs the plugin's code, so it happens
in a child process with a throwaway ``PARLEY_HOME`` and ``PARLEY_LOAD_PLUGINS`` limited to
the candidate: the running app, its settings and conversations are never touched. It is
not a sandbox: the code runs with the user's rights, which the install prompt says.

The parent side is :func:`inspect_plugins` and :func:`environment`; the child side is
``python -m desktop_app.plugin_inspect`` (see :func:`main`). :func:`run_process` runs a
command with a cancel switch and a line-by-line callback, for pip as well.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from desktop_app.core.errors import ParleyError

__all__ = ["InspectionFailed", "InstallCancelled", "PluginSummary", "environment", "inspect_plugins",
           "run_process"]

#: How long importing a candidate and calling its register hooks may take.
INSPECT_TIMEOUT = 120.0


class InspectionFailed(ParleyError):
    """The candidate could not be looked at (the child process failed or took too long)."""


class InstallCancelled(ParleyError):
    """The user cancelled; nothing was installed."""


@dataclass
class PluginSummary:
    """What one plugin is and adds, as the child process saw it."""

    name: str
    version: str | None = None
    status: str = "enabled"
    error: str | None = None
    description: str | None = None
    hooks: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    panels: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# -- running a child process -------------------------------------------------------------------
def run_process(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
                cancel: threading.Event | None = None, on_line: Callable[[str], None] | None = None,
                timeout: float | None = None) -> tuple[int, list[str]]:
    """Run ``cmd``; return its exit code and its last output lines (stdout and stderr together).

    ``on_line`` gets each output line as it comes. Setting ``cancel`` stops the process (and
    the processes it started, such as a build backend) and raises :class:`InstallCancelled`;
    past ``timeout`` seconds it is stopped and the exit code is -1.
    """
    proc = subprocess.Popen(
        list(cmd), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
        start_new_session=os.name == "posix",
    )
    lines: collections.deque[str] = collections.deque(maxlen=200)
    pending: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            pending.put(line.rstrip("\n"))
        pending.put(None)

    reader = threading.Thread(target=read, name="parley-process-output", daemon=True)
    reader.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            if cancel is not None and cancel.is_set():
                raise InstallCancelled("Cancelled; nothing was installed.")
            if deadline is not None and time.monotonic() > deadline:
                _stop(proc)
                return -1, list(lines)
            try:
                line = pending.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                return proc.wait(), list(lines)
            lines.append(line)
            if on_line is not None:
                on_line(line)
    finally:
        # Cancelled, Ctrl+C or a failing callback: the child is in its own session, so stop it here.
        if proc.poll() is None:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a child and its own children: terminate, then kill if it does not go."""
    def send(sig: int) -> None:
        try:
            if os.name == "posix":
                os.killpg(proc.pid, sig)
            elif sig == signal.SIGTERM:
                proc.terminate()
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass

    send(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        send(getattr(signal, "SIGKILL", signal.SIGTERM))
        proc.wait()


def _child_env(home: Path, names: Sequence[str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PARLEY_HOME"] = str(home)
    env["PARLEY_LOAD_PLUGINS"] = ",".join(names)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONPATH", None)
    return env


# -- the parent side ---------------------------------------------------------------------------
def inspect_plugins(python: str, names: Sequence[str], *, plugins_dir: Path | None = None,
                    site: Path | None = None, cancel: threading.Event | None = None,
                    timeout: float = INSPECT_TIMEOUT) -> list[PluginSummary]:
    """Load the plugins ``names`` in a child process and return what each one adds.

    ``plugins_dir`` is a plugins folder holding the candidate (a file or package);
    ``site`` is a folder of unpacked distributions (``pip install --target``) whose
    ``desktop_app`` entry points are the candidates. Nothing else is loaded: no built-in
    plugins, no installed packages' plugins.
    """
    with tempfile.TemporaryDirectory(prefix="parley-inspect-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        out = Path(tmp) / "summary.json"
        cmd = [python, "-m", "desktop_app.plugin_inspect", "inspect", "--out", str(out), "--names", ",".join(names)]
        if plugins_dir is not None:
            cmd += ["--plugins-dir", str(plugins_dir)]
        if site is not None:
            cmd += ["--site", str(site)]
        code, lines = run_process(cmd, env=_child_env(home, names), cwd=tmp, cancel=cancel, timeout=timeout)
        if code == -1:
            raise InspectionFailed(f"Looking at the plugin took longer than {timeout:.0f} s (its import or one "
                                   "of its register hooks does not finish); it was not installed.")
        if code != 0 or not out.is_file():
            tail = "\n".join(lines[-8:])
            raise InspectionFailed(f"Looking at the plugin failed (the test process exited with code {code}); "
                                   f"it was not installed.\n{tail}".rstrip())
        data = json.loads(out.read_text(encoding="utf-8"))
    return [PluginSummary(**entry) for entry in data["plugins"]]


def environment(python: str) -> dict[str, Any]:
    """What is installed in ``python``'s environment, read in a child process.

    Returns ``{"distributions": [{"name", "version", "requires"}], "entry_points": [{"name",
    "value", "dist"}]}``, the entry points being those of the ``desktop_app`` group.
    """
    with tempfile.TemporaryDirectory(prefix="parley-env-") as tmp:
        out = Path(tmp) / "environment.json"
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        code, lines = run_process([python, "-m", "desktop_app.plugin_inspect", "environment", "--out", str(out)],
                                  env=env, cwd=tmp, timeout=120)
        if code != 0 or not out.is_file():
            tail = "\n".join(lines[-8:])
            raise InspectionFailed(f"Could not list the packages installed in {python} (exit code {code}).\n{tail}")
        return json.loads(out.read_text(encoding="utf-8"))


# -- the child side ----------------------------------------------------------------------------
def _environment() -> dict[str, Any]:
    import importlib.metadata

    from desktop_app.plugins import ENTRY_POINT_GROUP

    distributions, seen = [], set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() in seen:  # the first one on sys.path is the one imported
            continue
        seen.add(name.lower())
        distributions.append({"name": name, "version": dist.version, "requires": list(dist.requires or [])})
    entry_points = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        entry_points.append({"name": ep.name, "value": ep.value, "dist": dist.metadata["Name"] if dist else None})
    return {"distributions": distributions, "entry_points": entry_points}


def _first_line(text: str | None) -> str | None:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else None


def _inspect(names: list[str], plugins_dir: Path | None, site: Path | None) -> dict[str, Any]:
    import argparse as _argparse
    import importlib.metadata

    from desktop_app.core.turn import current_plugin
    from desktop_app.plugins import ENTRY_POINT_GROUP, PluginHost

    staged: list[importlib.metadata.EntryPoint] = []
    if site is not None:
        sys.path.insert(0, str(site))
        for dist in importlib.metadata.distributions(path=[str(site)]):
            staged += [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    host = PluginHost(default_plugins=(), plugins_dir=plugins_dir, entry_points=lambda: staged).load_all()
    summaries = {name: PluginSummary(name) for name in names}

    def add(kind: str, text: str) -> None:
        summary = summaries.get(current_plugin.get() or "")
        if summary is not None:
            getattr(summary, kind).append(text)

    registry = host.tools()
    for tool in registry.tools.values():
        summary = summaries.get(tool.source or "")
        if summary is not None:
            about = _first_line(getattr(tool, "description", None))
            summary.tools.append(f"{tool.name} — {about}" if about else tool.name)
    for problem in registry.problems:
        for name, summary in summaries.items():
            if problem.startswith(f"{name}:"):
                summary.problems.append(problem)
    host.hook.register_panels(register=lambda title, *a, **k: add("panels", str(title)))
    host.hook.register_actions(register=lambda text, *a, **k: add("actions", str(text)))

    def settings(options: Any, *a: Any, **k: Any) -> None:
        for option in options or ():
            add("settings", str(getattr(option, "key", option)))

    host.hook.register_settings(register=settings)

    class Subparsers:
        """Records the subcommands a plugin adds, on a parser of its own."""

        def __init__(self) -> None:
            self._real = _argparse.ArgumentParser(prog="parley").add_subparsers()
            self.choices = self._real.choices

        def add_parser(self, name: str, *args: Any, **kwargs: Any) -> Any:
            add("commands", name)
            return self._real.add_parser(name, *args, **kwargs)

        def __getattr__(self, attr: str) -> Any:
            return getattr(self._real, attr)

    host.hook.register_commands(subparsers=Subparsers())
    for name, summary in summaries.items():
        record = host.records.get(name)
        if record is None:
            summary.status, summary.error = "missing", "it was not found where it should be"
            continue
        summary.version, summary.status, summary.error = record.version, record.status, record.error
        plugin = host.pm.get_plugin(name)
        if plugin is not None:
            summary.hooks = sorted(caller.name for caller in host.pm.get_hookcallers(plugin) or ())
        module_name = f"parley_user_plugins.{name}" if record.source == "plugins folder" \
            else (record.location or "").split(":")[0]
        summary.description = _first_line(getattr(sys.modules.get(module_name), "__doc__", None))
    return {"plugins": [vars(s) for s in summaries.values()]}


def main(argv: list[str] | None = None) -> int:
    """``python -m desktop_app.plugin_inspect inspect|environment --out FILE ...`` (the child side)."""
    parser = argparse.ArgumentParser(prog="python -m desktop_app.plugin_inspect")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("inspect")
    p.add_argument("--out", required=True)
    p.add_argument("--names", required=True)
    p.add_argument("--plugins-dir")
    p.add_argument("--site")
    p = sub.add_parser("environment")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.action == "environment":
        data = _environment()
    else:
        data = _inspect([n for n in args.names.split(",") if n],
                        Path(args.plugins_dir) if args.plugins_dir else None,
                        Path(args.site) if args.site else None)
    # A file, not stdout: a plugin may print while it is imported.
    Path(args.out).write_text(json.dumps(data), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover - the child process
    sys.exit(main())
