"""Local documents: private question answering over the user's folders, with sources.
A built-in Parley plugin.

Which collections a turn searches: the turn's own choice (``parley chat --docs NAME``,
remembered for the conversation), else the conversation's remembered choice, else the
choice in the window's documents panel.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from desktop_app.api import ContextBlock, Option, Turn, conversation_choice, hookimpl, remember_choice

__version__ = "0.1.0"
__all__ = ["state", "PLUGIN"]

log = logging.getLogger(__name__)

PLUGIN = "local_docs"
INSTRUCTION = (
    "Answer the question using only the numbered sources below, and cite the sources you use "
    "like [1]. If the sources do not contain the answer, say that the documents do not say."
)
NOTHING_FOUND = (
    "The user asked about their documents, but no passage in them matches the question. "
    "Say that you could not find this in the documents; do not guess."
)


class State:
    """The plugin's context and its document index (created on first use: chromadb is heavy)."""

    def __init__(self) -> None:
        self.context: Any = None
        self._index: Any = None
        self._lock = threading.Lock()
        #: The panel's choice for conversations that have none yet.
        self.selection: list[str] = []

    def setting(self, key: str, default: Any) -> Any:
        """One of this plugin's settings."""
        try:
            return self.context.settings.get(f"plugins.{PLUGIN}.{key}")
        except Exception:
            return default

    @property
    def index(self) -> Any:
        """The document index for the current settings (rebuilt when they change)."""
        wanted = (self.setting("embedder", "") or "all-MiniLM-L6-v2", self.setting("chunk_tokens", 240),
                  self.setting("chunk_overlap", 40), int(self.setting("max_file_mb", 50) * 1_000_000))
        with self._lock:
            current = self._index
            if current is None or (current.embedder.name, current.chunk_tokens, current.overlap,
                                   current.max_bytes) != wanted:
                from desktop_app_local_docs.embedder import Embedder
                from desktop_app_local_docs.index import DocsIndex

                # The old index is not closed here: an indexing run may still hold it, and it
                # closes when the last user lets go. A loaded embedding model is kept if unchanged.
                same_model = current is not None and current.embedder.name == wanted[0]
                self._index = DocsIndex(
                    self.context.paths.data_dir / "documents",
                    current.embedder if same_model else Embedder(self.setting("embedder", "")),
                    chunk_tokens=wanted[1], overlap=wanted[2], max_bytes=wanted[3],
                )
            return self._index

    def collections_for(self, conversation_id: int | None) -> tuple[list[str], bool]:
        """(collections, whether the conversation remembered them)."""
        meta = conversation_choice(self._store(), conversation_id, PLUGIN)
        if meta and "collections" in meta:
            return list(meta["collections"]), True
        return list(self.selection), False

    def remember(self, conversation_id: int | None, collections: list[str]) -> None:
        """Store the conversation's collections."""
        remember_choice(self._store(), conversation_id, PLUGIN, {"collections": list(collections)})

    def _store(self) -> Any:
        return self.context.store if self.context is not None else None

    def close(self) -> None:
        """Close the index."""
        if self._index is not None:
            self._index.close()
            self._index = None


state = State()


@hookimpl
def app_started(context: Any) -> None:
    """Keep the context (a fresh start: nothing from an earlier context carries over)."""
    state.close()
    state.__init__()
    state.context = context


@hookimpl
def register_settings(register) -> None:
    """This plugin's settings."""
    register([
        Option("embedder", str, "", "Sentence-transformers model folder or name; empty = the built-in "
               "all-MiniLM-L6-v2. Changing it re-indexes every collection."),
        Option("chunk_tokens", int, 240, "Chunk size in the embedder's tokens.", minimum=32, maximum=512),
        Option("chunk_overlap", int, 40, "Tokens shared by neighbouring chunks.", minimum=0, maximum=200),
        Option("top_k", int, 5, "How many passages to put in front of the model.", minimum=1, maximum=20),
        Option("min_similarity", float, 0.2, "Passages less similar than this are left out "
               "(unless their words match).", minimum=0.0, maximum=1.0),
        Option("max_file_mb", int, 50, "Files larger than this are skipped.", minimum=1),
    ])


@hookimpl
def prepare_turn(turn: Turn) -> None:
    """Retrieve passages from the conversation's collections and add them as numbered sources."""
    chosen = turn.plugin_options.get(PLUGIN) or {}
    if chosen.get("collections") is not None:
        collections = list(chosen["collections"])
        state.remember(turn.conversation_id, collections)
    else:
        collections, remembered = state.collections_for(turn.conversation_id)
        if collections and not remembered:
            state.remember(turn.conversation_id, collections)
    if not collections:
        return
    from desktop_app_local_docs.index import DocsError

    try:
        hits = state.index.search(collections, turn.user_message, k=state.setting("top_k", 5),
                                  min_similarity=state.setting("min_similarity", 0.2))
    except DocsError as exc:
        turn.add_note(str(exc))
        return
    except Exception as exc:  # a passing storage error: answer without documents, say why, stay on
        log.exception("document search failed")
        turn.add_note(f"Searching your documents failed ({type(exc).__name__}: {exc}); answered without them.")
        return
    if not hits:
        turn.add_system(NOTHING_FOUND)
        return
    turn.add_system(INSTRUCTION)
    for hit in hits:
        source = hit.path + (f", page {hit.page}" if hit.page else "")
        turn.add_context(ContextBlock(hit.text, source, round(hit.score, 4), {
            "path": hit.path, "page": hit.page, "heading": hit.heading, "similarity": hit.similarity}))


@hookimpl
def register_commands(subparsers) -> None:
    """`parley docs ...` and `parley chat --docs NAME`."""
    from desktop_app_local_docs import cli

    cli.register(subparsers)


@hookimpl
def register_panels(register) -> None:
    """The Documents side panel."""

    def make(context, parent):
        from desktop_app_local_docs.ui import DocumentsPanel

        return DocumentsPanel(context, parent.window(), parent)

    register("Documents", make, area="right")


@hookimpl
def register_tools(register) -> None:
    """`search_documents`: lets the model search the user's collections itself (with the tools plugin)."""
    from desktop_app.api import Tool

    def search_documents(query: str, collection: str = "", k: int = 5) -> list[dict[str, Any]]:
        names = [collection] if collection else list(state.index.collections())
        hits = state.index.search(names, query, k=int(k), min_similarity=state.setting("min_similarity", 0.2))
        return [{"text": h.text, "path": h.path, "page": h.page, "score": round(h.score, 4)} for h in hits]

    register(Tool(
        name="search_documents",
        description="Search the user's local document collections and return matching passages with their files.",
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for."},
                "collection": {"type": "string", "description": "A collection name; empty searches all."},
                "k": {"type": "integer", "description": "How many passages (1-20).", "minimum": 1, "maximum": 20},
            },
            "required": ["query"],
        },
        function=search_documents,
        requires_approval=True,  # it reads the user's documents: ask by default
    ))
