"""Fixtures of the documents plugin's tests: a real Chroma server for shared collections."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """One ``chroma run`` on a free loopback port for the whole session, in a temporary folder.

    Tests share it, so each uses collection names of its own (see ``shared_name``).
    """
    from tests.chroma_server import ChromaServerProcess

    with ChromaServerProcess(tmp_path_factory.mktemp("chroma-server") / "data") as server:
        yield server


@pytest.fixture
def shared_name(request):
    """A collection name no other test uses on the session's server."""
    import uuid

    return f"{request.node.name.removeprefix('test_')[:24]}-{uuid.uuid4().hex[:6]}"
