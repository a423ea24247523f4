"""What the API server plugin offers other plugins (``register_services``)."""

from __future__ import annotations

from typing import Any

from desktop_app.api import ParleyError

__all__ = ["save_profile"]


def save_profile(name: str, setup: dict[str, Any], model: str | None = None) -> str:
    """``profiles.save``: save (or replace) the API profile ``name`` with a conversation setup
    (``{"system_prompt": ..., "plugins": {...}}``) and optionally a model; clients then ask for
    the model ``profile:NAME``. Returns the name; ParleyError for a bad name."""
    from desktop_app_server import state
    from desktop_app_server.profiles import Profile, ProfileError, ProfileStore

    if state.context is None:
        raise ParleyError("The API server plugin has not started yet.")
    try:
        profile = Profile(name, plugins={k: dict(v) for k, v in (setup.get("plugins") or {}).items()},
                          system_prompt=setup.get("system_prompt"), model=model)
        return ProfileStore.of(state.context).save(profile, replace=True).name
    except ProfileError as exc:
        raise ParleyError(str(exc)) from exc
