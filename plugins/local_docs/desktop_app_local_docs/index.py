"""Collections of the user's folders, indexed incrementally into vectors (chromadb, embedded or on
a Chroma server) and keywords (SQLite FTS5), searched with both and fused.

Bookkeeping lives in ``docs.db`` next to chroma's folder (:mod:`.bookkeeping`): the collections,
every file seen (size, modification time, content hash, indexed or skipped with the reason) and
the chunks' text for keyword search. Where the vectors live is the collection's store
(:mod:`.embedded_store`, :mod:`.server_store`). A file is marked done only after all its chunks
are stored, and chunk ids are derived from the file's path and the chunk's content, so an
interrupted run resumes without duplicates and a run with nothing changed does no work.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from desktop_app_local_docs.bookkeeping import Bookkeeping
from desktop_app_local_docs.chunking import chunk_sections
from desktop_app_local_docs.embedded_store import EmbeddedChroma, EmbeddedStore
from desktop_app_local_docs.embedder import Embedder
from desktop_app_local_docs.errors import DocsError, ServerUnavailable
from desktop_app_local_docs.extract import SUPPORTED_SUFFIXES, SkipFile, extract
from desktop_app_local_docs.store import STALL_FOR_TEST_ENV, CollectionStore, PreparedFile, stall_marker

__all__ = ["DocsIndex", "DocsError", "ServerUnavailable", "Hit", "IndexReport", "Progress", "STALL_FOR_TEST_ENV"]

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
        self.books = Bookkeeping(root / "docs.db")
        self.db = self.books.db  # for checks and benchmarks that read the tables directly
        self.chroma = EmbeddedChroma(root / "chroma")
        self._servers: dict[str, Any] = {}
        self._stores: dict[tuple, CollectionStore] = {}
        self._lock = threading.Lock()

    # -- stores ---------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """chromadb's persistent client of the embedded store (imported on first use)."""
        return self.chroma.client

    def _vectors(self, collection: str, embedder: str | None = None) -> Any:
        """The embedded chroma collection of ``collection`` (used by benchmarks)."""
        return self.chroma.vectors(collection, embedder or self.embedder.name)

    def _server(self, url: str) -> Any:
        from desktop_app_local_docs.server_store import ChromaServer

        with self._lock:
            if url not in self._servers:
                self._servers[url] = ChromaServer(url)
            return self._servers[url]

    def store(self, name: str) -> CollectionStore:
        """The store holding a collection's vectors (embedded or on its server)."""
        info = self._require(name)
        # The current embedder's vectors: after a change of embedder the next index run re-embeds.
        embedder = self.embedder.name
        key = (name, info["server"], info["remote"], embedder)
        with self._lock:
            found = self._stores.get(key)
        if found is not None:
            return found
        if info["server"]:
            from desktop_app_local_docs.server_store import ServerStore

            made: CollectionStore = ServerStore(self._server(info["server"]), self.books, name, info["remote"],
                                                self.embedder.name)
        else:
            made = EmbeddedStore(self.chroma, self.books, name, embedder)
        with self._lock:
            return self._stores.setdefault(key, made)

    def _forget_stores(self, name: str) -> None:
        with self._lock:
            for key in [k for k in self._stores if k[0] == name]:
                del self._stores[key]

    # -- collections ----------------------------------------------------------------------
    def add_collection(self, name: str, paths: list[str], server: str | None = None) -> None:
        """Create a collection, or add folders and files to an existing one.

        With ``server`` (a Chroma server's URL) the collection lives on that server and is shared
        with every Parley that adds the same name there; it needs no folders of its own then
        (this instance only searches it). Without, it lives in the embedded store.
        """
        name = name.strip()
        if not name:
            raise DocsError("A collection needs a name.")
        resolved = [str(Path(p).expanduser().resolve()) for p in paths]
        for p in resolved:
            if not Path(p).exists():
                raise DocsError(f"{p} does not exist.")
        existing = self.books.collection(name)
        if server is not None:
            from desktop_app_local_docs.server_store import ServerStore, normalize_server_url, remote_name

            url = normalize_server_url(server)
            if existing is not None and existing["server"] != url:
                where = f"on {existing['server']}" if existing["server"] else "on this computer"
                raise DocsError(f"There is already a collection called {name!r}, kept {where}. Choose another "
                                "name, or remove that one first.")
            if existing is None:
                # Reach the server before anything is recorded: a wrong address leaves nothing behind.
                store = ServerStore(self._server(url), self.books, name, remote_name(name), self.embedder.name)
                store.open(create=True, shared_name=name)
                self.books.add_collection(name, resolved, server=url, remote=store.remote,
                                          embedder=self.embedder.name)
                return
        elif not resolved:
            raise DocsError("Give at least one folder or file for the collection.")
        self.books.add_collection(name, resolved)

    def collections(self) -> dict[str, dict[str, Any]]:
        """Every collection with its paths, counts and server (None: the embedded store).

        Never talks to a server: a shared collection's counts are as of its last sync.
        """
        return self.books.collections()

    def _require(self, name: str) -> dict[str, Any]:
        found = self.books.collection(name)
        if found is None:
            names = ", ".join(self.collections()) or "none"
            raise DocsError(f"There is no collection called {name!r}. Collections: {names}.")
        return found

    def sync(self, name: str) -> None:
        """Catch a shared collection's local cache up with its server (nothing to do when embedded)."""
        self.store(name).sync()

    def rename_collection(self, old: str, new: str) -> None:
        """Rename a collection (its index is kept; a shared one keeps its name on the server)."""
        new = new.strip()
        self._require(old)
        if not new:
            raise DocsError("A collection needs a name.")
        if new in self.collections():
            raise DocsError(f"There is already a collection called {new!r}.")
        store = self.store(old)
        self.books.rename_collection(old, new)
        self._forget_stores(old)
        store.rename(new)

    def remove_collection(self, name: str, on_server: bool = False) -> None:
        """Forget a collection and its index (the user's files are never touched).

        A shared collection stays on its server for the other instances unless ``on_server``.
        """
        info = self._require(name)
        store = self.store(name)
        if on_server:
            store.delete_on_server()
        self.books.remove_collection(name)
        self._forget_stores(name)
        try:
            store.forget()
            if not info["server"] and info["embedder"] and info["embedder"] != self.embedder.name:
                self.chroma.drop(name, info["embedder"])  # vectors of an embedder used before
        except Exception:
            pass  # the collection is forgotten either way; leftover vectors only take space

    def skipped(self, name: str) -> dict[str, str]:
        """The collection's skip report: path -> reason."""
        return self.books.skipped(name)

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
        """Bring a collection's index up to date with its folders; only changed files are re-embedded.

        A shared collection is caught up with its server first; this instance then adds, updates
        and removes only files under its own folders (other instances' files are theirs).
        """
        info = self._require(name)
        if not info["server"] and info["embedder"] and info["embedder"] != self.embedder.name:
            self._drop_index(name, info["embedder"])  # a new embedder: everything is re-embedded
        store = self.store(name)
        store.sync()  # a shared collection's server is reached here, or the run stops with why
        self.books.set_embedder(name, self.embedder.name)
        try:
            return self._index(name, info["paths"], store, progress, cancel)
        finally:
            try:
                store.commit()
            except DocsError:
                pass  # the run's own error says why; the next sync announces what was written

    def _index(self, name: str, roots: list[str], store: CollectionStore,
               progress: Callable[[Progress], None] | None, cancel: threading.Event | None) -> IndexReport:
        report = IndexReport()
        started = time.perf_counter()
        unreachable: list[str] = []
        files = list(self._walk(roots, report, unreachable))
        known = self.books.files(name)
        present: set[str] = set()
        pending: list[PreparedFile] = []
        with _Embedding(self.embedder) as embedding:
            try:
                self._index_files(name, store, files, known, present, pending, report, embedding, started,
                                  progress, cancel)
            finally:
                # What was read is kept, cancelled or not: the last batches are embedded and stored.
                self._flush(store, pending, report, embedding)
                self._store_embedded(store, embedding.finish(), report)
        if not report.cancelled:
            for path in set(known) - present:
                if not _under_any(path, roots):
                    continue  # another instance's folder, on a shared collection: theirs to keep up to date
                if _under_any(path, unreachable):
                    continue  # not seen because its folder could not be read, not because it is gone
                store.remove_file(path)
                report.removed += 1
        report.seconds = time.perf_counter() - started
        return report

    def _index_files(self, name: str, store: CollectionStore, files: list[Path], known: dict[str, Any],
                     present: set[str], pending: list[PreparedFile], report: IndexReport,
                     embedding: _Embedding, started: float, progress: Callable[[Progress], None] | None,
                     cancel: threading.Event | None) -> None:
        """Check, read and chunk each file; batches of chunks go to the embedding thread."""
        pending_chunks = 0
        for number, path in enumerate(files, 1):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                return
            key = str(path)
            present.add(key)
            old = known.get(key)
            try:
                st = path.stat()
            except OSError as exc:
                self._skip(store, key, f"cannot be read ({exc.strerror})", report)
                continue
            if not stat.S_ISREG(st.st_mode) or path.suffix.lower() not in SUPPORTED_SUFFIXES:
                # Pipes and devices would block a read; other types are not read at all.
                reason = "not a regular file" if not stat.S_ISREG(st.st_mode) else \
                    f"unsupported file type {path.suffix.lower() or '(none)'}"
                if old is None or old.status != "skipped" or old.reason != reason:
                    self._skip(store, key, reason, report, st)
                else:
                    report.unchanged += 1
                continue
            if old is not None and old.status != "incomplete" and old.size == st.st_size and old.mtime == st.st_mtime:
                report.unchanged += 1
            else:
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size <= self.max_bytes else ""
                except OSError as exc:
                    self._skip(store, key, f"cannot be read ({exc.strerror})", report)
                    continue
                if old is not None and digest and old.hash == digest and old.status == "indexed":
                    self.books.touch_file(name, key, st.st_size, st.st_mtime)
                    report.unchanged += 1
                else:
                    prepared = self._prepare_file(store, path, st, digest, report)
                    if prepared is not None:
                        pending.append(prepared)
                        pending_chunks += len(prepared.chunks)
                    if pending_chunks >= FLUSH_CHUNKS or len(pending) >= FLUSH_FILES:
                        self._flush(store, pending, report, embedding)
                        pending_chunks = 0
            if progress is not None:
                elapsed = time.perf_counter() - started
                rate = report.chunks / elapsed if elapsed > 0 else 0.0
                eta = elapsed / number * (len(files) - number) if number else None
                progress(Progress(number, len(files), report.chunks, key, rate, eta))

    def _prepare_file(self, store: CollectionStore, path: Path, st: os.stat_result, digest: str,
                      report: IndexReport) -> PreparedFile | None:
        """Read and chunk one file; None when it is skipped (recorded with the reason)."""
        key = str(path)
        try:
            sections = extract(path, self.max_bytes)
            max_tokens = min(self.chunk_tokens, self.embedder.max_tokens - 2)
            chunks = chunk_sections(sections, self.embedder.tokenizer, max_tokens, self.overlap)
        except SkipFile as exc:
            self._skip(store, key, str(exc), report, st, digest)
            return None
        except Exception as exc:  # a damaged file must not stop the whole run
            self._skip(store, key, f"could not be read ({type(exc).__name__}: {exc})", report, st, digest)
            return None
        ids = store.chunk_ids_for(key, digest, [c.text for c in chunks])
        return PreparedFile(key, st.st_size, st.st_mtime, digest, chunks, ids)

    def _flush(self, store: CollectionStore, pending: list[PreparedFile], report: IndexReport,
               embedding: _Embedding) -> None:
        """Embed the chunks of several files in one go (bigger batches run faster) on the embedding
        thread, and store the batch before it meanwhile: the next files are read and chunked
        while the model embeds these."""
        if pending:
            batch = list(pending)
            pending.clear()
            texts = [c.text for file in batch for c in file.chunks]
            embedding.start(batch, texts)
        self._store_embedded(store, embedding.previous(), report)

    def _store_embedded(self, store: CollectionStore, done: tuple[list[PreparedFile], Future] | None,
                        report: IndexReport) -> None:
        """Store each file of an embedded batch (waits for its embeddings)."""
        if done is None:
            return
        files, future = done
        embeddings = future.result()
        store.put_files(files, embeddings, stall=stall_marker(report.indexed))
        report.indexed += len(files)
        report.chunks += sum(len(file.ids) for file in files)
        store.commit()

    def _skip(self, store: CollectionStore, key: str, reason: str, report: IndexReport,
              st: os.stat_result | None = None, digest: str = "") -> None:
        report.skipped[key] = reason
        store.mark_skipped(key, reason, st.st_size if st else None, st.st_mtime if st else None, digest)

    def _drop_index(self, name: str, embedder: str) -> None:
        self.chroma.drop(name, embedder)
        self.books.clear_files(name)
        self._forget_stores(name)

    def chunk_ids(self, name: str) -> list[str]:
        """Every chunk id of a collection in the vector store (used to check for duplicates)."""
        return self.store(name).chunk_ids()

    # -- search ---------------------------------------------------------------------------
    def search(self, names: list[str], query: str, k: int = 5, min_similarity: float = 0.2) -> list[Hit]:
        """Hybrid search: vector similarity and BM25 keyword rank, fused by reciprocal rank.

        Passages whose vector similarity is below ``min_similarity`` count only when the
        keyword search also found them. Results are de-duplicated and at most two come from
        the same file, so several documents get a say. A shared collection is caught up with
        its server first (one request when nothing changed).
        """
        if not query.strip():
            return []
        stores = [self.store(name) for name in names]
        [vector] = self.embedder.encode([query])
        fused: dict[str, float] = {}
        hits: dict[str, Hit] = {}
        keyword_ids: set[str] = set()
        for name, store in zip(names, stores):
            store.sync()
            for rank, found in enumerate(store.query(vector, k * 4)):
                fused[found.id] = fused.get(found.id, 0.0) + 1.0 / (RRF_K + rank + 1)
                hits[found.id] = Hit(found.id, found.text, found.path, found.page, found.heading, 0.0,
                                     1.0 - found.distance)
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
        return self.books.keyword(name, terms, limit)

    def close(self) -> None:
        """Close the bookkeeping database."""
        self.books.close()


class _Embedding:
    """The embedding thread of one indexing run: one batch embeds while the run reads the next.

    ``start`` hands a batch over; the batch it displaces (embedded or nearly) comes back from
    ``previous`` to be stored, and the last one from ``finish``.
    """

    def __init__(self, embedder: Any):
        self._embedder = embedder
        self._pool: ThreadPoolExecutor | None = None
        self._running: tuple[list[PreparedFile], Future] | None = None
        self._displaced: tuple[list[PreparedFile], Future] | None = None

    def __enter__(self) -> _Embedding:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def start(self, files: list[PreparedFile], texts: list[str]) -> None:
        """Embed ``texts`` (the chunks of ``files``, in order) on the embedding thread."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="parley-embed")
        future: Future = self._pool.submit(self._embedder.encode, texts) if texts else _done([])
        self._displaced, self._running = self._running, (files, future)

    def previous(self) -> tuple[list[PreparedFile], Future] | None:
        """The batch started before the last one, not stored yet (once)."""
        displaced, self._displaced = self._displaced, None
        return displaced

    def finish(self) -> tuple[list[PreparedFile], Future] | None:
        """The last batch started, not stored yet (once)."""
        running, self._running = self._running, None
        return running


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _under_any(path: str, roots: list[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or inside one of them."""
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

