"""Installing, removing and trusting plugins; no Qt, used by ``parley plugins`` and the window.

Installing is two steps, so that the user decides with the facts in front of them:

1. :meth:`PluginInstaller.prepare` stages the candidate in a temporary folder and looks at
   it in a separate process (see :mod:`desktop_app.plugin_inspect`): its name, version,
   source, hooks, tools and side panels. For a pip package it also checks, without
   installing anything, that its requirements fit the packages Parley runs on.
2. :meth:`PluginInstaller.install` puts exactly what was looked at in place, and only when
   the caller passes ``trusted=True`` (the user said "I trust this code").

Where a candidate goes:

- a ``.py`` file or a package folder (with ``__init__.py``) is copied into the plugins folder;
- a project folder (``pyproject.toml`` or ``setup.py``), a wheel or sdist, or a pip
  requirement (``parley-hello==0.2``) is installed with pip into Parley's own environment.
  pip is resolved against a constraints file that pins every installed distribution, so a
  plugin can add packages but never change the version of one Parley already uses.

Slow steps take ``progress(step, line)`` (``line`` is None when ``step`` starts, else a line
of pip's output) and ``cancel`` (a :class:`threading.Event`); the window runs them on a
worker thread.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from desktop_app.core.errors import ParleyError
from desktop_app.plugin_inspect import (
    InspectionFailed,
    InstallCancelled,
    PluginSummary,
    environment,
    inspect_plugins,
    run_process,
)
from desktop_app.plugins import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, plugin_name

__all__ = [
    "Candidate", "CannotRemove", "InspectionFailed", "InstallCancelled", "InstalledPlugin", "NotAPlugin",
    "PipFailed", "PluginClash", "PluginConflict", "PluginInstallError", "PluginInstaller", "Progress",
    "TRUST_WARNING", "TrustRequired", "mark_enabled",
]

Progress = Callable[[str, "str | None"], None]

#: Said before every install, in the CLI and the window.
TRUST_WARNING = (
    "A plugin is Python code that runs with your full rights every time Parley starts: it can "
    "read, change and send anything you can. Install it only if you trust where it comes from."
)
_INSPECTED_NOTE = (
    "To make this summary Parley imported the plugin once, in a separate Python process with a "
    "throwaway Parley folder (your settings and conversations were not touched). That is not a sandbox."
)
_BUILD_NOTE = (
    "pip runs a package's build code (its setup.py or build backend) to build it from source; for "
    "this one that has already happened once, in a temporary folder, to make this summary."
)
_WHEEL_NOTE = "This is a built wheel: installing it runs no build code."

_PIP_QUIET = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_ROOT_USER_ACTION": "ignore"}
_ARCHIVES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")


class PluginInstallError(ParleyError):
    """Base of every install or remove error; the message says what to do."""


class NotAPlugin(PluginInstallError, ValueError):
    """The path or package is missing, or is not a Parley plugin."""


class PluginClash(PluginInstallError):
    """A plugin (or distribution) of that name is already installed."""


class PluginConflict(PluginInstallError):
    """A pip plugin's requirements conflict with the packages Parley uses; nothing was installed."""


class PipFailed(PluginInstallError):
    """pip failed; the message ends with its last lines."""


class TrustRequired(PluginInstallError):
    """Install was called without the user's explicit trust."""


class CannotRemove(PluginInstallError):
    """The plugin is built in, unknown, or needed by something else."""


@dataclass
class InstalledPlugin:
    """An installed plugin, found without importing it."""

    name: str
    kind: str  # "built-in", "pip" or "plugins folder"
    location: str
    distribution: str | None = None


@dataclass
class Candidate:
    """A staged plugin, looked at and ready for :meth:`PluginInstaller.install`. Call :meth:`close`."""

    kind: str  # "file", "package folder" or "pip"
    target: str
    source: str
    plugins: list[PluginSummary]
    distribution: str | None = None
    version: str | None = None
    new_dependencies: list[str] = field(default_factory=list)
    runs_build_code: bool = False
    work: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    staged: Path | None = None  # the copied file/folder, or the plugin's wheel
    wheels: Path | None = None
    constraints: Path | None = None

    @property
    def names(self) -> list[str]:
        """The plugin names this candidate adds (a pip package may add several)."""
        return [p.name for p in self.plugins]

    def summary_text(self, *, trust_warning: bool = True) -> str:
        """The summary shown before the user decides, as plain text (the window shows the warning apart)."""
        lines = []
        for plugin in self.plugins:
            version = plugin.version or self.version
            lines.append(f"Plugin:    {plugin.name}" + (f" {version}" if version else ""))
            if plugin.description:
                lines.append(f"           {plugin.description}")
            lines.append(f"Source:    {self.source}")
            lines.append(f"Hooks:     {', '.join(plugin.hooks) or 'none'}")
            lines.append(f"Tools:     {', '.join(plugin.tools) or 'none'}")
            lines.append(f"Panels:    {', '.join(plugin.panels) or 'none'}")
            for label, items in (("Actions", plugin.actions), ("Commands", plugin.commands),
                                 ("Settings", plugin.settings)):
                if items:
                    lines.append(f"{label + ':':<10} {', '.join(items)}")
            lines += [f"Warning:   {problem}" for problem in plugin.problems]
            lines.append("")
        if self.new_dependencies:
            lines.append(f"pip will also install: {', '.join(self.new_dependencies)}")
        if self.kind == "pip":
            lines.append(_BUILD_NOTE if self.runs_build_code else _WHEEL_NOTE)
        lines.append(_INSPECTED_NOTE)
        if trust_warning:
            lines.append(TRUST_WARNING)
        return "\n".join(lines)

    def close(self) -> None:
        """Delete the staging folder."""
        if self.work is not None:
            self.work.cleanup()
            self.work = None


def mark_enabled(settings: Any, names: Iterable[str], host: Any = None) -> None:
    """Take ``names`` off the saved list of disabled plugins (installing a plugin enables it)."""
    names = set(names)
    disabled = set(settings.get("plugins.disabled")) - names
    settings.set("plugins.disabled", sorted(disabled))
    settings.save()
    if host is not None:
        host.disabled -= names


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class PluginInstaller:
    """Installs into ``plugins_dir`` and into the environment of ``python`` (Parley's own by default).

    ``pip_args`` are added to every pip call that may fetch something, e.g.
    ``["--no-index", "--find-links", "/wheels"]`` to install offline.
    """

    def __init__(self, plugins_dir: Path, *, python: str | None = None, pip_args: Sequence[str] = ()):
        self.plugins_dir = Path(plugins_dir)
        self.python = python or sys.executable
        self.pip_args = list(pip_args)

    # -- what is installed -------------------------------------------------------------------
    def installed(self, env: dict[str, Any] | None = None) -> dict[str, InstalledPlugin]:
        """Every installed plugin by name, from all three sources, without importing any.

        ``env`` is :func:`environment`'s answer when the caller already has it.
        """
        found: dict[str, InstalledPlugin] = {}
        for spec in DEFAULT_PLUGINS:
            name = plugin_name(spec)
            found.setdefault(name, InstalledPlugin(name, "built-in", spec))
        if self._can_pip():
            for ep in (env or environment(self.python))["entry_points"]:
                found.setdefault(ep["name"], InstalledPlugin(ep["name"], "pip", ep["value"], ep["dist"]))
        for name, path in self._folder_plugins():
            found.setdefault(name, InstalledPlugin(name, "plugins folder", str(path)))
        return found

    def _folder_plugins(self) -> list[tuple[str, Path]]:
        """Plugins in the plugins folder, by the host's rules (see PluginHost.load_all)."""
        if not self.plugins_dir.is_dir():
            return []
        found = []
        for path in sorted(self.plugins_dir.iterdir()):
            name = path.stem if path.suffix == ".py" else path.name
            if name.startswith(("_", ".")) or not (path.suffix == ".py" or (path / "__init__.py").is_file()):
                continue
            found.append((name, path))
        return found

    def _can_pip(self) -> bool:
        return not getattr(sys, "frozen", False) or self.python != sys.executable

    # -- install -------------------------------------------------------------------------------
    def prepare(self, target: str | os.PathLike, *, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> Candidate:
        """Stage ``target`` (a .py file, a folder, a wheel or a pip requirement) and look at it.

        Raises a :class:`PluginInstallError` with a message a person can act on; nothing is
        installed either way.
        """
        progress = progress or (lambda step, line: None)
        text = os.fspath(target).strip()
        if not text:
            raise NotAPlugin("Say what to install: a .py plugin file, a plugin folder, a wheel, "
                             "or a pip requirement such as parley-hello==0.2.")
        path = Path(text).expanduser()
        looks_like_path = path.exists() or os.sep in text or "/" in text or text.endswith((".py", *_ARCHIVES))
        if not looks_like_path:
            return self._prepare_pip(text, _check_requirement(text), False, progress, cancel)
        if not path.exists():
            raise NotAPlugin(f"{path} does not exist. Give a .py plugin file, a plugin folder, a wheel, "
                             "or a pip requirement such as parley-hello==0.2.")
        path = path.resolve()
        if path.is_file() and path.suffix == ".py":
            return self._prepare_copy(path, "file", progress, cancel)
        if path.is_file() and path.name.endswith(_ARCHIVES):
            return self._prepare_pip(str(path), f"the file {path}", not path.name.endswith(".whl"), progress, cancel)
        if path.is_dir() and ((path / "pyproject.toml").is_file() or (path / "setup.py").is_file()):
            return self._prepare_pip(str(path), f"the project folder {path}", True, progress, cancel)
        if path.is_dir() and (path / "__init__.py").is_file():
            return self._prepare_copy(path, "package folder", progress, cancel)
        if path.is_dir():
            raise NotAPlugin(f"{path} is not a plugin folder: it has no __init__.py (a package to copy into "
                             "the plugins folder) and no pyproject.toml (a project to install with pip).")
        raise NotAPlugin(f"{path} is not a plugin: give a .py file, a package folder, a project folder, "
                         "a wheel (.whl) or a source archive (.tar.gz).")

    def install(self, candidate: Candidate, *, trusted: bool, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> list[str]:
        """Install a prepared candidate; returns the names of the plugins it adds.

        ``trusted`` must be True: the user has seen the summary and said they trust this code.
        The last pip step installs only the wheels staged by :meth:`prepare`, offline; once it
        has started it is not cancelled, so an install is never left half-done.
        """
        if not trusted:
            raise TrustRequired("Installing a plugin needs your explicit trust: it is code that runs with "
                                "your full rights. Nothing was installed.")
        progress = progress or (lambda step, line: None)
        if cancel is not None and cancel.is_set():
            raise InstallCancelled("Cancelled; nothing was installed.")
        if candidate.work is None or candidate.staged is None:
            raise PluginInstallError("This plugin's staging folder is gone; look at it again before installing.")
        installed = self.installed()
        for name in candidate.names:
            if name in installed:
                raise _clash(name, installed[name])
        if candidate.kind == "pip":
            step = f"Installing {candidate.distribution} {candidate.version} with pip…"
            progress(step, None)
            code, lines = run_process(
                [*self._pip("install"), "--no-index", "--find-links", str(candidate.wheels),
                 "-c", str(candidate.constraints), str(candidate.staged)],
                env=self._pip_env(), on_line=lambda line: progress(step, line))
            if code != 0:
                raise _pip_failed(f"pip could not install {candidate.distribution}", lines)
            return candidate.names
        progress(f"Copying {candidate.names[0]} into the plugins folder…", None)
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        destination = self.plugins_dir / candidate.staged.name
        if destination.exists():
            raise PluginClash(f"{destination} already exists; move it away or rename the new plugin.")
        # Copied under a name the host skips, then renamed: a start-up never sees half a plugin.
        partial = self.plugins_dir / f".installing-{candidate.staged.name}"
        if partial.is_dir():
            shutil.rmtree(partial)
        if candidate.staged.is_dir():
            shutil.copytree(candidate.staged, partial, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(candidate.staged, partial)
        partial.rename(destination)
        return candidate.names

    def _prepare_copy(self, path: Path, kind: str, progress: Progress,
                      cancel: threading.Event | None) -> Candidate:
        name = path.stem if kind == "file" else path.name
        if name.startswith(("_", ".")):
            raise NotAPlugin(f"{path.name}: Parley skips plugins whose name starts with “_” or “.”; rename it.")
        installed = self.installed()
        if name in installed:
            raise _clash(name, installed[name])
        for existing in (self.plugins_dir / f"{name}.py", self.plugins_dir / name):
            if existing.exists():
                raise PluginClash(f"{existing} is already in the plugins folder; remove it first with "
                                  f"`parley plugins remove {name}`, or rename the new plugin.")
        work = tempfile.TemporaryDirectory(prefix="parley-plugin-")
        try:
            staging = Path(work.name) / "plugins"
            staging.mkdir()
            staged = staging / path.name
            if kind == "file":
                shutil.copy2(path, staged)
            else:
                shutil.copytree(path, staged, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            progress(f"Looking at {name} in a separate process…", None)
            plugins = inspect_plugins(self.python, [name], plugins_dir=staging, cancel=cancel)
            _check_loaded(plugins, str(path))
        except BaseException:
            work.cleanup()
            raise
        return Candidate(kind, str(path), f"the {kind} {path} (copied into {self.plugins_dir})", plugins,
                         work=work, staged=staged)

    def _prepare_pip(self, spec: str, source: str, runs_build_code: bool, progress: Progress,
                     cancel: threading.Event | None) -> Candidate:
        if not self._can_pip():
            raise PluginInstallError("This Parley is a packaged build without pip, so it cannot install pip "
                                     "packages; copy the plugin's .py file or package folder instead.")
        work = tempfile.TemporaryDirectory(prefix="parley-plugin-")
        try:
            return self._stage_pip(spec, source, runs_build_code, Path(work.name), work, progress, cancel)
        except BaseException:
            work.cleanup()
            raise

    def _stage_pip(self, spec: str, source: str, runs_build_code: bool, root: Path,
                   work: tempfile.TemporaryDirectory, progress: Progress,
                   cancel: threading.Event | None) -> Candidate:
        wheels = root / "wheels"
        step = ("Building the package with pip (this runs its build code)…" if runs_build_code
                else "Getting the package with pip…")
        self._run_pip(step, ["wheel", "--no-deps", "--wheel-dir", str(wheels), *self.pip_args,
                             *self._local_build_args(spec), spec],
                      f"pip could not get {spec}", progress, cancel)
        built = sorted(wheels.glob("*.whl"))
        if len(built) != 1:
            raise PipFailed(f"pip gave {len(built)} wheels for {spec} instead of one; it was not installed.")
        wheel = built[0]
        meta = _wheel_metadata(wheel)
        dist, version = meta["name"], meta["version"]
        if not meta["entry_points"]:
            raise NotAPlugin(f"{dist} {version} is not a Parley plugin: it declares no entry point in the "
                             f"group “{ENTRY_POINT_GROUP}” (see “Writing a plugin” in the README).")
        source = f"pip package {dist} {version}, from {source}"
        env = environment(self.python)
        installed_dists = {_normalize(d["name"]): d for d in env["distributions"]}
        if _normalize(dist) in installed_dists:
            have = installed_dists[_normalize(dist)]
            names = [ep["name"] for ep in env["entry_points"] if ep["dist"] and _normalize(ep["dist"]) == _normalize(dist)]
            hint = f"`parley plugins remove {names[0]}`" if names else f"`{self.python} -m pip uninstall {have['name']}`"
            raise PluginClash(f"{have['name']} {have['version']} is already installed; Parley does not change an "
                              f"installed package's version. Remove it first with {hint}, then install {dist} {version}.")
        installed = self.installed(env)
        for name in meta["entry_points"]:
            if name in installed:
                raise _clash(name, installed[name])
        conflicts = _direct_conflicts(dist, version, meta["requires"], installed_dists)
        if conflicts:
            raise PluginConflict(_conflict_message(conflicts, f"{dist} {version}"))
        constraints = root / "constraints.txt"
        constraints.write_text("".join(f"{d['name']}=={d['version']}\n" for d in installed_dists.values()
                                       if _valid_pin(d["version"])), encoding="utf-8")
        report = root / "report.json"
        step = "Checking its requirements against Parley's packages…"
        code, lines = self._pip_lines(step, ["install", "--dry-run", "--report", str(report),
                                             "-c", str(constraints), *self.pip_args, str(wheel)], progress, cancel)
        if code != 0:
            found = _pip_conflicts(lines, installed_dists)
            if found:
                raise PluginConflict(_conflict_message(found, f"{dist} {version}"))
            raise _pip_failed(f"pip could not resolve {dist} {version}'s requirements", lines)
        import json

        items = json.loads(report.read_text(encoding="utf-8")).get("install", [])
        extra = []
        for item in items:
            name, item_version = item["metadata"]["name"], item["metadata"]["version"]
            if _normalize(name) == _normalize(dist):
                continue
            if _normalize(name) in installed_dists:  # the constraints forbid it; never trust that blindly
                have = installed_dists[_normalize(name)]
                raise PluginConflict(f"{dist} {version} would change {name} from {have['version']} to "
                                     f"{item_version}, which Parley uses; it was not installed.")
            extra.append((name, item_version))
        if extra:
            self._run_pip("Getting its requirements with pip…",
                          ["wheel", "--no-deps", "--wheel-dir", str(wheels), *self.pip_args,
                           *(f"{n}=={v}" for n, v in extra)],
                          f"pip could not get {dist}'s requirements", progress, cancel)
        site = root / "site"
        self._run_pip("Unpacking it for a look…",
                      ["install", "--no-deps", "--no-index", "--target", str(site), "--no-warn-script-location",
                       "--no-compile", *map(str, sorted(wheels.glob("*.whl")))],
                      f"pip could not unpack {dist}", progress, cancel)
        progress(f"Looking at {dist} in a separate process…", None)
        plugins = inspect_plugins(self.python, list(meta["entry_points"]), site=site, cancel=cancel)
        _check_loaded(plugins, f"{dist} {version}")
        return Candidate("pip", spec, source, plugins, distribution=dist, version=version,
                         new_dependencies=[f"{n} {v}" for n, v in extra], runs_build_code=runs_build_code,
                         work=work, staged=wheel, wheels=wheels, constraints=constraints)

    # -- remove --------------------------------------------------------------------------------
    def remove(self, name: str, *, progress: Progress | None = None) -> str:
        """Remove an installed plugin; returns a sentence saying what happened.

        A plugins-folder plugin is moved into ``_removed/`` in the plugins folder (kept, never
        deleted); a pip plugin is uninstalled with pip (its dependencies stay); a built-in
        plugin cannot be removed.
        """
        progress = progress or (lambda step, line: None)
        env = environment(self.python) if self._can_pip() else None
        installed = self.installed(env)
        plugin = installed.get(name)
        if plugin is None:
            others = ", ".join(sorted(n for n, p in installed.items() if p.kind != "built-in")) or "none"
            raise CannotRemove(f"There is no installed plugin called {name!r}. Plugins you installed: {others}.")
        if plugin.kind == "built-in":
            raise CannotRemove(f"{name} is built into Parley and cannot be removed; disable it instead: "
                               f"`parley plugins disable {name}`.")
        if plugin.kind == "plugins folder":
            source = Path(plugin.location)
            removed = self.plugins_dir / "_removed"
            removed.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            destination = removed / f"{source.stem}-{stamp}{source.suffix}"
            counter = 1
            while destination.exists():
                counter += 1
                destination = removed / f"{source.stem}-{stamp}-{counter}{source.suffix}"
            source.rename(destination)
            return f"Removed {name}: moved {source.name} to {destination} (delete it there when you are sure)."
        dist = plugin.distribution
        if not dist:
            raise CannotRemove(f"{name} comes from a package pip does not know the name of; remove it with pip.")
        assert env is not None
        if _normalize(dist) == "parley":
            raise CannotRemove(f"{name} comes with Parley itself; switch it off with `parley plugins disable {name}`.")
        needed_by = sorted(d["name"] for d in env["distributions"]
                           if any(_needs(r, dist) for r in d["requires"]))
        if needed_by:
            raise CannotRemove(f"{name} comes from {dist}, which {', '.join(needed_by)} need(s); it was not removed.")
        also = sorted(ep["name"] for ep in env["entry_points"]
                      if ep["dist"] and _normalize(ep["dist"]) == _normalize(dist) and ep["name"] != name)
        step = f"Uninstalling {dist} with pip…"
        progress(step, None)
        code, lines = run_process([*self._pip("uninstall"), "--yes", dist], env=self._pip_env(),
                                  on_line=lambda line: progress(step, line))
        if code != 0:
            raise _pip_failed(f"pip could not uninstall {dist}", lines)
        extra = f" (it also removed the plugin(s) {', '.join(also)})" if also else ""
        return f"Removed {name}: uninstalled the package {dist} with pip{extra}."

    # -- pip -------------------------------------------------------------------------------------
    def _local_build_args(self, spec: str) -> list[str]:
        """``--no-build-isolation`` for a project folder that setuptools builds, when Parley's own
        Python has setuptools: then building it needs nothing from the network."""
        pyproject = Path(spec) / "pyproject.toml"
        if not pyproject.is_file():
            return []
        import tomllib

        try:
            system = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("build-system", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return []  # pip reports the broken file itself
        wanted = [re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].strip().lower() for r in system.get("requires", [])]
        if system.get("build-backend") != "setuptools.build_meta" or set(wanted) - {"setuptools", "wheel"}:
            return []
        probe = subprocess.run([self.python, "-c", "import setuptools"], capture_output=True)
        return ["--no-build-isolation"] if probe.returncode == 0 else []

    def _pip(self, command: str) -> list[str]:
        return [self.python, "-m", "pip", command, "--disable-pip-version-check", "--no-input"]

    @staticmethod
    def _pip_env() -> dict[str, str]:
        env = {**os.environ, **_PIP_QUIET}
        env.pop("PYTHONPATH", None)
        return env

    def _pip_lines(self, step: str, args: list[str], progress: Progress,
                   cancel: threading.Event | None) -> tuple[int, list[str]]:
        progress(step, None)
        return run_process([*self._pip(args[0]), *args[1:]], env=self._pip_env(), cancel=cancel,
                           on_line=lambda line: progress(step, line))

    def _run_pip(self, step: str, args: list[str], failure: str, progress: Progress,
                 cancel: threading.Event | None) -> None:
        code, lines = self._pip_lines(step, args, progress, cancel)
        if code != 0:
            raise _pip_failed(failure, lines)


# -- helpers -----------------------------------------------------------------------------------
def _clash(name: str, existing: InstalledPlugin) -> PluginClash:
    if existing.kind == "built-in":
        return PluginClash(f"{name!r} is the name of a built-in plugin; rename the new plugin.")
    where = f"the package {existing.distribution}" if existing.kind == "pip" else existing.location
    return PluginClash(f"A plugin called {name!r} is already installed (from {where}). Remove it first with "
                       f"`parley plugins remove {name}`, or rename the new plugin.")


def _check_loaded(plugins: list[PluginSummary], what: str) -> None:
    for plugin in plugins:
        if plugin.status != "enabled":
            raise NotAPlugin(f"{plugin.name} (from {what}) failed when Parley tried it: it "
                             f"{plugin.error or 'was ' + plugin.status}. It was not installed.")
        if not plugin.hooks:
            raise NotAPlugin(f"{what} implements no Parley hooks (functions marked with @hookimpl from "
                             "desktop_app.api), so it is not a plugin; it was not installed.")


def _pip_failed(what: str, lines: list[str]) -> PipFailed:
    errors = [line for line in lines if line.strip()]
    tail = "\n".join(errors[-8:])
    return PipFailed(f"{what}; nothing was installed. pip said:\n{tail}" if tail else f"{what}; nothing was installed.")


def _check_requirement(text: str) -> str:
    """A pip requirement, checked; returns how the summary names its source."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(text)
    except InvalidRequirement as exc:
        raise NotAPlugin(f"{text!r} is not a file, a folder or a valid pip requirement. Give a .py plugin "
                         "file, a plugin folder, a wheel, or a requirement such as parley-hello==0.2.") from exc
    return f"pip requirement {text}"


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return _normalize(match.group(1)) if match else ""


def _needs(requirement: str, dist: str) -> bool:
    """Whether ``requirement`` (a Requires-Dist line) needs ``dist`` outside any extra."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return False
    if _normalize(parsed.name) != _normalize(dist):
        return False
    return parsed.marker is None or parsed.marker.evaluate({"extra": ""})


def _valid_pin(version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def _wheel_metadata(wheel: Path) -> dict[str, Any]:
    """Name, version, requirements and ``desktop_app`` entry points, read from a wheel's dist-info."""
    import configparser

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")})
        if len(dist_info) != 1:
            raise NotAPlugin(f"{wheel.name} is not a valid wheel: it has {len(dist_info)} .dist-info folders.")
        metadata = email.parser.Parser().parsestr(archive.read(f"{dist_info[0]}/METADATA").decode("utf-8"))
        entry_points: dict[str, str] = {}
        if f"{dist_info[0]}/entry_points.txt" in names:
            parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
            parser.optionxform = str  # type: ignore[assignment]
            parser.read_string(archive.read(f"{dist_info[0]}/entry_points.txt").decode("utf-8"))
            if parser.has_section(ENTRY_POINT_GROUP):
                entry_points = dict(parser.items(ENTRY_POINT_GROUP))
    return {"name": metadata["Name"], "version": metadata["Version"],
            "requires": metadata.get_all("Requires-Dist") or [], "entry_points": entry_points}


def _direct_conflicts(dist: str, version: str, requires: list[str],
                      installed: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(plugin, requirement, installed name, installed version) for each requirement an installed package fails."""
    from packaging.requirements import InvalidRequirement, Requirement

    found = []
    for text in requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        have = installed.get(_normalize(requirement.name))
        if have is not None and not requirement.specifier.contains(have["version"], prereleases=True):
            spec = f"{requirement.name}{requirement.specifier}"
            found.append((f"{dist} {version}", spec, have["name"], have["version"]))
    return found


def _pip_conflicts(lines: list[str], installed: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Read "X 1.0 depends on pluggy>=99" from pip's resolver error, for an installed package."""
    found = []
    for line in lines:
        match = re.match(r"\s*(\S+ \S+) depends on (\S.*?)\s*$", line)
        if not match:
            continue
        have = installed.get(_requirement_name(match.group(2)))
        if have is not None:
            found.append((match.group(1), match.group(2), have["name"], have["version"]))
    return found


def _conflict_message(conflicts: list[tuple[str, str, str, str]], plugin: str) -> str:
    parts = [f"{who} needs {needs}, but Parley uses {name} {have}" for who, needs, name, have in conflicts]
    lead = "" if all(who == plugin for who, *_ in conflicts) else f"{plugin} cannot be installed: "
    return (lead + "; ".join(parts) + ". Parley never changes the version of a package it runs on, so the plugin was "
            "not installed; ask its author for a version that works with these, or use another plugin.")
