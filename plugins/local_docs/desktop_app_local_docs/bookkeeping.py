"""``docs.db``: the collections, every file seen and the chunks' text for keyword search (FTS5).

For a collection in the embedded store this is the record itself. For a collection on a Chroma
server it is this instance's cache of the server's bookkeeping, brought up to date by
:mod:`desktop_app_local_docs.server_store`; the ``synced`` and ``unsent`` columns belong to it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

__all__ = ["Bookkeeping", "ChunkRow", "FileRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, paths TEXT NOT NULL, embedder TEXT NOT NULL DEFAULT '', created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    collection TEXT NOT NULL, path TEXT NOT NULL, size INTEGER, mtime REAL, hash TEXT,
    status TEXT NOT NULL, reason TEXT, chunks INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (collection, path)
);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(
    id UNINDEXED, collection UNINDEXED, path UNINDEXED, page UNINDEXED, heading UNINDEXED,
    start UNINDEXED, text
);
"""
#: Columns added after the first release: (table, column, declaration). Old databases get them
#: on open; a NULL server means the embedded store.
_ADDED_COLUMNS = (
    ("collections", "server", "TEXT"),     # the Chroma server's URL
    ("collections", "remote", "TEXT"),     # the collection's name on that server
    ("collections", "synced", "TEXT"),     # the server generation this cache last caught up with
    ("collections", "unsent", "INTEGER NOT NULL DEFAULT 0"),  # wrote to the server, not yet announced
    ("files", "version", "TEXT"),          # the server record's write id
)


#: From this many chunks on, keyword search leaves out terms in more than half of them.
COMMON_TERMS_FROM = 1000


@dataclass
class FileRow:
    """What is known of one file of a collection."""

    path: str
    size: int | None
    mtime: float | None
    hash: str
    status: str  # "indexed", "skipped", or (server caches only) "incomplete"
    reason: str | None = None
    chunks: int = 0
    version: str | None = None


@dataclass
class ChunkRow:
    """One chunk's text and where it comes from, for keyword search."""

    id: str
    path: str
    page: int | None
    heading: str | None
    start: int
    text: str


class Bookkeeping:
    """The ``docs.db`` database; every method is safe to call from any thread."""

    def __init__(self, path: Path):
        self._lock = threading.RLock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        for table, column, declaration in _ADDED_COLUMNS:
            existing = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in existing:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        # Each term's document count, read by keyword(); a temporary table changes nothing on disk.
        self.db.execute("CREATE VIRTUAL TABLE temp.chunk_terms USING fts5vocab(main, chunks, row)")
        self._rows: tuple[int, int] = (-1, 0)  # (total_changes when counted, rows)

    def transaction(self) -> "_Transaction":
        """``with books.transaction():`` — everything inside commits together or not at all."""
        return _Transaction(self)

    # -- collections ----------------------------------------------------------------------
    def collection(self, name: str) -> dict[str, Any] | None:
        """One collection's row: paths, embedder, server, remote; None when there is none."""
        with self._lock:
            row = self.db.execute("SELECT paths, embedder, server, remote FROM collections WHERE name=?",
                                  (name,)).fetchone()
        if row is None:
            return None
        return {"paths": json.loads(row[0]), "embedder": row[1], "server": row[2], "remote": row[3]}

    def collections(self) -> dict[str, dict[str, Any]]:
        """Every collection with its paths, embedder, server and file counts."""
        out = {}
        with self._lock:
            rows = self.db.execute("SELECT name, paths, embedder, server FROM collections ORDER BY name").fetchall()
            for name, paths, embedder, server in rows:
                counts = dict(self.db.execute(
                    "SELECT status, COUNT(*) FROM files WHERE collection=? GROUP BY status", (name,)).fetchall())
                chunks = self.db.execute("SELECT COALESCE(SUM(chunks), 0) FROM files WHERE collection=?"
                                         " AND status='indexed'", (name,)).fetchone()[0]
                out[name] = {"paths": json.loads(paths), "embedder": embedder, "files": counts.get("indexed", 0),
                             "skipped": counts.get("skipped", 0), "chunks": chunks, "server": server,
                             "incomplete": counts.get("incomplete", 0)}
        return out

    def add_collection(self, name: str, paths: list[str], *, server: str | None = None,
                       remote: str | None = None, embedder: str = "") -> None:
        """Create a collection's row, or add paths to an existing one."""
        with self._lock:
            row = self.db.execute("SELECT paths FROM collections WHERE name=?", (name,)).fetchone()
            if row is None:
                self.db.execute("INSERT INTO collections(name, paths, embedder, created, server, remote)"
                                " VALUES (?, ?, ?, ?, ?, ?)",
                                (name, json.dumps(paths), embedder, time.time(), server, remote))
            else:
                merged = list(dict.fromkeys(json.loads(row[0]) + paths))
                self.db.execute("UPDATE collections SET paths=? WHERE name=?", (json.dumps(merged), name))

    def set_embedder(self, name: str, embedder: str) -> None:
        """Record which embedder a collection's vectors come from."""
        with self._lock:
            self.db.execute("UPDATE collections SET embedder=? WHERE name=?", (embedder, name))

    def rename_collection(self, old: str, new: str) -> None:
        """Move a collection's rows to a new name (the caller checked that it is free)."""
        with self.transaction():
            self.db.execute("UPDATE collections SET name=? WHERE name=?", (new, old))
            self.db.execute("UPDATE files SET collection=? WHERE collection=?", (new, old))
            self.db.execute("UPDATE chunks SET collection=? WHERE collection=?", (new, old))

    def remove_collection(self, name: str) -> None:
        """Forget a collection and everything recorded of it."""
        with self.transaction():
            self.clear_files(name)
            self.db.execute("DELETE FROM collections WHERE name=?", (name,))

    def clear_files(self, name: str) -> None:
        """Forget every file and chunk of a collection (its row stays)."""
        with self._lock:
            self.db.execute("DELETE FROM files WHERE collection=?", (name,))
            self.db.execute("DELETE FROM chunks WHERE collection=?", (name,))

    def sync_state(self, name: str) -> tuple[str | None, bool]:
        """(the server generation the cache has caught up with, whether writes are unannounced)."""
        with self._lock:
            row = self.db.execute("SELECT synced, unsent FROM collections WHERE name=?", (name,)).fetchone()
        return (row[0], bool(row[1])) if row else (None, False)

    def set_synced(self, name: str, generation: str | None) -> None:
        """Record the server generation the cache has caught up with."""
        with self._lock:
            self.db.execute("UPDATE collections SET synced=? WHERE name=?", (generation, name))

    def set_unsent(self, name: str, unsent: bool) -> None:
        """Mark that this instance wrote to the server and has not announced it yet (or has)."""
        with self._lock:
            self.db.execute("UPDATE collections SET unsent=? WHERE name=?", (int(unsent), name))

    # -- files ----------------------------------------------------------------------------
    def files(self, name: str) -> dict[str, FileRow]:
        """Every file recorded for a collection, by path."""
        with self._lock:
            rows = self.db.execute("SELECT path, size, mtime, hash, status, reason, chunks, version FROM files"
                                   " WHERE collection=?", (name,)).fetchall()
        return {r[0]: FileRow(r[0], r[1], r[2], r[3] or "", r[4], r[5], r[6], r[7]) for r in rows}

    def skipped(self, name: str) -> dict[str, str]:
        """The collection's skip report: path -> reason."""
        with self._lock:
            return dict(self.db.execute(
                "SELECT path, reason FROM files WHERE collection=? AND status='skipped' ORDER BY path", (name,)))

    def indexed_digests(self, name: str, paths: list[str]) -> dict[str, str]:
        """path -> content digest of those of ``paths`` that are indexed."""
        out: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(paths), 500):  # SQLite's limit on parameters
                group = paths[start:start + 500]
                out.update(self.db.execute(
                    f"SELECT path, hash FROM files WHERE collection=? AND status='indexed' AND path IN "
                    f"({','.join('?' * len(group))})", (name, *group)).fetchall())
        return out

    def put_file(self, name: str, row: FileRow, chunks: Iterable[ChunkRow] = ()) -> None:
        """Record one file and replace its chunks' text, in one transaction."""
        with self.transaction():
            self.db.execute("DELETE FROM chunks WHERE collection=? AND path=?", (name, row.path))
            self.db.executemany(
                "INSERT INTO chunks(id, collection, path, page, heading, start, text) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(c.id, name, c.path, c.page, c.heading, c.start, c.text) for c in chunks])
            self.db.execute(
                "INSERT OR REPLACE INTO files(collection, path, size, mtime, hash, status, reason, chunks, version)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, row.path, row.size, row.mtime, row.hash, row.status, row.reason, row.chunks, row.version))

    def touch_file(self, name: str, path: str, size: int, mtime: float) -> None:
        """A file's size and time changed but its content did not: remember the new ones."""
        with self._lock:
            self.db.execute("UPDATE files SET size=?, mtime=? WHERE collection=? AND path=?",
                            (size, mtime, name, path))

    def remove_file(self, name: str, path: str) -> None:
        """Forget one file and its chunks."""
        with self.transaction():
            self.db.execute("DELETE FROM chunks WHERE collection=? AND path=?", (name, path))
            self.db.execute("DELETE FROM files WHERE collection=? AND path=?", (name, path))

    # -- keyword search -------------------------------------------------------------------
    def keyword(self, name: str, terms: list[str], limit: int) -> list[tuple]:
        """(id, path, page, heading, text) of the chunks holding any of ``terms``, best first (BM25).

        In an index of COMMON_TERMS_FROM chunks or more, terms found in more than half of them
        are left out: BM25 gives them no weight (FTS5 clamps their IDF to 1e-6), yet ranking
        every chunk they match cost 60 ms of a search over 10,000 chunks. When only such terms
        remain, there is no keyword hit.
        """
        with self._lock:
            changes = self.db.total_changes
            if self._rows[0] != changes:
                self._rows = (changes, self.db.execute("SELECT count(*) FROM chunks").fetchone()[0])
            rows = self._rows[1]
            unique = list(dict.fromkeys(terms))
            found = dict(self.db.execute(
                f"SELECT term, doc FROM temp.chunk_terms WHERE term IN ({','.join('?' * len(unique))})",
                unique).fetchall()) if unique else {}
            # A term not in the list as written (an accented word is kept folded) stays in. Small
            # indexes keep every term: ranking them all is cheap, and a hit also vouches for a
            # passage whose vector similarity is low (see DocsIndex.search).
            weighty = [t for t in unique if rows < COMMON_TERMS_FROM or found.get(t, 0) <= rows / 2]
            if not weighty:
                return []
            match = " OR ".join(f'"{t}"' for t in weighty)
            return self.db.execute(
                "SELECT id, path, page, heading, text FROM chunks WHERE chunks MATCH ? AND collection=?"
                " ORDER BY rank LIMIT ?", (match, name, limit)).fetchall()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self.db.close()


class _Transaction:
    """BEGIN ... COMMIT under the lock, ROLLBACK on an error; nested uses join the outer one."""

    def __init__(self, books: Bookkeeping):
        self.books = books
        self.outer = False

    def __enter__(self) -> None:
        self.books._lock.acquire()
        self.outer = not self.books.db.in_transaction
        if self.outer:
            self.books.db.execute("BEGIN")

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if self.outer:
                self.books.db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.books._lock.release()
