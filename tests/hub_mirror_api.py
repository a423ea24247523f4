"""The hub mirror's JSON API routes (see :mod:`tests.hub_mirror`)."""

from __future__ import annotations

from typing import Any

__all__ = ["routes"]


def routes(mirror: Any) -> list:
    """The API routes for ``mirror`` (search, a repository's details and files)."""
    return []
