"""A small model-hub mirror on a loopback port, for tests: the Hugging Face routes Parley uses.

    mirror = HubMirror()
    mirror.add_repo(MirrorRepo("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
                               files={"smollm2-135m-instruct-q8_0.gguf": default_model_path()}))
    with mirror.serve() as url:      # http://127.0.0.1:PORT
        ...  # HF_ENDPOINT=url, or Parley's hub.endpoint setting

It is a real HTTP server (Starlette under uvicorn, in a thread), driven through
``huggingface_hub`` itself. Its routes live in two modules:

- :mod:`tests.hub_mirror_api`: the JSON API (search, a repository's details and files, whoami);
- :mod:`tests.hub_mirror_files`: ``/{repo}/resolve/{revision}/{path}``, the file bytes, with
  HEAD, Range, ETag and the LFS headers (``X-Linked-Etag`` is the SHA-256).

Faults a real hub cannot be made to produce on demand are switched on in ``mirror.faults``
(see :class:`Faults`); each route reads them on every request.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.chroma_server import free_port

__all__ = ["Faults", "HubMirror", "MirrorRepo"]


@dataclass
class MirrorRepo:
    """One repository: its files (bytes, or a path to a real file) and what its API reports."""

    repo_id: str
    files: dict[str, bytes | Path] = field(default_factory=dict)
    card: str = ""  # README.md (served as that file too); its front matter carries license, base_model and tags
    gated: bool | str = False  # False, "auto" or "manual", as the hub reports it
    license: str | None = None
    tags: list[str] = field(default_factory=lambda: ["gguf"])
    downloads: int = 0
    likes: int = 0
    pipeline_tag: str | None = "text-generation"
    library_name: str | None = None
    base_model: str | None = None
    sha: str = "0123456789abcdef0123456789abcdef01234567"  # the commit a revision resolves to
    #: files whose reported SHA-256 is wrong (the bytes served are unchanged)
    wrong_sha256: set[str] = field(default_factory=set)
    #: the token ("Bearer TOKEN") this repository's files want: a gated repository refuses its
    #: files without it (its API entry stays open, as on the hub); any other becomes private
    token: str | None = None
    last_modified: str = "2024-11-21T10:00:00.000Z"

    def __post_init__(self) -> None:
        self._sha256: dict[str, str] = {}
        if self.card and "README.md" not in self.files:
            self.files["README.md"] = self.card.encode("utf-8")

    def replace_file(self, path: str, data: bytes | Path) -> None:
        """Change a file's bytes, as a new commit on the hub would (its SHA-256 and ETag follow)."""
        self.files[path] = data
        self._sha256.pop(path, None)

    def size(self, path: str) -> int:
        """Bytes of one file."""
        data = self.files[path]
        return data.stat().st_size if isinstance(data, Path) else len(data)

    def sha256(self, path: str) -> str:
        """The SHA-256 the mirror reports for one file (computed once; faked if asked)."""
        if path in self.wrong_sha256:
            return "0" * 64
        if path not in self._sha256:
            data = self.files[path]
            digest = hashlib.sha256()
            if isinstance(data, Path):
                with data.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
            else:
                digest.update(data)
            self._sha256[path] = digest.hexdigest()
        return self._sha256[path]

    def is_lfs(self, path: str) -> bool:
        """Large and binary files are LFS objects on the hub; README and JSON stay in git."""
        return not path.endswith((".md", ".json", ".txt"))


@dataclass
class Faults:
    """Faults the file route can be told to produce."""

    #: close the connection after sending this many bytes of a file (once per count left)
    drop_after_bytes: int | None = None
    drops_left: int = 0
    #: answer a Range request with 200 and the whole file, as a broken server would
    ignore_range: bool = False
    #: answer a Range request with 206 from this many bytes later than asked (and say so in Content-Range)
    misplaced_range: int = 0
    #: answer the next N file requests with this status (e.g. 503) before serving
    fail_status: int = 503
    failures_left: int = 0
    #: sleep this long between chunks (lets a test pause or cancel mid-file)
    chunk_delay: float = 0.0
    #: stop sending after this many bytes of a file (once), set ``held``, and go on when the test sets
    #: ``release``: a download caught mid-file, at a known byte, on any machine's speed
    hold_after_bytes: int | None = None
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    chunk_size: int = 64 * 1024
    #: repositories that answer 401/403 without a token ("Bearer TOKEN" accepted)
    token: str | None = None
    #: answer 404 to /api/whoami-v2, as mirrors that serve only models do
    whoami_missing: bool = False


class HubMirror:
    """The mirror: repositories, faults, the requests it saw, and the server."""

    def __init__(self) -> None:
        self.repos: dict[str, MirrorRepo] = {}
        self.faults = Faults()
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.url: str | None = None
        self._lock = threading.Lock()

    def add_repo(self, repo: MirrorRepo) -> MirrorRepo:
        """Serve a repository."""
        self.repos[repo.repo_id] = repo
        return repo

    def record(self, method: str, path: str, headers: dict[str, str]) -> None:
        """Remember a request (tests check what was asked, e.g. the Range header)."""
        with self._lock:
            self.requests.append((method, path, headers))

    def app(self):
        """The Starlette application with every route."""
        from starlette.applications import Starlette

        from tests import hub_mirror_api, hub_mirror_files

        return Starlette(routes=[*hub_mirror_api.routes(self), *hub_mirror_files.routes(self)])

    @contextlib.contextmanager
    def serve(self, port: int | None = None) -> Iterator[str]:
        """Run the server on 127.0.0.1 until the block ends; yields its URL."""
        import uvicorn

        port = port or free_port()
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=port, log_level="warning",
                                lifespan="off", timeout_keep_alive=5)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="hub-mirror", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the hub mirror did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self.url
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            self.url = None
