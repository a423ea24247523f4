"""Plugins → “Save as API profile…”: the open conversation's setup, served as ``profile:NAME``."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QInputDialog, QMessageBox

from desktop_app_server.profiles import ProfileError, ProfileStore, check_name, profile_from_conversation


def save_profile_dialog(window: Any, context: Any) -> str | None:
    """Ask for a name and save the open conversation's setup; returns the profile's model id."""
    conversation = window.current_conversation
    if conversation is None:
        window.show_error("Open a conversation first: a profile keeps its template, documents, adapters and tools.")
        return None
    name, ok = QInputDialog.getText(window.widget, "Save as API profile",
                                    "Profile name (programs ask for the model “profile:NAME”):",
                                    text="my-assistant")
    if not ok:
        return None
    store = ProfileStore.of(context)
    try:
        profile = profile_from_conversation(context, check_name(name), conversation)
        try:
            store.save(profile)
        except ProfileError:
            answer = QMessageBox.question(window.widget, "Save as API profile",
                                          f"There already is a profile called “{profile.name}”. Replace it?")
            if answer != QMessageBox.Yes:
                return None
            store.save(profile, replace=True)
    except ProfileError as exc:
        window.show_error(str(exc))
        return None
    QMessageBox.information(window.widget, "Save as API profile",
                            f"Saved. Programs using Parley's API can ask for the model “{profile.model_id}”.\n\n"
                            + profile.describe())
    return profile.model_id
