"""Profiles: a conversation's setup saved under a name, served as the model ``profile:NAME``.

A profile holds what a conversation keeps for its plugins (a template, document collections,
LoRA adapters, tools...), its system prompt and its model. A client asking for
``profile:NAME`` gets Parley's whole turn pipeline with that setup. Profiles live in one JSON
file in the plugin's data folder, written atomically; a damaged file is kept aside.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from desktop_app.api import PluginContext, atomic_write_text, move_aside

__all__ = ["PROFILE_PREFIX", "Profile", "ProfileError", "ProfileStore", "profile_from_conversation"]

PROFILE_PREFIX = "profile:"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ProfileError(ValueError):
    """A profile that cannot be saved, found or used; the message says what to do."""


@dataclass
class Profile:
    """One saved setup. ``plugins`` maps a plugin's name to its choice (as conversations keep it)."""

    name: str
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    system_prompt: str | None = None
    #: The model's library name or path; None: whatever model is loaded.
    model: str | None = None
    #: Keep each request's exchange as a conversation (off: nothing of a request stays).
    store_conversations: bool = False
    created: float = field(default_factory=time.time)

    @property
    def model_id(self) -> str:
        """The name clients ask for."""
        return PROFILE_PREFIX + self.name

    def setup(self) -> dict[str, Any]:
        """The setup ``context.run_turn`` takes."""
        return {"system_prompt": self.system_prompt, "plugins": {k: dict(v) for k, v in self.plugins.items()},
                "title": f"API: {self.name}"}

    def describe(self) -> str:
        """A few lines for people: what the profile brings."""
        lines = [f"{self.model_id}", f"  model: {self.model or 'whatever model is loaded'}",
                 f"  system prompt: {self.system_prompt if self.system_prompt is not None else '(Parley default)'}"]
        for plugin, choice in sorted(self.plugins.items()):
            lines.append(f"  {plugin}: {json.dumps(choice, ensure_ascii=False)}")
        lines.append(f"  requests stored as conversations: {'yes' if self.store_conversations else 'no'}")
        return "\n".join(lines)


def check_name(name: str) -> str:
    """A profile name, checked (letters, digits, ``.``, ``_``, ``-``; at most 64)."""
    name = (name or "").removeprefix(PROFILE_PREFIX)
    if not NAME.fullmatch(name):
        raise ProfileError(f"{name!r} cannot be a profile name: use letters, digits, '.', '_' and '-' "
                           "(at most 64, starting with a letter or digit), e.g. handbook-assistant.")
    return name


class ProfileStore:
    """The saved profiles, in ``profiles.json``; safe to use from several threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.warnings: list[str] = []

    @classmethod
    def of(cls, context: PluginContext) -> "ProfileStore":
        """The profiles of the plugin whose context this is (``api-profiles.json`` in its data folder)."""
        return cls(context.data_dir / "api-profiles.json")

    def _read(self) -> dict[str, Profile]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {p["name"]: Profile(**p) for p in raw.get("profiles", [])}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # A damaged file must not lose the profiles for good: kept aside, started afresh.
            backup = move_aside(self.path)
            self.warnings.append(f"The profiles file could not be read ({exc}); it was kept as {backup.name}.")
            return {}

    def _write(self, profiles: dict[str, Profile]) -> None:
        data = {"profiles": [asdict(p) for p in sorted(profiles.values(), key=lambda p: p.name)]}
        atomic_write_text(self.path, json.dumps(data, indent=2, ensure_ascii=False))

    def all(self) -> list[Profile]:
        """Every profile, by name."""
        with self._lock:
            return sorted(self._read().values(), key=lambda p: p.name)

    def get(self, name: str) -> Profile:
        """One profile; ProfileError naming the known ones when there is none of that name."""
        name = name.removeprefix(PROFILE_PREFIX)
        with self._lock:
            profiles = self._read()
        if name not in profiles:
            known = ", ".join(sorted(profiles)) or "none yet (parley profiles save NAME -c ID)"
            raise ProfileError(f"There is no profile called {name!r}. Profiles: {known}.")
        return profiles[name]

    def save(self, profile: Profile, *, replace: bool = False) -> Profile:
        """Save ``profile``; an existing name is refused unless ``replace``."""
        check_name(profile.name)
        with self._lock:
            profiles = self._read()
            if profile.name in profiles and not replace:
                raise ProfileError(f"There already is a profile called {profile.name!r}; pick another name, "
                                   "or replace it (--replace).")
            profiles[profile.name] = profile
            self._write(profiles)
        return profile

    def delete(self, name: str) -> Profile:
        """Delete a profile; ProfileError when there is none of that name."""
        profile = self.get(name)
        with self._lock:
            profiles = self._read()
            profiles.pop(profile.name, None)
            self._write(profiles)
        return profile


def profile_from_conversation(context: PluginContext, name: str, conversation_id: int, *,
                              store_conversations: bool = False) -> Profile:
    """A profile with a conversation's setup: its plugins' choices, system prompt and model."""
    name = check_name(name)
    try:
        conversation = context.conversations.get(conversation_id)
    except Exception:
        raise ProfileError(f"There is no conversation {conversation_id} (parley conversations list).") from None
    plugins = {k: dict(v) for k, v in conversation.meta.items() if isinstance(v, dict)}
    answers = [m for m in context.conversations.messages(conversation_id) if m.role == "assistant" and m.model]
    model = _library_name(context, answers[-1].model) if answers else None
    if model is None and context.model.path is not None:
        model = _library_name(context, context.model.path.name)
    return Profile(name, plugins, conversation.system_prompt, model, store_conversations)


def _library_name(context: PluginContext, file_name: str) -> str | None:
    """The library's name for a model file name (answers record the file), else None."""
    for entry in context.library():
        if Path(entry["path"]).name == file_name:
            return entry["name"]
    return None
