"""The repositories the download tests fetch from the hub mirror (see tests/hub_mirror.py), and their fixtures.

``REAL`` holds the real SmolLM2 file (served from its path) for the happy path, the resume and
the restart. ``SMALL`` holds tiny GGUF files (valid headers, one tensor, 256 kB) that make
the fault cases quick; ``GATED`` and ``PRIVATE`` want a token.

A test module imports the fixtures it uses by name (``served``, ``mirror``, ``url``, ``ring``,
``managers``); ``managers(**options)`` makes a DownloadManager on the test's library that
reports to a :class:`Seen` and is closed after the test.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.hub_mirror import Faults, HubMirror, MirrorRepo
from tests.memory_keyring import memory_keyring

REAL = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
REAL_FILE = "smollm2-135m-instruct-q8_0.gguf"
SMALL = "parley-tests/tiny-GGUF"
GATED = "meta-llama/Tiny-GGUF"
PRIVATE = "someone/private-GGUF"
TOKEN = "hf_download_secret"


@functools.lru_cache(maxsize=8)
def tiny_gguf(seed: int = 0) -> bytes:
    """A small, valid GGUF file (each seed gives other bytes)."""
    from tests.gguf_files import write_tiny_gguf

    with tempfile.TemporaryDirectory() as folder:
        path = write_tiny_gguf(Path(folder) / "tiny.gguf", elements=64 * 1024 + seed)
        return path.read_bytes()


def download_mirror() -> HubMirror:
    """A mirror with the download tests' repositories."""
    from desktop_app.core.models import default_model_path

    mirror = HubMirror()
    mirror.add_repo(MirrorRepo(REAL, files={REAL_FILE: default_model_path()}))
    mirror.add_repo(MirrorRepo(SMALL, files={
        "tiny-Q4_0.gguf": tiny_gguf(0),
        "tiny-Q5_0.gguf": tiny_gguf(1),
        "tiny-Q8_0.gguf": tiny_gguf(2),
        "tiny-F16-00001-of-00002.gguf": tiny_gguf(3),
        "tiny-F16-00002-of-00002.gguf": tiny_gguf(4)[:100_000],
        "not-a-model.gguf": b"this is not a GGUF file" * 1000,
    }))
    mirror.add_repo(MirrorRepo(GATED, files={"tiny-Q4_0.gguf": tiny_gguf(0)}, gated="manual", token=TOKEN,
                               license="llama3.2"))
    mirror.add_repo(MirrorRepo(PRIVATE, files={"tiny-Q4_0.gguf": tiny_gguf(0)}, token="hf_private"))
    return mirror


@contextlib.contextmanager
def served_downloads() -> Iterator[tuple[HubMirror, str]]:
    """The download mirror, running: ``(mirror, url)``."""
    mirror = download_mirror()
    with mirror.serve() as url:
        yield mirror, url
        mirror.faults.release.set()  # nothing may stay held when the server stops


def reset(mirror: HubMirror) -> HubMirror:
    """Clear what one test did to a shared mirror: its faults, the requests it saw, changed files."""
    mirror.faults.release.set()
    mirror.faults = Faults()
    mirror.requests.clear()
    fresh = download_mirror()
    for repo_id, repo in fresh.repos.items():
        if repo_id == REAL:  # the real file's checksum takes a moment: keep the one computed
            mirror.repos[REAL].wrong_sha256.clear()
            continue
        mirror.repos[repo_id] = repo
    return mirror


def hub_model(mirror: HubMirror, repo_id: str, *paths: str, name: str | None = None):
    """The HubModelFile the catalogue would give for these files of a mirror repository."""
    from desktop_app.core.hub_files import HubFile, HubModelFile

    repo = mirror.repos[repo_id]
    parts = tuple(HubFile(repo_id, path, repo.size(path), repo.sha256(path) if repo.is_lfs(path) else None, repo.sha)
                  for path in paths)
    return HubModelFile(repo_id, name or Path(paths[0]).stem, parts)


class Seen:
    """What on_change reported, in order."""

    def __init__(self):
        self.statuses = []
        self.lock = threading.Lock()

    def __call__(self, status):
        with self.lock:
            self.statuses.append(status)

    def states(self, download_id=None):
        with self.lock:
            return [s.state for s in self.statuses if download_id in (None, s.id)]

    def messages(self):
        with self.lock:
            return [s.message for s in self.statuses if s.message]


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_requests(mirror: HubMirror, method: str = "GET") -> list[dict[str, str]]:
    """The headers of the mirror's file requests (GET or HEAD), in order."""
    return [headers for m, path, headers in mirror.requests if m == method and "/resolve/" in path]


def poll(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def partial(manager, download_id: str, name: str) -> Path:
    """Where a download keeps a file's bytes until they are verified."""
    return manager.folder / download_id / "files" / name


def downloaded_names(paths) -> list[str]:
    """The library's models other than the built-in one, as a fresh reader of models.json sees them."""
    from desktop_app.core.models import ModelLibrary

    return [e.name for e in ModelLibrary(paths).entries() if not e.builtin]


@pytest.fixture(scope="module")
def served():
    with served_downloads() as (mirror, url):
        yield mirror, url


@pytest.fixture
def mirror(served, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return reset(served[0])


@pytest.fixture
def url(served, mirror):
    return served[1]


@pytest.fixture(autouse=True)
def ring():
    with memory_keyring() as ring:
        yield ring


@pytest.fixture
def managers(paths, url):
    """``managers(library=None, seen=None, **options)``: a DownloadManager on the test's folders and the mirror
    (``endpoint`` may name another)."""
    from desktop_app.core.downloads import DownloadManager
    from desktop_app.core.models import ModelLibrary

    made = []

    def make(library=None, **options):
        options.setdefault("backoff", 0.01)
        options.setdefault("endpoint", url)
        seen = options.pop("seen", None) or Seen()
        manager = DownloadManager(paths, library or ModelLibrary(paths), on_change=seen, **options)
        manager.seen = seen
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close(timeout=10)
