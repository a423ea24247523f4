"""The errors a documents operation can meet; each message says what to do."""

from __future__ import annotations

__all__ = ["DocsError", "ServerUnavailable"]


class DocsError(ValueError):
    """A documents operation cannot be done; the message says why."""


class ServerUnavailable(DocsError):
    """A shared collection's Chroma server cannot be reached right now (nothing local was lost)."""

    def __init__(self, message: str, server: str = ""):
        super().__init__(message)
        #: The server's address.
        self.server = server
