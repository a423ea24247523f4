"""What the documents plugin offers other plugins (``register_services``): index a folder into a
collection, and read a collection's passages back."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from desktop_app.api import ParleyError

__all__ = ["index_folder", "passages"]


def _index() -> Any:
    from desktop_app_local_docs import state

    if state.context is None:
        raise ParleyError("The documents plugin has not started yet.")
    return state.index


def index_folder(folder: Path | str, *, collection: str, on_progress: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None) -> dict[str, Any]:
    """``documents.index_folder``: make (or bring up to date) the collection ``collection`` of the
    documents in ``folder``; files unchanged since the last time are not embedded again.
    Returns ``{"collection", "files", "chunks", "cancelled"}``; ParleyError for a folder that is
    not there or a collection of that name holding other folders."""
    from desktop_app_local_docs.errors import DocsError

    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise ParleyError(f"{folder} is not a folder of documents.")
    index = _index()
    try:
        known = index.collections().get(collection)
        if known is None:
            index.add_collection(collection, [str(folder)])
        elif [str(Path(p).resolve()) for p in known["paths"]] != [str(folder)]:
            raise ParleyError(f"The collection {collection!r} already holds other folders; choose another name.")

        def progress(p: Any) -> None:
            if on_progress is not None:
                on_progress(f"Indexing {Path(p.current).name or folder.name}: file {p.files_done} of {p.files_total}, "
                            f"{p.chunks} passages")

        report = index.index(collection, progress, stop)
    except DocsError as exc:
        raise ParleyError(str(exc)) from exc
    return {"collection": collection, "files": report.indexed + report.unchanged, "chunks": report.chunks,
            "cancelled": report.cancelled}


def passages(collection: str, limit: int = 50) -> list[dict[str, str]]:
    """``documents.passages``: up to ``limit`` passages of an indexed collection as
    ``{"text", "source"}``, read from its files the way indexing cut them (in file order)."""
    from desktop_app_local_docs.chunking import chunk_sections
    from desktop_app_local_docs.errors import DocsError
    from desktop_app_local_docs.extract import SkipFile, extract

    index = _index()
    if collection not in index.collections():
        raise ParleyError(f"There is no collection {collection!r}; index a folder into it first.")
    found: list[dict[str, str]] = []
    max_tokens = min(index.chunk_tokens, index.embedder.max_tokens - 2)
    for path, row in sorted(index.books.files(collection).items()):
        if row.status != "indexed" or not Path(path).is_file():
            continue
        try:
            chunks = chunk_sections(extract(Path(path), index.max_bytes), index.embedder.tokenizer, max_tokens,
                                    index.overlap)
        except (DocsError, OSError, ValueError, SkipFile):
            continue  # a file that changed or broke since indexing: the others still serve
        found += [{"text": c.text, "source": path} for c in chunks]
        if len(found) >= limit:
            break
    return found[:limit]
