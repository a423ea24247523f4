"""Fixtures of the lab's tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def lab(paths):
    """Parley on the built-in model, loaded, in the test's own folders."""
    from desktop_app.context import build_context

    context = build_context(paths)
    context.settings.set("model.context_length", 2048)
    context.load_model(None)
    yield context
    context.close()
