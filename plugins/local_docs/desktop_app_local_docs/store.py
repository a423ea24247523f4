"""Where a collection's vectors live: the interface both stores implement.

:class:`~desktop_app_local_docs.embedded_store.EmbeddedStore` keeps them in chromadb inside
Parley's data folder; :class:`~desktop_app_local_docs.server_store.ServerStore` on a Chroma
server that several Parley instances share. :class:`~desktop_app_local_docs.index.DocsIndex`
walks the folders, chunks and embeds, and hands each file to the collection's store.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["CollectionStore", "PreparedFile", "VectorHit", "STALL_FOR_TEST_ENV", "import_chromadb", "stall_for_test"]

#: Test-only, never set otherwise: when this environment variable names a file, a run creates
#: that file and stalls half-way through storing its second batch (its files' vectors written,
#: their rows not), so a test can kill it at exactly that point, however fast the machine.
STALL_FOR_TEST_ENV = "PARLEY_DOCS_TEST_STALL_FILE"


@dataclass
class PreparedFile:
    """One file read and chunked, waiting to be embedded and stored."""

    path: str
    size: int
    mtime: float
    digest: str
    chunks: list[Any]  # desktop_app_local_docs.chunking.Chunk
    ids: list[str]


@dataclass
class VectorHit:
    """One nearest neighbour from the vector store."""

    id: str
    text: str
    path: str
    page: int | None
    heading: str | None
    distance: float


class CollectionStore(Protocol):
    """One collection's vectors, plus keeping ``docs.db`` in step with them.

    Every method may raise :class:`~desktop_app_local_docs.errors.DocsError` with a message for
    the user (e.g. the server cannot be reached).
    """

    #: The server's URL, or None for the embedded store.
    server: str | None

    def sync(self) -> None:
        """Bring the local bookkeeping and keyword index up to date with the vectors."""

    def chunk_ids_for(self, path: str, digest: str, texts: list[str]) -> list[str]:
        """The ids a file's chunks are stored under (the same input always gives the same ids)."""

    def put_file(self, file: PreparedFile, embeddings: list[list[float]], stall: str | None = None) -> None:
        """Store one file's chunks, then mark it indexed; a run stopped in between redoes the file."""

    def put_files(self, files: list[PreparedFile], embeddings: list[list[float]], stall: str | None = None) -> None:
        """:meth:`put_file` for several files (``embeddings``: their chunks' in order), as one
        write where the store can: a run stopped in between redoes them all."""

    def mark_skipped(self, path: str, reason: str, size: int | None, mtime: float | None, digest: str) -> None:
        """Record that a file is not indexed, and why (any chunks it had are removed)."""

    def remove_file(self, path: str) -> None:
        """Forget a file and its chunks."""

    def commit(self) -> None:
        """Make what this instance wrote visible to the other instances sharing the store."""

    def query(self, vector: list[float], n: int) -> list[VectorHit]:
        """The ``n`` nearest chunks to ``vector`` among the files the bookkeeping calls indexed."""

    def chunk_ids(self) -> list[str]:
        """Every chunk id in the store (for checks)."""

    def rename(self, new_name: str) -> None:
        """Follow a rename of the collection (its rows in ``docs.db`` are moved by the caller)."""

    def forget(self) -> None:
        """The collection is being removed from this instance: drop what only this instance uses."""

    def delete_on_server(self) -> None:
        """Delete the collection on its server, for every instance (a DocsError when embedded)."""


def import_chromadb(purpose: str) -> tuple[Any, Any]:
    """chromadb and its Settings, imported on first use with telemetry off; DocsError saying
    what ``purpose`` needs when it is not installed."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    try:
        import chromadb
        from chromadb.config import Settings
    except ImportError as exc:
        from desktop_app_local_docs.errors import DocsError

        raise DocsError(f"{purpose} needs chromadb, which is not installed here ({exc}). "
                        "Install Parley with pip (see the README).") from exc
    return chromadb, Settings


def stall_for_test(marker: str | None) -> None:
    """Test-only, see :data:`STALL_FOR_TEST_ENV`: announce the stall, then wait to be killed."""
    if marker:
        Path(marker).touch()
        time.sleep(3600)


def stall_marker(files_stored_before: int) -> str | None:
    """The stall marker for this batch: only a batch after the first one stalls."""
    return os.environ.get(STALL_FOR_TEST_ENV) if files_stored_before else None
