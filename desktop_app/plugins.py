"""The plugin host: finds, loads, isolates and switches plugins on and off.

Plugins come from three places, in this order:

1. ``DEFAULT_PLUGINS``: the built-in plugins, as import strings, so a frozen build that
   lost its entry-point metadata still has them;
2. the ``desktop_app`` entry-point group: plugins installed with pip;
3. the user's plugins folder: a ``.py`` file or a package dropped into it.

``PARLEY_LOAD_PLUGINS`` (comma-separated names) limits which plugins of sources 2 and 3 are
loaded; set it to an empty string to load none. The test suite does that by default.

Isolation: each hook implementation is registered through a guard. A plugin that fails
to import, or raises inside a hook, is switched off for the session, its error recorded
for the plugins list; the hook call goes on with the other plugins.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy

from desktop_app import hookspecs
from desktop_app.core.errors import EngineError
from desktop_app.core.plugin_context import Registered
from desktop_app.core.tools import ToolRegistry
from desktop_app.core.turn import current_plugin

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "LOAD_ENV", "PluginHost", "PluginRecord", "plugin_name"]

log = logging.getLogger(__name__)

#: Built-in plugins (import strings). They are ordinary plugins and can be disabled; each is
#: named by its module without the "desktop_app_" prefix (e.g. "prompt_templates").
DEFAULT_PLUGINS: tuple[str, ...] = (
    "desktop_app_prompt_templates",
    "desktop_app_local_docs",
    "desktop_app_tools",
    "desktop_app_lora",
    "desktop_app_server",
    "desktop_app_remote",
    "desktop_app_lab",
)
ENTRY_POINT_GROUP = "desktop_app"
LOAD_ENV = "PARLEY_LOAD_PLUGINS"
_IMPL_ATTR = f"{hookspecs.PROJECT_NAME}_impl"
#: Hook arguments each plugin gets its own of: its :class:`PluginContext`, and the model as
#: its context shows it (:class:`ModelAccess`) instead of the engine.
_OWN_ARGUMENTS = {"app_started": "context", "app_closing": "context",
                  "model_loaded": "engine", "model_unloading": "engine"}


@dataclass
class PluginRecord:
    """What the host knows of one plugin. ``status`` is enabled, disabled or failed."""

    name: str
    source: str
    version: str | None = None
    status: str = "enabled"
    error: str | None = None
    location: str | None = None


class PluginHost:
    """Owns the pluggy manager and the record of every plugin it found."""

    def __init__(
        self,
        *,
        disabled: Iterable[str] = (),
        plugins_dir: Path | None = None,
        default_plugins: Iterable[str] = DEFAULT_PLUGINS,
        entry_points: Callable[[], Iterable[importlib.metadata.EntryPoint]] | None = None,
    ):
        from desktop_app.ui import hookspecs as ui_hookspecs

        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        # The window's hooks are known everywhere, so a plugin with a panel also loads in the CLI.
        self.pm.add_hookspecs(ui_hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.disabled = set(disabled)
        self.plugins_dir = plugins_dir
        self._default_plugins = tuple(default_plugins)
        self._entry_points = entry_points or (
            lambda: importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        )
        #: Makes a plugin's own context (``name -> PluginContext``); set by the app context, so
        #: ``app_started``/``app_closing`` hand each plugin its own instead of the app's.
        self.context_factory: Callable[[str], Any] | None = None

    @property
    def hook(self) -> Any:
        """The hook relay: ``host.hook.prepare_turn(turn=turn)``."""
        return self.pm.hook

    # -- discovery -------------------------------------------------------------------------
    def load_all(self) -> "PluginHost":
        """Load plugins from all three sources; safe to call once per host."""
        allow_raw = os.environ.get(LOAD_ENV)
        allow = None if allow_raw is None else {n.strip() for n in allow_raw.split(",") if n.strip()}
        for spec in self._default_plugins:
            name = plugin_name(spec)
            self._load(name, "built-in", None, spec, lambda spec=spec: importlib.import_module(spec))
        for ep in self._entry_points():
            if allow is not None and ep.name not in allow:
                continue
            dist = getattr(ep, "dist", None)
            source = f"package {dist.name}" if dist is not None else "package"
            version = dist.version if dist is not None else None
            self._load(ep.name, source, version, ep.value, ep.load)
        if self.plugins_dir is not None and self.plugins_dir.is_dir():
            for path in sorted(self.plugins_dir.iterdir()):
                name = path.stem if path.suffix == ".py" else path.name
                if name.startswith(("_", ".")) or not (
                    path.suffix == ".py" or (path / "__init__.py").is_file()
                ):
                    continue
                if allow is not None and name not in allow:
                    continue
                self._load(name, "plugins folder", None, str(path),
                           lambda path=path, name=name: _import_from_path(name, path))
        return self

    def _load(self, name: str, source: str, version: str | None, location: str,
              importer: Callable[[], Any]) -> None:
        if name in self.records:
            log.warning("plugin %s from %s ignored: a plugin of that name is already loaded", name, source)
            return
        record = PluginRecord(name, source, version, location=location)
        self.records[name] = record
        if name in self.disabled:
            record.status = "disabled"
            return
        try:
            module = importer()
        except Exception as exc:
            self._mark_failed(record, f"could not be imported: {_describe(exc)}")
            return
        if record.version is None:
            record.version = getattr(module, "__version__", None)
        self.register(module, name=name, record=record)

    def register(self, plugin: Any, *, name: str | None = None, source: str = "registered",
                 record: PluginRecord | None = None) -> str | None:
        """Register a plugin object (module, class instance or namespace) through the guard.

        Returns the plugin's name, or None if it was refused (its record says why).
        """
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        record = record or self.records.setdefault(name, PluginRecord(name, source))
        record.version = record.version or getattr(plugin, "__version__", None)
        unknown = [
            attr for attr, fn in _hook_functions(plugin)
            if not hasattr(self.pm.hook, attr) or not getattr(self.pm.hook, attr).has_spec()
        ]
        if unknown:
            self._mark_failed(record, f"implements unknown hook(s): {', '.join(unknown)}")
            return None
        guarded = self._guarded(plugin, name)
        try:
            self.pm.register(guarded, name=name)
        except Exception as exc:  # pluggy validation (bad argument names...)
            self._mark_failed(record, _describe(exc))
            return None
        # A historic hook ran during register(); its guard may have failed the plugin.
        if record.status == "failed":
            return None
        record.status = "enabled"
        return name

    def _guarded(self, plugin: Any, name: str) -> Any:
        """Return a namespace whose hook functions run under ``current_plugin`` and catch errors."""
        namespace = types.SimpleNamespace(__name__=name)
        for attr, fn in _hook_functions(plugin):
            if inspect.isgeneratorfunction(fn):  # wrappers must stay generators for pluggy
                setattr(namespace, attr, fn)
                continue
            setattr(namespace, attr, self._guard(fn, name, attr))
        return namespace

    def _guard(self, fn: Callable[..., Any], name: str, hook_name: str) -> Callable[..., Any]:
        # pluggy passes hook arguments by position, in the order of the function's parameters.
        params = list(inspect.signature(fn).parameters)
        substitute = _OWN_ARGUMENTS.get(hook_name)
        own_at = params.index(substitute) if substitute in params else None

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            record = self.records.get(name)
            if record is not None and record.status == "failed":
                return None
            if own_at is not None and self.context_factory is not None:
                own = self.context_factory(name)
                if substitute == "engine":
                    own = own.model  # a plugin sees the model through its context, not the engine
                if substitute in kwargs:
                    kwargs = {**kwargs, substitute: own}
                elif len(args) > own_at:
                    args = (*args[:own_at], own, *args[own_at + 1:])
            token = current_plugin.set(name)
            try:
                return fn(*args, **kwargs)
            except EngineError:
                # A generation failure passing through a strategy is the engine's, not the
                # plugin's: the turn reports it and the plugin stays on.
                raise
            except Exception as exc:
                log.exception("plugin %s failed in %s", name, hook_name)
                if record is not None:
                    self._mark_failed(record, f"raised in {hook_name}: {_describe(exc)}")
                return None
            finally:
                current_plugin.reset(token)

        return guarded

    def fail(self, name: str, error: str) -> None:
        """Switch plugin ``name`` off for the session because of ``error`` (shown in its record).

        For failures the host cannot see, e.g. a panel the window failed to build.
        """
        if name in self.records:
            self._mark_failed(self.records[name], error)

    def _mark_failed(self, record: PluginRecord, error: str) -> None:
        record.status = "failed"
        record.error = error
        log.warning("plugin %s switched off: %s", record.name, error)
        if self.pm.get_plugin(record.name) is not None:
            # pluggy calls a copy of the implementation list, so unregistering mid-call is safe.
            self.pm.unregister(name=record.name)

    # -- enable / disable ------------------------------------------------------------------
    def set_enabled(self, name: str, enabled: bool) -> None:
        """Switch a plugin on or off by name. The caller persists ``self.disabled`` in settings.

        Switching a plugin off takes effect at once; switching one on takes effect at the
        next start (its module may have state that only a fresh import sets up).
        """
        if name not in self.records:
            known = ", ".join(sorted(self.records)) or "none"
            raise KeyError(f"There is no plugin called {name!r}. Plugins: {known}.")
        if enabled:
            self.disabled.discard(name)
        else:
            self.disabled.add(name)
            if self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)
            if self.records[name].status == "enabled":
                self.records[name].status = "disabled"

    def collect(self, hook: str) -> list[Registered]:
        """What the enabled plugins give through a ``register_*`` hook, each with its plugin.

        The one collector for every ``register(...)`` hook: each plugin's implementation is
        called on its own, in the order the plugins were loaded (built-ins first), with a
        ``register`` that records its arguments. A plugin that raises is switched off and
        left out; what it registered before raising is dropped too.
        """
        caller = getattr(self.hook, hook, None)
        spec = getattr(caller, "spec", None)
        if spec is None or tuple(spec.argnames) != ("register",):
            raise ValueError(f"{hook!r} is not a register_* hook (one that takes only a register function).")
        found: list[Registered] = []
        # pluggy keeps implementations in registration order and calls them last-first.
        for impl in list(caller.get_hookimpls()):
            mine: list[Registered] = []

            def register(*args: Any, _plugin: str = impl.plugin_name, _mine: list = mine, **kwargs: Any) -> None:
                first = args[0] if args else next(iter(kwargs.values()), None)
                _mine.append(Registered(_plugin, first, args, kwargs))

            if "register" not in impl.argnames:
                continue  # an implementation may take fewer arguments: it has nothing to register
            impl.function(register=register)
            record = self.records.get(impl.plugin_name)
            if record is None or record.status != "failed":
                found.extend(mine)
        return found

    def tools(self) -> ToolRegistry:
        """Every tool the enabled plugins register, checked, each marked with its plugin.

        A tool with a bad name or schema, or a second tool of the same name, is left out and
        the reason is kept in ``registry.problems`` (and logged).
        """
        registry = ToolRegistry()
        for entry in self.collect("register_tools"):
            registry.add(entry.item, entry.plugin)
        for problem in registry.problems:
            log.warning("tool left out: %s", problem)
        return registry

    def backends(self) -> dict[str, tuple[str, Callable[..., Any]]]:
        """Generation backends the enabled plugins add: name -> (plugin, factory)."""
        found: dict[str, tuple[str, Callable[..., Any]]] = {}
        for entry in self.collect("register_backends"):
            name, factory = (list(entry.args) + [None, None])[:2]
            name, factory = entry.kwargs.get("name", name), entry.kwargs.get("factory", factory)
            if not isinstance(name, str) or not name or not callable(factory):
                log.warning("plugin %s registered a backend without a name or factory; ignored", entry.plugin)
            elif name in found or name == "llama.cpp":
                log.warning("plugin %s registered backend %r, which already exists; ignored", entry.plugin, name)
            else:
                found[name] = (entry.plugin, factory)
        return found

    def failed(self) -> list[PluginRecord]:
        """Plugins that failed this session."""
        return [r for r in self.records.values() if r.status == "failed"]


def plugin_name(module: str) -> str:
    """A plugin's name from its module's dotted name: ``desktop_app_tools`` is "tools",
    ``my_package.hello`` is "hello"."""
    return module.rsplit(".", 1)[-1].removeprefix("desktop_app_")


def _hook_functions(plugin: Any) -> list[tuple[str, Callable[..., Any]]]:
    found = []
    for attr in dir(plugin):
        try:
            value = getattr(plugin, attr)
        except Exception:
            continue
        if callable(value) and hasattr(value, _IMPL_ATTR):
            found.append((attr, value))
    return found


def _import_from_path(name: str, path: Path) -> types.ModuleType:
    """Import a plugin file or package from the plugins folder under a private module name."""
    module_name = f"parley_user_plugins.{name}"
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            module_name, path / "__init__.py", submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _describe(exc: BaseException) -> str:
    """One readable line: the exception and where in the plugin it happened."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
