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

from desktop_app.api import ContextBlock, ConversationChoice, Option, PluginContext, Turn, hookimpl

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
        self.context: PluginContext | None = None
        self._index: Any = None
        self._lock = threading.Lock()
        #: The collections each conversation searches; its ``selection`` is the panel's pick.
        self.choice: ConversationChoice | None = None

    def start(self, context: PluginContext) -> None:
        """Take a fresh context: nothing from an earlier one carries over."""
        self.close()
        self.__init__()
        self.context = context
        self.choice = context.choice("collections", fields=("collections",))

    @property
    def index(self) -> Any:
        """The document index for the current settings (rebuilt when they change)."""
        settings = self.context.settings
        wanted = (settings.get("embedder") or "all-MiniLM-L6-v2", settings.get("chunk_tokens"),
                  settings.get("chunk_overlap"), int(settings.get("max_file_mb") * 1_000_000))
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
                    self.context.data_dir / "documents",
                    current.embedder if same_model else Embedder(settings.get("embedder")),
                    chunk_tokens=wanted[1], overlap=wanted[2], max_bytes=wanted[3],
                )
            return self._index

    @property
    def selection(self) -> list[str]:
        """The panel's pick, for conversations without collections of their own."""
        return list(self.choice.selection.get("collections") or []) if self.choice else []

    @selection.setter
    def selection(self, names: list[str]) -> None:
        self.choice.selection = {"collections": list(names)}

    def collections_for(self, conversation_id: int | None) -> tuple[list[str], bool]:
        """(collections, whether the conversation remembered them)."""
        choice, remembered = self.choice.current(conversation_id)
        return list(choice.get("collections") or []), remembered

    def remember(self, conversation_id: int | None, collections: list[str]) -> None:
        """Keep the conversation's collections (without a conversation: the panel's pick)."""
        self.choice.remember(conversation_id, {"collections": list(collections)})

    def close(self) -> None:
        """Close the index."""
        if self._index is not None:
            self._index.close()
            self._index = None


state = State()


@hookimpl
def app_started(context: PluginContext) -> None:
    """Keep the context."""
    state.start(context)


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
    collections = list(state.choice.for_turn(turn).get("collections") or [])
    if not collections:
        return
    from desktop_app_local_docs.index import DocsError

    try:
        settings = state.context.settings
        hits = state.index.search(collections, turn.user_message, k=settings.get("top_k"),
                                  min_similarity=settings.get("min_similarity"))
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

        return DocumentsPanel(context, context.window, parent)

    register("Documents", make, area="right")


@hookimpl
def register_embedders(register) -> None:
    """The embedding model the documents are indexed with, for other plugins (e.g. the API server)."""
    if state.context is None:
        return
    register(state.context.settings.get("embedder") or "all-MiniLM-L6-v2",
             lambda texts: state.index.embedder.encode(list(texts)))


@hookimpl
def register_tools(register) -> None:
    """`search_documents`: lets the model search the user's collections itself (with the tools plugin)."""
    from desktop_app.api import Tool

    def search_documents(query: str, collection: str = "", k: int = 5) -> list[dict[str, Any]]:
        names = [collection] if collection else list(state.index.collections())
        hits = state.index.search(names, query, k=int(k),
                                  min_similarity=state.context.settings.get("min_similarity"))
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


@hookimpl
def register_services(register) -> None:
    """``documents.index_folder`` and ``documents.passages`` for other plugins (the strategy lab)."""
    from desktop_app_local_docs.services import index_folder, passages

    register("documents.index_folder", index_folder)
    register("documents.passages", passages)
