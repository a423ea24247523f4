"""A collection shared on a Chroma server (``chroma run``), used by several Parley instances.

The server is the source of truth. On it, a shared collection is two chroma collections:

- the chunks (``parley-<name>-<hash>``): vectors, text and ``{path, digest, page, heading,
  start}``; chunk ids include the file's content digest, so two versions of a file never share
  an id. Its metadata names the collection and its embedder, and holds the **generation**: a
  random token every writer replaces after it has finished writing;
- the file records (the same name + ``-files``): one per file seen, ``{path, size, mtime, digest,
  status, reason, chunks, version}``, where ``version`` is a fresh id for every write.

Each instance's ``docs.db`` holds a cache of the records and of the chunks' text (for keyword
search), and the generation it last caught up with. Before it searches or indexes, an instance
reads the generation (one request); when it differs, it fetches the records and, for files whose
version changed, their chunks (:meth:`ServerStore.sync`).

A writer stores a file in this order: its chunks, then its record, then deletes the chunks of
other versions of that file; after a batch of files it writes a new generation. So a record
exists only once its chunks do, and any change is followed by a generation the readers have not
seen. A reader reads the generation *before* the records, so a change that lands while it reads
is caught by the next sync. Readers trust only chunks whose (path, digest) matches a record they
hold, and count them: when two writers store different versions of one file at the same moment,
the loser's delete can take the winner's chunks; the file is then "incomplete" — left out of
search, never mixed — and the next index run of an instance that has the file stores it again.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit

from desktop_app_local_docs.bookkeeping import Bookkeeping, ChunkRow, FileRow
from desktop_app_local_docs.errors import DocsError, ServerUnavailable
from desktop_app_local_docs.store import PreparedFile, VectorHit, import_chromadb, stall_for_test

__all__ = ["ChromaServer", "ServerStore", "normalize_server_url", "remote_name"]

GENERATION = "parley:generation"
NAME = "parley:name"
EMBEDDER = "parley:embedder"
LAYOUT = "parley:layout"
#: The layout described above; a server collection of another layout is refused, not misread.
LAYOUT_VERSION = 1
#: Requests go in pieces: chroma refuses batches above its limit (5461 on a default server).
BATCH = 1000
#: Paths per ``$in`` filter when the chunks of changed files are fetched.
PATHS_PER_FETCH = 100
#: Seconds: a server that accepts the connection but never answers must not hang a thread forever.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0


def normalize_server_url(url: str) -> str:
    """``scheme://host:port`` for a Chroma server's address, or a DocsError saying what is wrong."""
    text = (url or "").strip()
    example = "like http://127.0.0.1:8000"
    if not text:
        raise DocsError(f"Give the Chroma server's address, {example}.")
    if "://" not in text:
        raise DocsError(f"{text!r} has no scheme: give the Chroma server's address with http:// or https://, "
                        f"{example}.")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DocsError(f"{text!r} is not an http:// or https:// address; a Chroma server is reached over "
                        f"HTTP, {example}.")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise DocsError(f"{text!r} has a port that is not a number from 1 to 65535.") from None
    if not parts.hostname:
        raise DocsError(f"{text!r} names no host; give the server's address, {example}.")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise DocsError(f"{text!r} has more than a host and port; give only the server's address, {example}.")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}:{port}"


def remote_name(collection: str) -> str:
    """The chunks' collection name on the server: readable, and valid for chroma (3-512 of
    ``[a-zA-Z0-9._-]``, starting and ending with a letter or digit) whatever the user typed."""
    slug = re.sub(r"[^a-z0-9]+", "-", collection.lower()).strip("-")[:40] or "collection"
    return f"parley-{slug}-{hashlib.sha1(collection.encode()).hexdigest()[:12]}"


class ChromaServer:
    """chromadb's ``HttpClient`` for one server, made on first use and kept while it works."""

    def __init__(self, url: str):
        self.url = normalize_server_url(url)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The connected client; ServerUnavailable when the server cannot be reached."""
        with self._lock:
            if self._client is None:
                chromadb, Settings = import_chromadb("Shared collections")
                parts = urlsplit(self.url)
                self._heartbeat()
                with self.talking():
                    client = chromadb.HttpClient(host=parts.hostname, port=parts.port,
                                                 ssl=parts.scheme == "https",
                                                 settings=Settings(anonymized_telemetry=False))
                self._set_timeouts(client)
                self._client = client
            return self._client

    def _heartbeat(self) -> None:
        # chromadb's client makes its first requests without any timeout (see _set_timeouts), and
        # its errors do not say much; one bounded request first gives a clear answer either way.
        import httpx

        with self.talking():
            response = httpx.get(f"{self.url}/api/v2/heartbeat", timeout=httpx.Timeout(READ_TIMEOUT,
                                                                                       connect=CONNECT_TIMEOUT))
        try:
            ok = response.status_code == 200 and "nanosecond heartbeat" in response.json()
        except ValueError:
            ok = False
        if not ok:
            raise DocsError(f"{self.url} answered, but not as a Chroma server would (HTTP {response.status_code} "
                            "to /api/v2/heartbeat). Check the address and that the server is chroma run "
                            "(chromadb 1.x).")

    @staticmethod
    def _set_timeouts(client: Any) -> None:
        # chromadb's HTTP client waits forever (httpx timeout=None) and has no setting for it;
        # its httpx session is the only place to bound a wait on a server that stopped answering.
        session = getattr(getattr(client, "_server", None), "_session", None)
        if session is not None:
            import httpx

            session.timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)

    @contextmanager
    def talking(self) -> Iterator[None]:
        """Turn what a request to the server can raise into a DocsError a person can act on."""
        try:
            yield
        except DocsError:
            raise
        except Exception as exc:
            raise self.explain(exc) from exc

    def explain(self, exc: BaseException) -> DocsError:
        """The DocsError for an exception raised while talking to the server."""
        import httpx

        text = str(exc) or type(exc).__name__
        if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)) or "Could not connect" in text:
            parts = urlsplit(self.url)
            return ServerUnavailable(
                f"The Chroma server at {self.url} cannot be reached ({text}). Start it "
                f"(chroma run --path FOLDER --host {parts.hostname} --port {parts.port}) or check the address. "
                "Nothing stored here is lost; the collection works again once the server is back.", self.url)
        try:
            from chromadb.errors import ChromaError
        except ImportError:  # pragma: no cover - chromadb is there if a client was made
            ChromaError = ()  # noqa: N806
        if isinstance(exc, ChromaError):
            return DocsError(f"The Chroma server at {self.url} refused the request: {text}")
        return DocsError(f"{self.url} answered, but not as a Chroma server would ({type(exc).__name__}: {text}). "
                         "Check the address.")


class ServerStore:
    """One shared collection on a Chroma server, with this instance's cache in ``docs.db``."""

    def __init__(self, server: ChromaServer, books: Bookkeeping, name: str, remote: str, embedder: str):
        self.connection = server
        self.server = server.url
        self.books = books
        self.name = name
        self.remote = remote
        self.embedder = embedder
        self._chunks: Any = None
        self._records: Any = None
        self._meta: dict[str, Any] = {}
        self._lock = threading.RLock()

    # -- the server's collections -----------------------------------------------------------
    def open(self, *, create: bool, shared_name: str | None = None) -> None:
        """Find the collection on the server (or create it), and check that this instance can use it."""
        client = self.connection.client
        from chromadb.errors import NotFoundError

        with self._lock, self.connection.talking():
            try:
                chunks = client.get_collection(self.remote)
            except NotFoundError:
                if not create:
                    raise self._gone() from None
                chunks = self._create(client, shared_name or self.name)
            self._check(chunks.metadata or {})
            self._chunks, self._meta = chunks, dict(chunks.metadata or {})
            self._records = client.get_or_create_collection(f"{self.remote}-files", embedding_function=None,
                                                            metadata={"parley:of": self.remote})

    def _create(self, client: Any, shared_name: str) -> Any:
        metadata = {NAME: shared_name, EMBEDDER: self.embedder, LAYOUT: LAYOUT_VERSION,
                    GENERATION: uuid.uuid4().hex, "parley:updated": time.time()}
        try:
            return client.create_collection(self.remote, embedding_function=None, metadata=metadata,
                                            configuration={"hnsw": {"space": "cosine"}})
        except Exception as exc:
            if "already exists" not in str(exc):
                raise
            return client.get_collection(self.remote)  # another instance created it a moment ago

    def _check(self, metadata: dict[str, Any]) -> None:
        if metadata.get(LAYOUT) != LAYOUT_VERSION:
            raise DocsError(f"The collection {self.remote!r} on {self.server} was not made by this version of "
                            "Parley's documents plugin; it is left alone.")
        theirs = metadata.get(EMBEDDER)
        if theirs != self.embedder:
            raise DocsError(f"The shared collection {self.name!r} on {self.server} is indexed with the embedder "
                            f"{theirs!r}, and this Parley uses {self.embedder!r}; vectors of two models cannot be "
                            f"searched together. Set the local_docs embedder setting to {theirs!r} to use it.")

    def _gone(self) -> DocsError:
        return DocsError(f"The shared collection {self.name!r} is no longer on {self.server} (someone removed it "
                         f"there). Forget it here with: parley docs remove {self.name}")

    def _refresh(self) -> dict[str, Any]:
        """Read the collection's metadata again (one request): it carries the generation."""
        from chromadb.errors import NotFoundError

        if self._chunks is None:
            self.open(create=False)
            return self._meta
        with self.connection.talking():
            try:
                chunks = self.connection.client.get_collection(self.remote)
            except NotFoundError:
                self._chunks = None
                raise self._gone() from None
        if chunks.id != self._chunks.id:  # removed and made again on the server: start over
            self.open(create=False)
            self.books.set_synced(self.name, None)
        self._chunks, self._meta = chunks, dict(chunks.metadata or {})
        self._check(self._meta)
        return self._meta

    # -- catching up ------------------------------------------------------------------------
    def sync(self) -> None:
        """Bring the local cache up to date with the server when its generation changed."""
        with self._lock:
            meta = self._refresh()
            synced, unsent = self.books.sync_state(self.name)
            if unsent:  # this instance wrote and stopped before saying so (killed, or the server went away)
                self._announce()
                meta = self._meta
            generation = meta.get(GENERATION)
            if generation is not None and generation == synced:
                return
            local = self.books.files(self.name)
            with self.connection.talking():
                records = self._all_records()
                # Only files whose record changed since this cache last saw them are fetched.
                wanted = [r for r in records.values() if r.status == "indexed" and not (
                    r.path in local and local[r.path].version == r.version and local[r.path].status == "indexed")]
                texts = self._fetch_chunks([r.path for r in wanted])
            self._apply(local, records, wanted, texts, generation)

    def _all_records(self) -> dict[str, FileRow]:
        out: dict[str, FileRow] = {}
        offset = 0
        while True:
            page = self._records.get(include=["metadatas"], limit=BATCH, offset=offset)
            for meta in page["metadatas"]:
                out[meta["path"]] = _row_of_record(meta)
            if len(page["ids"]) < BATCH:
                return out
            offset += BATCH

    def _apply(self, local: dict[str, FileRow], records: dict[str, FileRow], wanted: list[FileRow],
               texts: dict[str, list[tuple[ChunkRow, str]]], generation: str | None) -> None:
        """Make the cache match the records, in one transaction with the generation it matches."""
        with self.books.transaction():
            for path in set(local) - set(records):
                self.books.remove_file(self.name, path)
            for record in records.values():
                mine = local.get(record.path)
                if record.status != "indexed" and (mine is None or mine.version != record.version):
                    self.books.put_file(self.name, record)
            for record in wanted:
                chunks = [c for c in texts.get(record.path, []) if c[1] == record.hash]
                if len(chunks) == record.chunks:
                    self.books.put_file(self.name, record, [c[0] for c in chunks])
                else:  # a lost race between two writers of this file; see the module docstring
                    self.books.put_file(self.name, FileRow(record.path, record.size, record.mtime, record.hash,
                                                           "incomplete", "its chunks on the server are incomplete",
                                                           0, record.version))
            self.books.set_synced(self.name, generation)

    def _fetch_chunks(self, paths: list[str]) -> dict[str, list[tuple[ChunkRow, str]]]:
        """(chunk, digest) of every chunk on the server of these files, by path."""
        out: dict[str, list[tuple[ChunkRow, str]]] = {}
        for start in range(0, len(paths), PATHS_PER_FETCH):
            group = paths[start:start + PATHS_PER_FETCH]
            offset = 0
            while True:
                page = self._chunks.get(where={"path": {"$in": group}}, include=["documents", "metadatas"],
                                        limit=BATCH, offset=offset)
                for cid, text, meta in zip(page["ids"], page["documents"], page["metadatas"]):
                    row = ChunkRow(cid, meta["path"], meta.get("page") or None, meta.get("heading") or None,
                                   int(meta.get("start") or 0), text)
                    out.setdefault(meta["path"], []).append((row, meta.get("digest", "")))
                if len(page["ids"]) < BATCH:
                    break
                offset += BATCH
        return out

    # -- writing ----------------------------------------------------------------------------
    def _writing(self) -> None:
        # Recorded before the first write, so a run that never announces (killed, server gone)
        # announces at its next sync: other instances would otherwise never look.
        if self._chunks is None:
            self.open(create=False)
        if not self.books.sync_state(self.name)[1]:
            self.books.set_unsent(self.name, True)

    def _announce(self) -> None:
        """Write a new generation: the other instances catch up at their next search."""
        meta = {k: v for k, v in self._meta.items() if k.startswith("parley:")}
        meta.update({GENERATION: uuid.uuid4().hex, "parley:updated": time.time()})
        with self.connection.talking():
            self._chunks.modify(metadata=meta)
        self._meta = meta
        self.books.set_unsent(self.name, False)

    def chunk_ids_for(self, path: str, digest: str, texts: list[str]) -> list[str]:
        """Ids from the path, the content digest, the position and the text: versions never share one."""
        return [hashlib.sha1(f"{path}\0{digest}\0{i}\0{text}".encode()).hexdigest() for i, text in enumerate(texts)]

    def put_file(self, file: PreparedFile, embeddings: list[list[float]], stall: str | None = None) -> None:
        """Chunks, then the record, then drop other versions' chunks; then the local cache."""
        version = uuid.uuid4().hex
        row = FileRow(file.path, file.size, file.mtime, file.digest, "indexed", None, len(file.ids), version)
        with self._lock:
            self._writing()
            with self.connection.talking():
                for start in range(0, len(file.ids), BATCH):
                    part = slice(start, start + BATCH)
                    self._chunks.upsert(
                        ids=file.ids[part], embeddings=embeddings[part], documents=[c.text for c in file.chunks[part]],
                        metadatas=[{"path": file.path, "digest": file.digest, "page": c.page or 0,
                                    "heading": c.heading or "", "start": c.start} for c in file.chunks[part]])
                stall_for_test(stall)
                self._put_record(row)
                self._chunks.delete(where={"$and": [{"path": file.path}, {"digest": {"$ne": file.digest}}]})
        self.books.put_file(self.name, row, [ChunkRow(i, file.path, c.page, c.heading, c.start, c.text)
                                             for i, c in zip(file.ids, file.chunks)])

    def put_files(self, files: list[PreparedFile], embeddings: list[list[float]], stall: str | None = None) -> None:
        """One file after another: each file's record on the server follows its own chunks."""
        position = 0
        for file in files:
            self.put_file(file, embeddings[position:position + len(file.chunks)], stall=stall)
            position += len(file.chunks)

    def mark_skipped(self, path: str, reason: str, size: int | None, mtime: float | None, digest: str) -> None:
        """The record says skipped first (readers stop trusting the file's chunks), then they go."""
        row = FileRow(path, size, mtime, digest, "skipped", reason, 0, uuid.uuid4().hex)
        with self._lock:
            self._writing()
            with self.connection.talking():
                self._put_record(row)
                self._chunks.delete(where={"path": path})
        self.books.put_file(self.name, row)

    def remove_file(self, path: str) -> None:
        """The record goes first, then the chunks, then the local rows."""
        with self._lock:
            self._writing()
            with self.connection.talking():
                self._records.delete(ids=[_record_id(path)])
                self._chunks.delete(where={"path": path})
        self.books.remove_file(self.name, path)

    def _put_record(self, row: FileRow) -> None:
        # Records carry no meaning to search; chroma wants a vector for each, so they get [0.0].
        self._records.upsert(ids=[_record_id(row.path)], embeddings=[[0.0]], metadatas=[{
            "path": row.path, "size": -1 if row.size is None else int(row.size),
            "mtime": -1.0 if row.mtime is None else float(row.mtime), "digest": row.hash or "",
            "status": row.status, "reason": row.reason or "", "chunks": row.chunks, "version": row.version or ""}])

    def commit(self) -> None:
        """Announce this instance's writes with a new generation, if it made any."""
        with self._lock:
            if self.books.sync_state(self.name)[1]:
                self._announce()

    # -- reading ----------------------------------------------------------------------------
    def query(self, vector: list[float], n: int) -> list[VectorHit]:
        """The nearest chunks whose (path, digest) matches a record in the local cache, so vector
        and keyword hits come from the same files (call :meth:`sync` first)."""
        if self._chunks is None:
            self.open(create=False)
        with self.connection.talking():
            result = self._chunks.query(query_embeddings=[vector], n_results=n,
                                        include=["documents", "metadatas", "distances"])
        hits = [VectorHit(cid, text, meta["path"], meta.get("page") or None, meta.get("heading") or None,
                          float(distance))
                for cid, text, meta, distance in zip(result["ids"][0], result["documents"][0],
                                                     result["metadatas"][0], result["distances"][0])]
        digests = {meta["path"]: meta.get("digest") for meta in result["metadatas"][0]}
        current = self.books.indexed_digests(self.name, list(digests))
        return [h for h in hits if current.get(h.path) is not None and current[h.path] == digests[h.path]]

    def chunk_ids(self) -> list[str]:
        """Every chunk id on the server (for checks)."""
        if self._chunks is None:
            self.open(create=False)
        ids: list[str] = []
        with self.connection.talking():
            while True:
                page = self._chunks.get(include=[], limit=BATCH, offset=len(ids))
                ids += page["ids"]
                if len(page["ids"]) < BATCH:
                    return ids

    def rename(self, new_name: str) -> None:
        """A local alias: the server keeps the shared name, which the other instances use."""
        self.name = new_name

    def forget(self) -> None:
        """Nothing on the server: the other instances still use the collection."""

    def delete_on_server(self) -> None:
        """Delete the collection on the server, for every instance."""
        client = self.connection.client
        with self.connection.talking():
            for name in (self.remote, f"{self.remote}-files"):
                try:
                    client.delete_collection(name)
                except Exception as exc:
                    if "does not exist" not in str(exc):
                        raise
        self._chunks = self._records = None


def _record_id(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()


def _row_of_record(meta: dict[str, Any]) -> FileRow:
    size, mtime = meta.get("size", -1), meta.get("mtime", -1.0)
    return FileRow(meta["path"], None if size == -1 else size, None if mtime == -1.0 else mtime,
                   meta.get("digest", ""), meta.get("status", "indexed"), meta.get("reason") or None,
                   int(meta.get("chunks", 0)), meta.get("version") or None)
