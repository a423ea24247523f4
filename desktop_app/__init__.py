"""Parley: a private desktop chat app for local GGUF models, customised by plugins."""

__version__ = "0.1.0"
__all__ = ["__version__"]
