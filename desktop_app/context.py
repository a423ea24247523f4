"""The application context: one object built at start-up and passed to whoever needs it.

It holds the settings, the store, the model library, the engine, the plugin host and the
chat service. Nothing here imports Qt; the GUI and the CLI both build one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop_app.core.backend import missing_backend_members
from desktop_app.core.chat import ChatService
from desktop_app.core.engine import Engine, LoadConfig
from desktop_app.core.engine_switch import EngineSwitch
from desktop_app.core.errors import ModelFileError
from desktop_app.core.model_settings import read_model_settings
from desktop_app.core.models import DEFAULT_MODEL_NAME, ModelEntry, ModelLibrary, default_model_path
from desktop_app.core.paths import AppPaths
from desktop_app.core.plugin_context import AppServices, EngineRunnerSlot, PluginContext
from desktop_app.core.settings import Settings
from desktop_app.core.store import Store
from desktop_app.plugins import PluginHost

__all__ = ["AppContext", "build_context"]

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    """Everything the app is made of, created once per process."""

    paths: AppPaths
    settings: Settings
    store: Store
    models: ModelLibrary
    #: The engine: an EngineSwitch that runs each model on its backend (tests may pass another).
    engine: Any
    plugins: PluginHost
    chat: ChatService
    warnings: list[str] = field(default_factory=list)
    #: The library entry the loaded model was loaded as, by name (two entries may share one
    #: file, each with its own settings); None for a file outside the library or a backend's model.
    loaded_model_name: str | None = None
    #: Where plugins' model calls run (the window points it at its engine worker).
    engine_runner: EngineRunnerSlot = field(default_factory=EngineRunnerSlot)
    _plugin_contexts: dict[str, PluginContext] = field(default_factory=dict)
    _shared: AppServices | None = None
    _tools: Any = None
    _downloads: Any = None
    _download_listeners: list = field(default_factory=list)

    def plugin_context(self, name: str) -> PluginContext:
        """The context plugin ``name`` is given (one per plugin, made on first use).

        Built-in plugins keep their files at the top of Parley's folders, where earlier
        versions put them; every other plugin gets folders of its own under ``plugin-data``.
        """
        if name not in self._plugin_contexts:
            record = self.plugins.records.get(name)
            builtin = record is not None and record.source == "built-in"
            p = self.paths

            def own(root: Path) -> Path:
                return root if builtin else root / "plugin-data" / name

            self._plugin_contexts[name] = PluginContext(
                name, self._services(), data_dir=own(p.data_dir), cache_dir=own(p.cache_dir), log_dir=own(p.log_dir))
        return self._plugin_contexts[name]

    def _services(self) -> AppServices:
        if self._shared is None:
            self._shared = AppServices(
                settings=self.settings, store=self.store, engine=self.engine, collect=self.plugins.collect,
                tools=lambda: self.tools().tools, default_system_prompt=self.chat.default_system_prompt,
                model_file=self.model_path, library=self.library, load_model=self.load_model,
                run_turn=self.chat.answer_messages, generation_options=self.chat.default_options,
                engine_runner=self.engine_runner, downloads=lambda: self.downloads)
        return self._shared

    def library(self) -> list[dict[str, Any]]:
        """The model library, the loaded model first: ``{"name", "path", "loaded"}`` each."""
        loaded = self.engine.model_path if self.engine.loaded else None
        current = self.loaded_entry()

        def is_loaded(e: ModelEntry) -> bool:
            if current is not None:
                return e.name == current.name
            return loaded is not None and Path(e.path) == Path(loaded)

        entries = [{"name": e.name, "path": e.path, "loaded": is_loaded(e)} for e in self.models.entries()]
        entries += [{"name": m.ref, "path": m.ref, "loaded": loaded is not None and str(loaded) == m.ref,
                     "engine": m.engine} for m in self.backend_models()]
        if loaded is not None and not any(e["loaded"] for e in entries):
            entries.append({"name": Path(loaded).stem, "path": str(loaded), "loaded": True})
        return sorted(entries, key=lambda e: not e["loaded"])

    def backend_models(self) -> list[Any]:
        """The models plugin backends offer (BackendModel each), e.g. those of remote engines."""
        catalog = getattr(self.engine, "catalog", None)
        return catalog() if callable(catalog) else []

    def is_backend_model(self, name_or_path: str | None) -> bool:
        """Whether ``name_or_path`` is a plugin backend's model reference rather than a file."""
        owns = getattr(self.engine, "owns", None)
        return bool(name_or_path) and callable(owns) and owns(name_or_path)

    def tools(self) -> Any:
        """The tools the enabled plugins registered (a ToolRegistry), collected once."""
        if self._tools is None:
            self._tools = self.plugins.tools()
        return self._tools

    def load_config(self, name_or_path: str | None = None) -> LoadConfig:
        """The engine's load options for a model (None: the configured one): its own context and
        GPU layers, else the global settings ("auto" by default: chosen when it loads).

        The LoRA adapters on the current model are counted in the memory fit: plugins put
        them back on the new model when they fit it.
        """
        s = self.settings
        try:
            own = self.model_settings(self.model_entry(name_or_path))
        except ModelFileError:  # an unknown name: the load refuses it with the reason
            own = {}
        active = getattr(self.engine, "active_adapters", None) if self.engine.loaded else None
        return LoadConfig(
            context_length=own.get("context_length", s.get("model.context_length")),
            gpu_layers=own.get("gpu_layers", s.get("model.gpu_layers")),
            threads=s.get("model.threads"),
            batch_size=s.get("model.batch_size"),
            parallel=s.get("model.parallel"),
            flash_attention=s.get("model.flash_attention"),
            mmap=s.get("model.mmap"),
            seed=s.get("model.seed"),
            adapters=tuple(str(path) for path, _ in active or ()),
        )

    def model_entry(self, name_or_path: str | None = None) -> ModelEntry:
        """The library's entry for a model name or file (None: the configured model); a file not in
        the library gets an entry of its own that is not stored (:meth:`in_library` tells).
        Raises ModelFileError for a name the library does not know."""
        wanted = name_or_path or self.settings.get("model.path") or DEFAULT_MODEL_NAME
        return self.models.find(wanted) or self.models.get(wanted)

    def in_library(self, entry: ModelEntry) -> bool:
        """Whether ``entry`` is the library's (so it can keep settings of its own)."""
        return any(e.name == entry.name and e.path == entry.path for e in self.models.entries())

    def model_settings(self, entry: ModelEntry | None) -> dict[str, object]:
        """A model's own settings, checked (see :mod:`desktop_app.core.model_settings`); {} for none."""
        if entry is None or not entry.settings:
            return {}
        return read_model_settings(self.settings, entry.settings, entry.name)

    def loaded_entry(self) -> ModelEntry | None:
        """The library entry of the loaded model, as it is now (its settings may have been edited)."""
        if not self.engine.loaded or self.loaded_model_name is None:
            return None
        entry = self.models.find(self.loaded_model_name)
        loaded = self.engine.model_path
        if entry is None or entry.name != self.loaded_model_name or loaded is None or Path(entry.path) != Path(loaded):
            return None
        return entry

    def resolved_settings(self, entry: ModelEntry) -> dict[str, Any]:
        """Every model setting's value for ``entry`` and where it comes from (ResolvedSetting each):
        its own, the global settings, or what its file recommends. Reads the file's header."""
        from desktop_app.core.model_settings import resolve_model_settings
        from desktop_app.core.models import check_gguf_file, recommended_sampling

        path = Path(entry.path)
        recommended = recommended_sampling(check_gguf_file(path).scalars, path)
        builtin = entry.builtin or _is_builtin_file(path)
        return resolve_model_settings(self.settings, self.model_settings(entry), recommended, builtin=builtin,
                                      system_prompt=self.chat.default_system_prompt(path))

    def plan_load(self, name_or_path: str | None = None) -> Any:
        """What loading a model (None: the configured one) would choose now (a memory_fit.LoadPlan),
        from its header and its settings, without loading it."""
        from desktop_app.core.memory_fit import adapter_headers, available_memory, available_vram, plan_load
        from desktop_app.core.models import check_gguf_file

        config = self.load_config(name_or_path)
        return plan_load(check_gguf_file(self.model_entry(name_or_path).path), context_length=config.context_length,
                         gpu_layers=config.gpu_layers, available=available_memory(), vram=available_vram(),
                         batch_size=config.batch_size, flash_attention=config.flash_attention,
                         adapters=adapter_headers(config.adapters))

    def loaded_model_settings(self) -> dict[str, object]:
        """The loaded model's own settings ({} outside the library); each turn asks again."""
        return self.model_settings(self.loaded_entry())

    def model_path(self, name_or_path: str | None = None) -> Path:
        """Resolve a model name or path; None means the configured model, else the built-in one."""
        wanted = name_or_path or self.settings.get("model.path")
        if not wanted:
            return default_model_path()
        return Path(self.models.get(wanted).path)

    def load_model(self, name_or_path: str | None = None) -> list[str]:
        """Load a model into the engine (see :meth:`Engine.load`) and tell the plugins.

        Plugins hear ``model_unloading`` only once the new file passed its checks, and
        ``model_loaded`` whenever a model is loaded afterwards, even the previous one again
        after a failed switch.
        """
        from desktop_app.core.models import check_gguf_file

        wanted = name_or_path or self.settings.get("model.path")
        entry = None
        if self.is_backend_model(wanted):
            path: Any = wanted  # the backend checks it (a remote engine asks its server)
        else:
            path = self.model_path(name_or_path)
            check_gguf_file(path)  # refuse a bad file before anyone lets go of the current model
            entry = self.model_entry(name_or_path)
        config = self.load_config(name_or_path)
        if self.engine.loaded:
            self.plugins.hook.model_unloading(engine=self.engine)
        try:
            warnings = self.engine.load(path, config)
            self.loaded_model_name = entry.name if entry is not None and self.in_library(entry) else None
            return warnings
        finally:
            if self.engine.loaded:
                self.plugins.hook.model_loaded(engine=self.engine)

    def hub(self) -> Any:
        """The model hub the settings point at (``hub.endpoint``), with the keyring's token."""
        from desktop_app.core.hub import Hub

        return Hub.from_settings(self.settings)

    @property
    def downloads(self) -> Any:
        """The app's one :class:`~desktop_app.core.downloads.DownloadManager` (made on first use;
        downloads left unfinished last time come back paused). New downloads go to the hub the
        settings name now; the token is read from the keyring on the download's own thread, when
        it starts, so one saved after a refusal is used by Retry and the window never waits on it."""
        from desktop_app.core.downloads import DownloadManager
        from desktop_app.core.errors import ParleyError
        from desktop_app.core.hub import DEFAULT_ENDPOINT, hub_endpoint

        try:
            endpoint = hub_endpoint(self.settings.get("hub.endpoint"))
        except ParleyError:  # a malformed setting: the Models window says so; nothing can be found there
            endpoint = DEFAULT_ENDPOINT
        if self._downloads is None:
            self._downloads = DownloadManager(self.paths, self.models, endpoint=endpoint, token=self._hub_token,
                                              on_change=self._download_changed, installers=self._installers())
        else:
            self._downloads.set_hub(endpoint, self._hub_token)
        return self._downloads

    def _hub_token(self) -> str | None:
        """The access token for the hub the settings name (the keyring's; may block: not on the GUI thread)."""
        return self.hub().token

    def _installers(self) -> dict[str, Any]:
        """What plugins install from the hub (``register_download_installers``), by kind."""
        installers: dict[str, Any] = {}
        for entry in self.plugins.collect("register_download_installers"):
            kind, install = (entry.args + (None, None))[:2]
            if not isinstance(kind, str) or not callable(install) or kind == "model" or kind in installers:
                log.warning("download installer %r from the plugin %s left out", kind, entry.plugin)
                continue
            installers[kind] = install
        return installers

    def add_download_listener(self, listener: Any) -> None:
        """Call ``listener(status)`` on every download change (from the downloads' threads)."""
        self._download_listeners.append(listener)

    def remove_download_listener(self, listener: Any) -> None:
        """Stop calling ``listener``."""
        if listener in self._download_listeners:
            self._download_listeners.remove(listener)

    def _download_changed(self, status: Any) -> None:
        for listener in list(self._download_listeners):
            try:
                listener(status)
            except Exception:  # one broken listener must not stop a download's reports
                log.exception("a download listener failed")

    def close(self) -> None:
        """Let plugins stop their work, free the model and close the store."""
        self.plugins.hook.app_closing(context=self)
        if self._downloads is not None:
            self._downloads.close()  # running downloads keep their bytes and come back paused
        self.engine.cancel()
        if self.engine.loaded:
            self.plugins.hook.model_unloading(engine=self.engine)
        self.engine.unload()
        self.store.close()


def _is_builtin_file(path: Path) -> bool:
    try:
        return path == default_model_path()
    except ModelFileError:
        return False


def build_context(paths: AppPaths | None = None, *, host: PluginHost | None = None,
                  settings: Settings | None = None, engine: Any = None) -> AppContext:
    """Create folders, read settings, open the store and load the plugins (not the model).

    Pass ``host`` to reuse a plugin host that is already loaded (the CLI loads it first
    because plugins add subcommands), ``engine`` to use that engine instead of the one the
    settings ask for (tests use a scripted one).
    """
    paths = (paths or AppPaths.default()).ensure()
    settings = settings or Settings.load(paths.settings_file)
    if host is None:
        host = PluginHost(disabled=settings.get("plugins.disabled"), plugins_dir=paths.plugins_dir)
        host.load_all()
    _register_plugin_settings(host, settings)
    store = Store(paths.database_file)
    warnings = list(settings.warnings)
    engine = engine if engine is not None else _make_engine(host, settings, warnings)
    chat = ChatService(store, engine, settings, host.hook)
    context = AppContext(paths, settings, store, ModelLibrary(paths), engine, host, chat, warnings)
    host.context_factory = context.plugin_context
    chat.tools = lambda: context.tools().tools
    chat.model_settings = context.loaded_model_settings
    host.hook.app_started.call_historic(kwargs={"context": context})
    return context


def _make_engine(host: PluginHost, settings: Settings, warnings: list[str]) -> EngineSwitch:
    """The engine: the backend the settings ask for by default (llama.cpp when it is that,
    missing, or fails to start), and the plugins' backends for the models they own."""
    backends = host.backends()
    return EngineSwitch(_default_backend(backends, settings, warnings), backends, settings)


def _default_backend(backends: dict[str, tuple[str, Any]], settings: Settings, warnings: list[str]) -> Any:
    wanted = settings.get("model.backend") or "llama.cpp"
    if wanted == "llama.cpp":
        return Engine()
    if wanted not in backends:
        known = ", ".join(["llama.cpp", *sorted(backends)])
        warnings.append(f"The backend {wanted!r} is not available (backends: {known}); using llama.cpp.")
        return Engine()
    plugin, factory = backends[wanted]
    try:
        backend = factory(settings)
    except Exception as exc:
        log.exception("backend %s failed to start", wanted)
        warnings.append(f"The backend {wanted!r} of plugin {plugin} failed to start ({exc}); using llama.cpp.")
        return Engine()
    missing = missing_backend_members(backend)
    if missing:
        warnings.append(f"The backend {wanted!r} of plugin {plugin} lacks {', '.join(missing)} "
                        "(see desktop_app.api.Backend); using llama.cpp.")
        return Engine()
    return backend


def _register_plugin_settings(host: PluginHost, settings: Settings) -> None:
    """Ask each plugin for its settings schema and add it under its own name."""
    for name in list(host.records):
        plugin = host.pm.get_plugin(name)
        fn = getattr(plugin, "register_settings", None) if plugin is not None else None
        if fn is None:
            continue
        fn(lambda options, name=name: settings.register(name, list(options)))
