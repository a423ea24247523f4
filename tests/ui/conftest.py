"""Window fixtures: a real window on the offscreen platform, with the real SmolLM2 model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def make_window(qtbot, paths):
    """Build (and later close) windows on the same data folders, like restarting the app."""
    from desktop_app.context import build_context
    from desktop_app.ui.app import create_window

    made = []

    def make(*, settings: dict | None = None, wait_model: bool = True):
        context = build_context(paths)
        for key, value in {"generation.temperature": 0.0, "generation.max_tokens": 48,
                           "model.context_length": 2048, **(settings or {})}.items():
            context.settings.set(key, value)
        context.settings.save()
        window = create_window(context)
        qtbot.addWidget(window)
        window.show()
        made.append(window)
        if wait_model:
            qtbot.waitUntil(lambda: context.engine.loaded and not window.model_loading, timeout=60_000)
        return window

    yield make
    for window in made:
        if window.isVisible():
            window.close()
        window.context.close()


@pytest.fixture
def window(make_window):
    """A window with the default model loaded."""
    return make_window()


def send(qtbot, window, text: str, timeout: int = 60_000):
    """Type ``text`` into the composer, press Enter, wait for the answer to be stored."""
    from PySide6.QtCore import Qt

    window.composer.edit.setFocus()
    qtbot.keyClicks(window.composer.edit, text)
    with qtbot.waitSignal(window.answer_finished, timeout=timeout) as blocker:
        qtbot.keyClick(window.composer.edit, Qt.Key_Return)
    return blocker.args[0]
