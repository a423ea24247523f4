"""Collections of the user's folders, indexed incrementally into chromadb (vectors) and SQLite
FTS5 (keywords), searched with both and fused.

Bookkeeping lives in ``docs.db`` next to chroma's folder: the collections, every file seen
(size, modification time, content hash, indexed or skipped with the reason) and the chunks'
text for keyword search. A file is marked done only after all its chunks are stored, and
chunk ids are derived from the file's path and the chunk's content, so an interrupted run
resumes without duplicates and a run with nothing changed does no work.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from desktop_app_local_docs.chunking import chunk_sections
from desktop_app_local_docs.embedder import Embedder
from desktop_app_local_docs.extract import SUPPORTED_SUFFIXES, SkipFile, extract

__all__ = ["DocsIndex", "DocsError", "Hit", "IndexReport", "Progress"]

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
RRF_K = 60
STOP_WORDS = frozenset("""
a about after all also an and any are as at be been before but by can could did do does for from had has
have how i if in into is it its just may me more most my no not of on or our out over so some such than that
the their them then there these they this those to too under up us was we were what when where which who whom
why will with would you your tell give show explain describe please know find much many does did doing
""".split())
#: Chunks of several files are embedded together (sorted by length, in full batches: faster)
#: once this many chunks or files are waiting; a stopped run redoes at most that much.
FLUSH_CHUNKS = 512
FLUSH_FILES = 64
#: Test-only, never set otherwise: when this environment variable names a file, a run creates
#: that file and stalls half-way through storing its second batch (one file's vectors written,
#: its row not), so a test can kill it at exactly that point, however fast the machine.
STALL_FOR_TEST_ENV = "PARLEY_DOCS_TEST_STALL_FILE"


class DocsError(ValueError):
    """A documents operation cannot be done; the message says why."""


@dataclass
class Progress:
    """Where indexing is: files and chunks done, speed and estimated time left."""

    files_done: int
    files_total: int
    chunks: int
    current: str
    rate: float
    eta: float | None


@dataclass
class IndexReport:
    """What one indexing run did."""

    indexed: int = 0
    unchanged: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    removed: int = 0
    chunks: int = 0
    seconds: float = 0.0
    cancelled: bool = False


@dataclass
class Hit:
    """A retrieved passage and where it comes from."""

    id: str
    text: str
    path: str
    page: int | None
    heading: str | None
    score: float
    similarity: float | None = None


class DocsIndex:
    """The user's document collections and their search index."""

    def __init__(self, root: Path, embedder: Embedder, *, chunk_tokens: int = 240, overlap: int = 40,
                 max_bytes: int = 50_000_000):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self.db = sqlite3.connect(str(root / "docs.db"), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        self._client: Any = None

    # -- chroma --------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """chromadb's persistent client (imported on first use), telemetry off."""
        if self._client is None:
            os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
            try:
                import chromadb
                from chromadb.config import Settings
            except ImportError as exc:
                raise DocsError(f"Searching documents needs chromadb, which is not installed here ({exc}). "
                                "Install Parley with pip (see the README).") from exc

            self._client = chromadb.PersistentClient(path=str(self.root / "chroma"),
                                                     settings=Settings(anonymized_telemetry=False))
        return self._client

    def _vectors(self, collection: str, embedder: str | None = None) -> Any:
        # One chroma collection per (collection, embedder): vectors of two models never mix.
        key = hashlib.sha1(f"{collection}\0{embedder or self.embedder.name}".encode()).hexdigest()[:24]
        return self.client.get_or_create_collection(f"parley_{key}", embedding_function=None,
                                                    metadata={"hnsw:space": "cosine"})

    # -- collections ----------------------------------------------------------------------
    def add_collection(self, name: str, paths: list[str]) -> None:
        """Create a collection, or add folders and files to an existing one."""
        name = name.strip()
        if not name:
            raise DocsError("A collection needs a name.")
        resolved = [str(Path(p).expanduser().resolve()) for p in paths]
        for p in resolved:
            if not Path(p).exists():
                raise DocsError(f"{p} does not exist.")
        with self._lock:
            row = self.db.execute("SELECT paths FROM collections WHERE name=?", (name,)).fetchone()
            if row is None:
                self.db.execute("INSERT INTO collections(name, paths, created) VALUES (?, ?, ?)",
                                (name, json.dumps(resolved), time.time()))
            else:
                merged = list(dict.fromkeys(json.loads(row[0]) + resolved))
                self.db.execute("UPDATE collections SET paths=? WHERE name=?", (json.dumps(merged), name))

    def collections(self) -> dict[str, dict[str, Any]]:
        """Every collection with its paths and counts."""
        out = {}
        with self._lock:
            for name, paths, embedder in self.db.execute("SELECT name, paths, embedder FROM collections ORDER BY name"):
                counts = dict(self.db.execute(
                    "SELECT status, COUNT(*) FROM files WHERE collection=? GROUP BY status", (name,)).fetchall())
                chunks = self.db.execute("SELECT COALESCE(SUM(chunks), 0) FROM files WHERE collection=?",
                                         (name,)).fetchone()[0]
                out[name] = {"paths": json.loads(paths), "embedder": embedder, "files": counts.get("indexed", 0),
                             "skipped": counts.get("skipped", 0), "chunks": chunks}
        return out

    def _require(self, name: str) -> dict[str, Any]:
        found = self.collections().get(name)
        if found is None:
            names = ", ".join(self.collections()) or "none"
            raise DocsError(f"There is no collection called {name!r}. Collections: {names}.")
        return found

    def rename_collection(self, old: str, new: str) -> None:
        """Rename a collection (its index is kept)."""
        new = new.strip()
        info = self._require(old)
        if not new:
            raise DocsError("A collection needs a name.")
        if new in self.collections():
            raise DocsError(f"There is already a collection called {new!r}.")
        self.add_collection(new, info["paths"])
        with self._lock:
            self.db.execute("UPDATE files SET collection=? WHERE collection=?", (new, old))
            self.db.execute("UPDATE chunks SET collection=? WHERE collection=?", (new, old))
            self.db.execute("UPDATE collections SET embedder=? WHERE name=?", (info["embedder"], new))
            self.db.execute("DELETE FROM collections WHERE name=?", (old,))
        old_vectors = self._vectors(old, info["embedder"] or None)
        data = old_vectors.get(include=["embeddings", "documents", "metadatas"])
        if data["ids"]:
            new_vectors = self._vectors(new, info["embedder"] or None)
            for batch in range(0, len(data["ids"]), 1000):
                part = slice(batch, batch + 1000)
                new_vectors.upsert(ids=data["ids"][part], embeddings=data["embeddings"][part],
                                   documents=data["documents"][part], metadatas=data["metadatas"][part])
        self.client.delete_collection(old_vectors.name)

    def remove_collection(self, name: str) -> None:
        """Forget a collection and its index (the user's files are never touched)."""
        info = self._require(name)
        with self._lock:
            self.db.execute("DELETE FROM files WHERE collection=?", (name,))
            self.db.execute("DELETE FROM chunks WHERE collection=?", (name,))
            self.db.execute("DELETE FROM collections WHERE name=?", (name,))
        try:
            self.client.delete_collection(self._vectors(name, info["embedder"] or None).name)
        except Exception:
            pass

    def skipped(self, name: str) -> dict[str, str]:
        """The collection's skip report: path -> reason."""
        with self._lock:
            return dict(self.db.execute(
                "SELECT path, reason FROM files WHERE collection=? AND status='skipped' ORDER BY path", (name,)))

    # -- indexing -------------------------------------------------------------------------
    def _walk(self, paths: list[str], report: IndexReport, unreachable: list[str]) -> Iterator[Path]:
        """Every file under ``paths``; folders that cannot be read go to ``unreachable``."""
        seen: set[tuple[int, int]] = set()
        for root in paths:
            top = Path(root)
            if top.is_file():
                yield top
                continue
            if not top.is_dir():
                # A drive that is not mounted right now: keep its index rather than deleting it.
                unreachable.append(str(top))
                report.skipped[str(top)] = "folder not found (kept its index; is a drive unplugged?)"
                continue

            def on_error(error: OSError) -> None:
                unreachable.append(str(error.filename))
                report.skipped[str(error.filename)] = f"folder cannot be read ({error.strerror})"

            # followlinks=True reaches linked folders; the (device, inode) set stops symlink loops.
            for folder, dirs, files in os.walk(top, onerror=on_error, followlinks=True):
                try:
                    st = os.stat(folder)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    dirs[:] = []
                    continue
                seen.add((st.st_dev, st.st_ino))
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for file in sorted(files):
                    if not file.startswith("."):
                        yield Path(folder) / file

    def index(self, name: str, progress: Callable[[Progress], None] | None = None,
              cancel: threading.Event | None = None) -> IndexReport:
        """Bring a collection's index up to date with its folders; only changed files are re-embedded."""
        info = self._require(name)
        report = IndexReport()
        started = time.perf_counter()
        if info["embedder"] and info["embedder"] != self.embedder.name:
            self._drop_index(name, info["embedder"])  # a new embedder: everything is re-embedded
        with self._lock:
            self.db.execute("UPDATE collections SET embedder=? WHERE name=?", (self.embedder.name, name))
        unreachable: list[str] = []
        files = list(self._walk(info["paths"], report, unreachable))
        known = {row[0]: row for row in self.db.execute(
            "SELECT path, size, mtime, hash, status FROM files WHERE collection=?", (name,))}
        vectors = self._vectors(name)
        present = set()
        pending: list[tuple] = []
        pending_chunks = 0
        for number, path in enumerate(files, 1):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                break
            key = str(path)
            present.add(key)
            try:
                st = path.stat()
            except OSError as exc:
                self._remove_file(name, key, vectors)
                self._mark_skipped(name, key, f"cannot be read ({exc.strerror})", report)
                continue
            if not stat.S_ISREG(st.st_mode) or path.suffix.lower() not in SUPPORTED_SUFFIXES:
                # Pipes and devices would block a read; other types are not read at all.
                reason = "not a regular file" if not stat.S_ISREG(st.st_mode) else \
                    f"unsupported file type {path.suffix.lower() or '(none)'}"
                if known.get(key, (None,) * 5)[4] != "skipped":
                    self._remove_file(name, key, vectors)
                    self._mark_skipped(name, key, reason, report, st)
                else:
                    report.unchanged += 1
                continue
            old = known.get(key)
            if old is not None and old[1] == st.st_size and old[2] == st.st_mtime:
                report.unchanged += 1
            else:
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size <= self.max_bytes else ""
                except OSError as exc:
                    self._remove_file(name, key, vectors)
                    self._mark_skipped(name, key, f"cannot be read ({exc.strerror})", report)
                    continue
                if old is not None and digest and old[3] == digest and old[4] == "indexed":
                    with self._lock:
                        self.db.execute("UPDATE files SET size=?, mtime=? WHERE collection=? AND path=?",
                                        (st.st_size, st.st_mtime, name, key))
                    report.unchanged += 1
                else:
                    prepared = self._prepare_file(name, path, st, digest, vectors, report)
                    if prepared is not None:
                        pending.append(prepared)
                        pending_chunks += len(prepared[3])
                    if pending_chunks >= FLUSH_CHUNKS or len(pending) >= FLUSH_FILES:
                        self._flush(name, pending, vectors, report)
                        pending_chunks = 0
            if progress is not None:
                elapsed = time.perf_counter() - started
                rate = report.chunks / elapsed if elapsed > 0 else 0.0
                eta = elapsed / number * (len(files) - number) if number else None
                progress(Progress(number, len(files), report.chunks, key, rate, eta))
        self._flush(name, pending, vectors, report)
        if not report.cancelled:
            for path in set(known) - present:
                if any(path == u or path.startswith(u.rstrip(os.sep) + os.sep) for u in unreachable):
                    continue  # not seen because its folder could not be read, not because it is gone
                self._remove_file(name, path, vectors)
                report.removed += 1
        report.seconds = time.perf_counter() - started
        return report

    def _prepare_file(self, name: str, path: Path, st: os.stat_result, digest: str, vectors: Any,
                      report: IndexReport) -> tuple | None:
        """Read and chunk one file; None when it is skipped (recorded with the reason)."""
        key = str(path)
        try:
            sections = extract(path, self.max_bytes)
            max_tokens = min(self.chunk_tokens, self.embedder.max_tokens - 2)
            chunks = chunk_sections(sections, self.embedder.tokenizer, max_tokens, self.overlap)
        except SkipFile as exc:
            self._remove_file(name, key, vectors)
            self._mark_skipped(name, key, str(exc), report, st, digest)
            return None
        except Exception as exc:  # a damaged file must not stop the whole run
            self._remove_file(name, key, vectors)
            self._mark_skipped(name, key, f"could not be read ({type(exc).__name__}: {exc})", report, st, digest)
            return None
        ids = [hashlib.sha1(f"{key}\0{i}\0{c.text}".encode()).hexdigest() for i, c in enumerate(chunks)]
        return key, st, digest, chunks, ids

    def _flush(self, name: str, pending: list[tuple], vectors: Any, report: IndexReport) -> None:
        """Embed the chunks of several files in one go (bigger batches run faster), then store each file."""
        if not pending:
            return
        texts = [c.text for _, _, _, chunks, _ in pending for c in chunks]
        embeddings = self.embedder.encode(texts) if texts else []
        stall_marker = os.environ.get(STALL_FOR_TEST_ENV) if report.indexed else None
        position = 0
        for key, st, digest, chunks, ids in pending:
            vectors_of_file = embeddings[position:position + len(chunks)]
            position += len(chunks)
            # Old chunks of this file go first; the new ones are written before the file is marked
            # done, so a run stopped half-way redoes this file (same ids) instead of leaving a mix.
            self._remove_file(name, key, vectors)
            if ids:
                vectors.upsert(ids=ids, embeddings=vectors_of_file, documents=[c.text for c in chunks],
                               metadatas=[{"path": key, "page": c.page or 0, "heading": c.heading or "",
                                           "start": c.start} for c in chunks])
            if stall_marker:  # test-only, see STALL_FOR_TEST_ENV
                Path(stall_marker).touch()
                time.sleep(3600)
            with self._lock:
                self.db.execute("BEGIN")
                self.db.executemany(
                    "INSERT INTO chunks(id, collection, path, page, heading, start, text) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(i, name, key, c.page, c.heading, c.start, c.text) for i, c in zip(ids, chunks)])
                self.db.execute(
                    "INSERT OR REPLACE INTO files(collection, path, size, mtime, hash, status, reason, chunks)"
                    " VALUES (?, ?, ?, ?, ?, 'indexed', NULL, ?)",
                    (name, key, st.st_size, st.st_mtime, digest, len(ids)))
                self.db.execute("COMMIT")
            report.indexed += 1
            report.chunks += len(ids)
        pending.clear()

    def _mark_skipped(self, name: str, key: str, reason: str, report: IndexReport,
                      st: os.stat_result | None = None, digest: str = "") -> None:
        report.skipped[key] = reason
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO files(collection, path, size, mtime, hash, status, reason, chunks)"
                " VALUES (?, ?, ?, ?, ?, 'skipped', ?, 0)",
                (name, key, st.st_size if st else None, st.st_mtime if st else None, digest, reason))

    def _remove_file(self, name: str, key: str, vectors: Any) -> None:
        vectors.delete(where={"path": key})
        with self._lock:
            self.db.execute("DELETE FROM chunks WHERE collection=? AND path=?", (name, key))
            self.db.execute("DELETE FROM files WHERE collection=? AND path=?", (name, key))

    def _drop_index(self, name: str, embedder: str) -> None:
        try:
            self.client.delete_collection(self._vectors(name, embedder).name)
        except Exception:
            pass
        with self._lock:
            self.db.execute("DELETE FROM chunks WHERE collection=?", (name,))
            self.db.execute("DELETE FROM files WHERE collection=?", (name,))

    def chunk_ids(self, name: str) -> list[str]:
        """Every chunk id of a collection in the vector store (used to check for duplicates)."""
        return list(self._vectors(name).get(include=[])["ids"])

    # -- search ---------------------------------------------------------------------------
    def search(self, names: list[str], query: str, k: int = 5, min_similarity: float = 0.2) -> list[Hit]:
        """Hybrid search: vector similarity and BM25 keyword rank, fused by reciprocal rank.

        Passages whose vector similarity is below ``min_similarity`` count only when the
        keyword search also found them. Results are de-duplicated and at most two come from
        the same file, so several documents get a say.
        """
        if not query.strip():
            return []
        [vector] = self.embedder.encode([query])
        fused: dict[str, float] = {}
        hits: dict[str, Hit] = {}
        keyword_ids: set[str] = set()
        for name in names:
            self._require(name)
            vectors = self._vectors(name)
            count = vectors.count()
            if count:
                result = vectors.query(query_embeddings=[vector], n_results=min(count, k * 4),
                                       include=["documents", "metadatas", "distances"])
                for rank, (cid, text, meta, distance) in enumerate(zip(
                        result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0])):
                    similarity = 1.0 - float(distance)
                    fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
                    hits[cid] = Hit(cid, text, meta["path"], meta.get("page") or None, meta.get("heading") or None,
                                    0.0, similarity)
            for rank, row in enumerate(self._keyword(name, query, k * 4)):
                cid, path, page, heading, text = row
                keyword_ids.add(cid)
                fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
                hits.setdefault(cid, Hit(cid, text, path, page or None, heading or None, 0.0, None))
        ranked = sorted(fused, key=fused.get, reverse=True)
        out: list[Hit] = []
        per_file: dict[str, int] = {}
        seen_text: set[str] = set()
        for cid in ranked:
            hit = hits[cid]
            relevant = (hit.similarity is not None and hit.similarity >= min_similarity) or cid in keyword_ids
            if not relevant or hit.text in seen_text or per_file.get(hit.path, 0) >= 2:
                continue
            hit.score = fused[cid]
            seen_text.add(hit.text)
            per_file[hit.path] = per_file.get(hit.path, 0) + 1
            out.append(hit)
            if len(out) == k:
                break
        return out

    def _keyword(self, name: str, query: str, limit: int) -> list[tuple]:
        # Only words that carry meaning: "the" or "what" would match nearly every passage.
        terms = [t for t in "".join(c if c.isalnum() else " " for c in query.lower()).split()
                 if len(t) > 2 and t not in STOP_WORDS]
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        with self._lock:
            return self.db.execute(
                "SELECT id, path, page, heading, text FROM chunks WHERE chunks MATCH ? AND collection=?"
                " ORDER BY bm25(chunks) LIMIT ?", (match, name, limit)).fetchall()

    def close(self) -> None:
        """Close the bookkeeping database."""
        with self._lock:
            self.db.close()
