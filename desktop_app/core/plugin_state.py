"""Per-conversation choices of plugins (a template, document collections...), kept in the
conversation's metadata under the plugin's name, so a conversation continues as it started."""

from __future__ import annotations

from typing import Any

__all__ = ["conversation_choice", "remember_choice"]


def conversation_choice(store: Any, conversation_id: int | None, plugin: str) -> dict[str, Any] | None:
    """The choice ``plugin`` stored for a conversation, or None (also for a missing conversation)."""
    if conversation_id is None or store is None:
        return None
    try:
        choice = store.get_conversation(conversation_id).meta.get(plugin)
    except Exception:  # the conversation was deleted meanwhile: there is no choice
        return None
    return dict(choice) if isinstance(choice, dict) else None


def remember_choice(store: Any, conversation_id: int | None, plugin: str, choice: dict[str, Any]) -> None:
    """Store ``plugin``'s choice for a conversation (nothing to do without one)."""
    if conversation_id is None or store is None:
        return
    meta = dict(store.get_conversation(conversation_id).meta)
    meta[plugin] = dict(choice)
    store.update_conversation_meta(conversation_id, meta)
