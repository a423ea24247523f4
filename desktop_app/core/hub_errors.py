"""Errors the model hub can give a person, each saying what to do about it.

:func:`desktop_app.core.hub.hub_error` turns what ``huggingface_hub`` raises into these, so
the catalogue and the downloader speak of the same faults the same way.
"""

from __future__ import annotations

from desktop_app.core.errors import ParleyError

__all__ = ["HubError", "HubGatedError", "HubRepoNotFoundError", "HubTokenError", "HubUnreachableError"]


class HubError(ParleyError):
    """Something went wrong talking to the model hub (the base of the hub's errors)."""


class HubUnreachableError(HubError, ConnectionError):
    """The hub's address does not answer (no network, a wrong ``hub.endpoint``, offline mode)."""


class HubRepoNotFoundError(HubError, LookupError):
    """No such repository, revision or file on the hub (or a private one the token cannot see)."""


class HubGatedError(HubError, PermissionError):
    """The repository is gated: its licence must be accepted on the hub, and a token added."""


class HubTokenError(HubError, PermissionError):
    """The hub refused the token (wrong, expired, or its account has not accepted the licence)."""
