"""Typed settings declared as data, stored in one TOML file.

Each option is a :class:`Option` with a type, a default, a description and whether a
change needs a model reload. Plugins declare their own options through the
``register_settings`` hook; they live in the same file under ``[plugins.<name>]``.

A settings file that cannot be read is moved aside to ``settings.toml.corrupt-<time>``
and replaced by defaults, with a warning the UI and CLI show; Parley never refuses to
start because of it.
"""

from __future__ import annotations

import logging
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop_app.core.memory_fit import ALL_GPU_LAYERS, AUTO_CONTEXT, AUTO_CONTEXT_MAX, AUTO_GPU_LAYERS
from desktop_app.core.paths import atomic_write_text, move_aside

__all__ = ["Option", "Settings", "SettingsError", "CORE_OPTIONS"]

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A setting was given a value it cannot take; the message says which and why."""


@dataclass(frozen=True)
class Option:
    """One setting: ``key`` is ``section.name``; ``choices`` limits a str option.

    ``named`` gives words to special values, e.g. ``(("auto", 0),)``: the word is accepted
    wherever a value is (the TOML file, the command line), is written to the file instead of
    the number, and the value is exempt from ``minimum`` and ``maximum``. ``pattern`` is a regular
    expression a non-empty str value must match, and ``pattern_help`` says what that means.
    """

    key: str
    type: type
    default: Any
    description: str
    reload_model: bool = False
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    named: tuple[tuple[str, Any], ...] = ()
    pattern: str | None = None
    pattern_help: str = ""

    def coerce(self, value: Any) -> Any:
        """Return ``value`` converted to this option's type, or raise :class:`SettingsError`."""
        if isinstance(value, str):
            word = value.strip().lower()
            for name, special in self.named:
                if word == name:
                    return special
        try:
            if self.type is bool:
                if isinstance(value, str):
                    lowered = value.strip().lower()
                    if lowered in ("1", "true", "yes", "on"):
                        value = True
                    elif lowered in ("0", "false", "no", "off"):
                        value = False
                    else:
                        raise ValueError(value)
                elif not isinstance(value, bool):
                    raise ValueError(value)
            elif self.type is list:
                if isinstance(value, str):
                    value = [part.strip() for part in value.split(",") if part.strip()]
                value = list(value)
            elif self.type is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            else:
                value = self.type(value)
        except (TypeError, ValueError):
            kind = self.type.__name__
            kind = ("an " if kind[0] in "aeiou" else "a ") + kind
            if self.named:
                words = [name for name, _ in self.named]
                kind = ", ".join([kind, *words[:-1]]) + f" or {words[-1]}"
            raise SettingsError(f"{self.key} must be {kind}, not {value!r}") from None
        if any(value == special and type(value) is type(special) for _, special in self.named):
            return value
        if self.choices is not None and value not in self.choices:
            raise SettingsError(f"{self.key} must be one of {', '.join(map(str, self.choices))}")
        words = f" (or {', '.join(name for name, _ in self.named)})" if self.named else ""
        if self.pattern is not None and isinstance(value, str) and value.strip() \
                and not re.fullmatch(self.pattern, value.strip()):
            raise SettingsError(f"{self.key} must be {self.pattern_help or 'of the form ' + self.pattern}, "
                                f"not {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise SettingsError(f"{self.key} must be at least {self.minimum}{words}")
        if self.maximum is not None and value > self.maximum:
            raise SettingsError(f"{self.key} must be at most {self.maximum}{words}")
        return value

    def label(self, value: Any) -> Any:
        """``value`` as the file and the user see it: its word when it has one ("auto"), else itself."""
        for name, special in self.named:
            if value == special and type(value) is type(special):
                return name
        return value


DEFAULT_SYSTEM_PROMPT = (
    "You are Parley, a helpful assistant running privately on the user's computer. "
    "Answer clearly and concisely."
)

CORE_OPTIONS: tuple[Option, ...] = (
    Option("model.path", str, "", "GGUF model to load; empty means the built-in default model.", True),
    Option("model.backend", str, "llama.cpp", "What runs the model: llama.cpp inside Parley, or a backend "
           "a plugin adds (see `parley plugins list`).", True),
    Option("model.context_length", int, AUTO_CONTEXT, "Context window in tokens. auto = the largest that fits in "
           f"the free memory, up to the model's trained context and at most {AUTO_CONTEXT_MAX:,} (a longer one "
           "is allocated in full at every load, for chats that rarely need it); the model's info says why.",
           True, minimum=256, named=(("auto", AUTO_CONTEXT),)),
    Option("model.gpu_layers", int, AUTO_GPU_LAYERS, "Layers to offload to the GPU. auto = as many as fit in the "
           "GPU's free memory (none on a build of llama.cpp without GPU support), 0 = CPU only, all = every layer.",
           True, minimum=0, named=(("auto", AUTO_GPU_LAYERS), ("all", ALL_GPU_LAYERS))),
    Option("model.threads", int, 0, "CPU threads; 0 = all physical cores.", True, minimum=0),
    Option("model.batch_size", int, 512, "Prompt tokens evaluated per batch.", True, minimum=1),
    Option("model.parallel", int, 8, "Answers the model can write at once (the chat, programs using the API, "
           "the lab, a strategy's samples), decoded together in one batch; 1 = one at a time. They share the "
           "context, so it costs no memory.", True, minimum=1, maximum=64),
    Option("model.flash_attention", bool, True, "Use flash attention: faster, and the context takes less "
           "memory. Turn it off if a model gives garbled answers.", True),
    Option("model.mmap", bool, True, "Memory-map the model file instead of reading it all.", True),
    Option("model.seed", int, -1, "Random seed; -1 picks a new one each time.", False, minimum=-1),
    Option("chat.system_prompt", str, "", "System prompt for conversations without their own; "
           "empty = the model's recommended prompt."),
    Option("generation.temperature", float, 0.7, "Sampling temperature; 0 = always the likeliest token. Left at its default, the "
           "model's recommended value is used (see the README).", minimum=0.0),
    Option("generation.top_p", float, 0.95, "Nucleus sampling threshold.", minimum=0.0, maximum=1.0),
    Option("generation.top_k", int, 40, "Sample from the k likeliest tokens; 0 = no limit.", minimum=0),
    Option("generation.min_p", float, 0.05, "Drop tokens less likely than min_p x the likeliest.", minimum=0.0, maximum=1.0),
    Option("generation.repeat_penalty", float, 1.1, "Penalty for repeating recent tokens; 1 = none.", minimum=0.0),
    Option("generation.max_tokens", int, 1024, "Longest answer in tokens.", minimum=1),
    Option("hub.endpoint", str, "", "The model hub to search and download from, e.g. a Hugging Face mirror; "
           "empty = the HF_ENDPOINT environment variable, else https://huggingface.co.",
           pattern=r"https?://[^/\s:]+(:\d+)?(/\S*)?", pattern_help="an http:// or https:// address, or empty"),
    Option("ui.theme", str, "system", "Colour theme.", choices=("system", "light", "dark")),
    Option("ui.font_size", int, 11, "Chat font size in points.", minimum=6, maximum=40),
    Option("plugins.disabled", list, [], "Plugins that are installed but switched off."),
)


@dataclass
class Settings:
    """The current settings, loaded from and saved to one TOML file.

    ``warnings`` collects what went wrong while loading (a corrupt file, a bad value)
    so the UI or CLI can tell the user.
    """

    path: Path
    options: dict[str, Option] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _raw_plugins: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "Settings":
        """Read ``path``; a missing file gives defaults, a corrupt one is backed up and reset."""
        settings = cls(path, {o.key: o for o in CORE_OPTIONS})
        raw: dict[str, Any] = {}
        if path.exists():
            try:
                raw = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
                try:
                    where = f"it was moved to {move_aside(path)}"
                except OSError:
                    where = "it could not be moved aside"
                message = f"Settings file {path} could not be read ({exc}); {where} and defaults are used."
                log.warning(message)
                settings.warnings.append(message)
                raw = {}
        settings._apply_raw(raw)
        return settings

    def _apply_raw(self, raw: dict[str, Any]) -> None:
        for key, option in self.options.items():
            section, _, name = key.partition(".")
            table = raw.get(section)
            if isinstance(table, dict) and name in table:
                try:
                    self.values[key] = option.coerce(table[name])
                except SettingsError as exc:
                    self.warnings.append(f"{exc}; using the default {option.default!r}.")
        plugins = raw.get("plugins", {})
        if isinstance(plugins, dict):
            self._raw_plugins = {k: v for k, v in plugins.items() if isinstance(v, dict)}

    def register(self, plugin: str, options: list[Option]) -> None:
        """Add a plugin's options under ``plugins.<plugin>.<name>`` and load their saved values."""
        for option in options:
            key = f"plugins.{plugin}.{option.key}"
            full = Option(key, option.type, option.default, option.description, option.reload_model,
                          option.choices, option.minimum, option.maximum, option.named)
            self.options[key] = full
            saved = self._raw_plugins.get(plugin, {})
            if option.key in saved:
                try:
                    self.values[key] = full.coerce(saved[option.key])
                except SettingsError as exc:
                    self.warnings.append(f"{exc}; using the default {option.default!r}.")

    def get(self, key: str) -> Any:
        """Return the value of ``key`` (its default when unset)."""
        try:
            option = self.options[key]
        except KeyError:
            raise SettingsError(f"There is no setting called {key!r}.") from None
        value = self.values.get(key, option.default)
        return list(value) if isinstance(value, list) else value

    def is_changed(self, key: str) -> bool:
        """Whether the user set ``key`` to something other than its default."""
        if key not in self.options:
            raise SettingsError(f"There is no setting called {key!r}.")
        return key in self.values and self.values[key] != self.options[key].default

    def set(self, key: str, value: Any) -> None:
        """Validate and set ``key``; call :meth:`save` to write it."""
        try:
            option = self.options[key]
        except KeyError:
            raise SettingsError(f"There is no setting called {key!r}.") from None
        self.values[key] = option.coerce(value)

    def as_toml_dict(self) -> dict[str, Any]:
        """Return the values that differ from their defaults, nested as the TOML file holds them."""
        out: dict[str, Any] = {}
        # Keep settings of plugins that are not loaded right now, so disabling one loses nothing.
        for plugin, table in self._raw_plugins.items():
            out.setdefault("plugins", {})[plugin] = dict(table)
        for key in self.options:
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "plugins":
                out.get("plugins", {}).get(parts[1], {}).pop(parts[2], None)
        for key, value in self.values.items():
            option = self.options[key]
            if value == option.default:
                continue
            parts = key.split(".")
            table = out
            for part in parts[:-1]:
                table = table.setdefault(part, {})
            table[parts[-1]] = option.label(value)
        return out

    def save(self) -> None:
        """Write the settings atomically."""
        import tomli_w

        atomic_write_text(self.path, tomli_w.dumps(self.as_toml_dict()))
