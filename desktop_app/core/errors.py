"""Errors a user can meet. Each message says what went wrong and what to do about it."""

from __future__ import annotations

__all__ = ["ParleyError", "DataFolderError", "ModelFileError", "EngineError", "ModelLoadError"]


class ParleyError(Exception):
    """Base of every error Parley shows to a person."""


class ModelFileError(ParleyError, ValueError):
    """A file is not a usable GGUF model: not GGUF, truncated, or an unknown architecture."""


class EngineError(ParleyError, RuntimeError):
    """Generation cannot run (no model loaded, decode failure...)."""


class ModelLoadError(EngineError):
    """llama.cpp refused a model file; the previously loaded model, if any, is still loaded."""


class DataFolderError(ParleyError, OSError):
    """One of Parley's folders cannot be created or written (permissions, a file in the way, a full disk)."""
