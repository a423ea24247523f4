"""Plugins → “Save as API profile…” in the real window (offscreen)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QInputDialog, QMessageBox  # noqa: E402


@pytest.fixture
def window(qtbot, paths):
    from desktop_app.context import build_context
    from desktop_app.ui.app import create_window

    context = build_context(paths)
    w = create_window(context, load_model=False)  # saving a profile needs no model
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()
    context.close()


def test_the_open_conversation_is_saved_as_a_profile(window, monkeypatch):
    from desktop_app_server.profiles import ProfileStore

    conversation = window.context.store.create_conversation("Handbook", meta={
        "local_docs": {"collections": ["handbook"]}, "prompt_templates": {"template": "Summarizer"}})
    window.show_conversation(conversation.id)
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("handbook-assistant", True))
    told = []
    monkeypatch.setattr(QMessageBox, "information", lambda parent, title, text: told.append(text))
    action = next(a for a in window.plugins_menu.actions() if a.text() == "Save as API profile…")
    action.trigger()
    assert told and "profile:handbook-assistant" in told[0]
    [profile] = ProfileStore(window.context.paths.data_dir / "api-profiles.json").all()
    assert profile.plugins == {"local_docs": {"collections": ["handbook"]},
                               "prompt_templates": {"template": "Summarizer"}}


def test_without_an_open_conversation_it_says_what_to_do(window, monkeypatch):
    window.new_conversation()
    asked = []
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: asked.append(1) or ("x", True))
    next(a for a in window.plugins_menu.actions() if a.text() == "Save as API profile…").trigger()
    assert not asked and "Open a conversation first" in window.error_banner.label.text()
