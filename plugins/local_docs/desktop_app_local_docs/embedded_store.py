"""The embedded store: chromadb inside Parley's data folder, one instance only.

``docs.db`` is the record here: a file is marked indexed only after all its vectors are stored,
and chunk ids come from the file's path and the chunk's content, so an interrupted run resumes
without duplicates.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from desktop_app_local_docs.bookkeeping import Bookkeeping, ChunkRow, FileRow
from desktop_app_local_docs.errors import DocsError
from desktop_app_local_docs.store import PreparedFile, VectorHit, import_chromadb, stall_for_test

__all__ = ["EmbeddedChroma", "EmbeddedStore"]


class EmbeddedChroma:
    """chromadb's persistent client for one folder, made on first use (chromadb is heavy)."""

    def __init__(self, path: Path):
        self.path = path
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """chromadb's persistent client (imported on first use), telemetry off."""
        with self._lock:
            if self._client is None:
                chromadb, Settings = import_chromadb("Searching documents")

                self._client = chromadb.PersistentClient(path=str(self.path),
                                                         settings=Settings(anonymized_telemetry=False))
            return self._client

    def vectors(self, collection: str, embedder: str) -> Any:
        """The chroma collection of (collection, embedder): vectors of two models never mix."""
        key = hashlib.sha1(f"{collection}\0{embedder}".encode()).hexdigest()[:24]
        return self.client.get_or_create_collection(f"parley_{key}", embedding_function=None,
                                                    metadata={"hnsw:space": "cosine"})

    def drop(self, collection: str, embedder: str) -> None:
        """Delete the vectors of (collection, embedder), if there are any."""
        try:
            self.client.delete_collection(self.vectors(collection, embedder).name)
        except Exception:
            pass


class EmbeddedStore:
    """One collection in the embedded store."""

    server = None

    def __init__(self, chroma: EmbeddedChroma, books: Bookkeeping, name: str, embedder: str):
        self.chroma = chroma
        self.books = books
        self.name = name
        self.embedder = embedder
        self._vectors: Any = None

    @property
    def vectors(self) -> Any:
        """The chroma collection (looked up once)."""
        if self._vectors is None:
            self._vectors = self.chroma.vectors(self.name, self.embedder)
        return self._vectors

    def sync(self) -> None:
        """Nothing to do: ``docs.db`` and the vectors are written together by this instance."""

    def chunk_ids_for(self, path: str, digest: str, texts: list[str]) -> list[str]:
        """Ids from the path, the position and the text (the digest is not needed: one writer)."""
        return [hashlib.sha1(f"{path}\0{i}\0{text}".encode()).hexdigest() for i, text in enumerate(texts)]

    def put_file(self, file: PreparedFile, embeddings: list[list[float]], stall: str | None = None) -> None:
        """Old chunks go first; the new ones are written before the file is marked done, so a
        run stopped half-way redoes this file (same ids) instead of leaving a mix."""
        self.put_files([file], embeddings, stall)

    def put_files(self, files: list[PreparedFile], embeddings: list[list[float]], stall: str | None = None) -> None:
        """Several files in one write to chroma and one transaction of ``docs.db``: a call to
        chroma costs about as much for eight chunks as for hundreds. As in :meth:`put_file`, the
        old chunks go first and the files are marked done once every new chunk is written."""
        if not files:
            return
        self.vectors.delete(where={"path": {"$in": [f.path for f in files]}})
        chunks = [(f.path, i, c) for f in files for i, c in zip(f.ids, f.chunks)]
        largest = self.chroma.client.get_max_batch_size()
        for start in range(0, len(chunks), largest):
            part = chunks[start:start + largest]
            self.vectors.upsert(ids=[i for _, i, _ in part], embeddings=embeddings[start:start + largest],
                                documents=[c.text for _, _, c in part],
                                metadatas=[{"path": path, "page": c.page or 0, "heading": c.heading or "",
                                            "start": c.start} for path, _, c in part])
        stall_for_test(stall)
        with self.books.transaction():
            for file in files:
                self.books.put_file(self.name, FileRow(file.path, file.size, file.mtime, file.digest, "indexed",
                                                       chunks=len(file.ids)),
                                    [ChunkRow(i, file.path, c.page, c.heading, c.start, c.text)
                                     for i, c in zip(file.ids, file.chunks)])

    def mark_skipped(self, path: str, reason: str, size: int | None, mtime: float | None, digest: str) -> None:
        """Drop the file's chunks and record the skip in ``docs.db``."""
        self.remove_file(path)
        self.books.put_file(self.name, FileRow(path, size, mtime, digest, "skipped", reason))

    def remove_file(self, path: str) -> None:
        """Delete the file's vectors and rows."""
        self.vectors.delete(where={"path": path})
        self.books.remove_file(self.name, path)

    def commit(self) -> None:
        """Nothing to announce: nobody else reads this store."""

    def query(self, vector: list[float], n: int) -> list[VectorHit]:
        """The nearest chunks (every chunk here belongs to an indexed file)."""
        count = self.vectors.count()
        if not count:
            return []
        result = self.vectors.query(query_embeddings=[vector], n_results=min(count, n),
                                    include=["documents", "metadatas", "distances"])
        return [VectorHit(cid, text, meta["path"], meta.get("page") or None, meta.get("heading") or None,
                          float(distance))
                for cid, text, meta, distance in zip(result["ids"][0], result["documents"][0],
                                                     result["metadatas"][0], result["distances"][0])]

    def chunk_ids(self) -> list[str]:
        """Every chunk id in the chroma collection."""
        return list(self.vectors.get(include=[])["ids"])

    def rename(self, new_name: str) -> None:
        """Copy the vectors to the new name's chroma collection, then delete the old one."""
        data = self.vectors.get(include=["embeddings", "documents", "metadatas"])
        if data["ids"]:
            target = self.chroma.vectors(new_name, self.embedder)
            for batch in range(0, len(data["ids"]), 1000):
                part = slice(batch, batch + 1000)
                target.upsert(ids=data["ids"][part], embeddings=data["embeddings"][part],
                              documents=data["documents"][part], metadatas=data["metadatas"][part])
        self.chroma.client.delete_collection(self.vectors.name)
        self.name, self._vectors = new_name, None

    def delete_on_server(self) -> None:
        """There is no server: say so."""
        raise DocsError(f"{self.name!r} is kept on this computer, not on a server.")

    def forget(self) -> None:
        """Delete the vectors: nobody else uses them."""
        self.chroma.drop(self.name, self.embedder)
        self._vectors = None
