"""Per-model settings: what each library model remembers for itself, and which value wins.

A library entry keeps its own values in ``ModelEntry.settings`` (in ``models.json``), under
short names: ``context_length``, ``gpu_layers``, the sampling options and ``system_prompt``.
Each is checked with the same rules as the global setting it stands in for
(:data:`MODEL_SETTINGS` names it), so a bad value gets the same clear message.

Which value a model gets, first match wins:

1. the model's own setting;
2. the global setting, if the user changed it from its default;
3. for sampling, what the model's GGUF file recommends (``general.sampling.*``), or for the
   built-in model its measured preset; for the system prompt, the model's recommended prompt;
4. the global default (for the context and GPU layers: ``auto``, chosen when it loads).

Step 2 before step 3 is how Parley has always chosen (a temperature the user set is theirs
for every model); the model's own settings now come before both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from desktop_app.core.settings import Option, Settings, SettingsError

__all__ = [
    "LOAD_SETTINGS",
    "MODEL_SETTINGS",
    "ResolvedSetting",
    "model_option",
    "read_model_settings",
    "resolve_model_settings",
    "setting_name",
    "stored_settings",
    "validate_model_settings",
]

log = logging.getLogger(__name__)

#: A model's own settings: the short name in models.json -> the global option it overrides.
MODEL_SETTINGS: dict[str, str] = {
    "context_length": "model.context_length",
    "gpu_layers": "model.gpu_layers",
    "temperature": "generation.temperature",
    "top_p": "generation.top_p",
    "top_k": "generation.top_k",
    "min_p": "generation.min_p",
    "repeat_penalty": "generation.repeat_penalty",
    "max_tokens": "generation.max_tokens",
    "system_prompt": "chat.system_prompt",
}
#: The ones that only take effect when the model is loaded again.
LOAD_SETTINGS = ("context_length", "gpu_layers")

#: Where a value came from, as the model's info says it.
SOURCES = {
    "model": "this model's setting",
    "global": "your global setting",
    "file": "recommended by the model's file",
    "builtin": "the built-in model's preset",
    "default": "the default",
}


@dataclass(frozen=True)
class ResolvedSetting:
    """One setting's value for a model, and where it came from (a key of :data:`SOURCES`)."""

    name: str
    value: Any
    source: str

    @property
    def source_text(self) -> str:
        """Where the value came from, in words."""
        return SOURCES[self.source]


def setting_name(key: str) -> str:
    """The short name for ``key`` ("temperature" or "generation.temperature"); SettingsError if none."""
    if key in MODEL_SETTINGS:
        return key
    for name, full in MODEL_SETTINGS.items():
        if key == full:
            return name
    raise SettingsError(f"A model has no setting called {key!r}; its settings are {', '.join(MODEL_SETTINGS)}.")


def model_option(settings: Settings, name: str) -> Option:
    """The global option behind the model setting ``name``, renamed so its messages say ``name``."""
    return replace(settings.options[MODEL_SETTINGS[setting_name(name)]], key=setting_name(name))


def validate_model_settings(settings: Settings, values: dict[str, Any]) -> dict[str, Any]:
    """Check and convert a model's settings; raises SettingsError naming the first bad one.

    Keys may be short or full names. An empty system prompt means "not set" and is dropped.
    """
    out: dict[str, Any] = {}
    for key, raw in values.items():
        name = setting_name(key)
        value = model_option(settings, name).coerce(raw)
        if name == "system_prompt" and not str(value).strip():
            continue
        out[name] = value
    return out


def stored_settings(settings: Settings, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as models.json keeps them: special values by their word (``"auto"``)."""
    return {name: model_option(settings, name).label(value) for name, value in values.items()}


def read_model_settings(settings: Settings, stored: dict[str, Any] | None, model: str = "") -> dict[str, Any]:
    """A model's own settings as read from models.json, converted; a value that no longer passes
    (the file was edited by hand) is left out and logged, so the rest still apply."""
    out: dict[str, Any] = {}
    for key, raw in (stored or {}).items():
        try:
            out.update(validate_model_settings(settings, {key: raw}))
        except SettingsError as exc:
            log.warning("ignoring a setting of model %s: %s", model or "?", exc)
    return out


def resolve_model_settings(
    settings: Settings,
    own: dict[str, Any] | None,
    recommended: dict[str, Any] | None = None,
    *,
    builtin: bool = False,
    system_prompt: str = "",
) -> dict[str, ResolvedSetting]:
    """Every model setting's value for one model, with its source (see the module's order).

    ``own`` is the model's own settings (converted: :func:`read_model_settings`),
    ``recommended`` the sampling its file recommends (:func:`models.recommended_sampling`,
    which gives the built-in model its preset), ``system_prompt`` its recommended prompt.
    """
    own, recommended = own or {}, recommended or {}
    resolved: dict[str, ResolvedSetting] = {}
    for name, key in MODEL_SETTINGS.items():
        if name in own:
            resolved[name] = ResolvedSetting(name, own[name], "model")
        elif settings.is_changed(key):
            resolved[name] = ResolvedSetting(name, settings.get(key), "global")
        elif name in recommended:
            resolved[name] = ResolvedSetting(name, recommended[name], "builtin" if builtin else "file")
        elif name == "system_prompt" and system_prompt:
            resolved[name] = ResolvedSetting(name, system_prompt, "builtin" if builtin else "default")
        else:
            resolved[name] = ResolvedSetting(name, settings.get(key), "default")
    return resolved
