"""The conversation store: SQLite in WAL mode, versioned with migrations.

Conversations hold messages linked by ``parent_id``, so editing an earlier message starts
a new branch and keeps the old one; ``current_leaf`` says which branch is shown. Each
assistant message may carry a trace: the exact prompt and what each plugin added.

Durability: every write is its own committed transaction. The chat pipeline commits the
user's message before generation starts and saves the growing answer every fraction of a
second with status ``incomplete``, so a killed process leaves the partial answer behind.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from desktop_app.core.errors import ParleyError

__all__ = [
    "Conversation",
    "Message",
    "SearchHit",
    "Store",
    "StoreError",
    "EXPORT_FORMAT",
]

EXPORT_FORMAT = "parley-conversation/1"
DEFAULT_TITLE = "New conversation"
ROLES = ("system", "user", "assistant", "tool")
STATUSES = ("complete", "incomplete", "error")


class StoreError(ParleyError):
    """A store operation failed in a way the user can act on (unknown id, bad import file...)."""


@dataclass
class Conversation:
    """One conversation's header (its messages come from :meth:`Store.history`)."""

    id: int
    title: str
    created: float
    updated: float
    model: str | None
    system_prompt: str | None
    current_leaf: int | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    """One stored message. ``status`` is ``incomplete`` for an answer that did not finish."""

    id: int
    conversation_id: int
    parent_id: int | None
    role: str
    content: str
    created: float
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"


@dataclass
class SearchHit:
    """A full-text search result: the message and a snippet with the match in ``[...]``."""

    conversation_id: int
    conversation_title: str
    message_id: int
    role: str
    snippet: str


# Each entry upgrades the schema by one version; never edit a released one, append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        model TEXT,
        system_prompt TEXT,
        current_leaf INTEGER,
        meta TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        created REAL NOT NULL,
        model TEXT,
        options TEXT NOT NULL DEFAULT '{}',
        stats TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'complete'
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE INDEX messages_by_parent ON messages(parent_id);
    CREATE TABLE traces (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        prompt TEXT NOT NULL,
        entries TEXT NOT NULL
    );
    CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id');
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    """,
)


class Store:
    """Thread-safe access to the conversation database.

    One connection is shared under a lock: the GUI thread and the generation worker both
    write, and SQLite serialises writers anyway.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL keeps every commit across a process crash; only power loss can lose the last one.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"The conversation database {path} cannot be opened ({exc}). "
                "Move it aside to start with an empty history."
            ) from exc

    # -- schema -----------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(
                f"The conversation database {self.path} was written by a newer Parley "
                f"(schema {version}, this one knows {len(MIGRATIONS)}). Update Parley to open it."
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction():
                for statement in _split_sql(script):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={number}")

    def _transaction(self):
        return _Transaction(self._db, self._lock)

    def close(self) -> None:
        """Close the database; the store cannot be used afterwards."""
        with self._lock:
            self._db.close()

    # -- conversations ----------------------------------------------------------------------
    def create_conversation(
        self,
        title: str | None = None,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Conversation:
        """Create an empty conversation and return it."""
        now = time.time()
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO conversations(title, created, updated, model, system_prompt, meta)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (title or DEFAULT_TITLE, now, now, model, system_prompt, json.dumps(meta or {})),
            )
            conversation_id = cur.lastrowid
        return self.get_conversation(conversation_id)

    def get_conversation(self, conversation_id: int) -> Conversation:
        """Return one conversation or raise :class:`StoreError`."""
        with self._lock:
            row = self._db.execute("SELECT * FROM conversations WHERE id=?", (conversation_id,)).fetchone()
        if row is None:
            raise StoreError(f"There is no conversation {conversation_id}.")
        return _conversation(row)

    def list_conversations(self, limit: int | None = None) -> list[Conversation]:
        """Return conversations, the most recently active first."""
        sql = "SELECT * FROM conversations ORDER BY updated DESC, id DESC"
        params: tuple = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        with self._lock:
            return [_conversation(r) for r in self._db.execute(sql, params)]

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        """Give a conversation a new title."""
        title = title.strip()
        if not title:
            raise StoreError("A conversation title cannot be empty.")
        self._update_conversation(conversation_id, "title=?", (title,))

    def update_conversation_meta(self, conversation_id: int, meta: dict[str, Any]) -> None:
        """Replace the conversation's free-form metadata (e.g. its template and variables)."""
        self._update_conversation(conversation_id, "meta=?", (json.dumps(meta),))

    def set_system_prompt(self, conversation_id: int, system_prompt: str | None) -> None:
        """Set the conversation's own system prompt (None: use the app default)."""
        self._update_conversation(conversation_id, "system_prompt=?", (system_prompt,))

    def set_current_leaf(self, conversation_id: int, message_id: int | None) -> None:
        """Show the branch that ends at ``message_id``."""
        if message_id is not None:
            message = self.get_message(message_id)
            if message.conversation_id != conversation_id:
                raise StoreError(f"Message {message_id} is not in conversation {conversation_id}.")
        self._update_conversation(conversation_id, "current_leaf=?", (message_id,))

    def _update_conversation(self, conversation_id: int, assignment: str, params: tuple) -> None:
        with self._transaction() as db:
            cur = db.execute(
                f"UPDATE conversations SET {assignment}, updated=? WHERE id=?",
                (*params, time.time(), conversation_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"There is no conversation {conversation_id}.")

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation with all its messages and traces."""
        with self._transaction() as db:
            cur = db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))
            if cur.rowcount == 0:
                raise StoreError(f"There is no conversation {conversation_id}.")

    # -- messages ---------------------------------------------------------------------------
    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        parent_id: int | None | type[...] = ...,
        model: str | None = None,
        options: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
        status: str = "complete",
    ) -> Message:
        """Append a message (committed at once) and make it the conversation's current leaf.

        ``parent_id`` defaults to the current leaf; pass an earlier message's parent to start
        a new branch beside it.
        """
        if role not in ROLES:
            raise StoreError(f"Unknown role {role!r}; expected one of {', '.join(ROLES)}.")
        if status not in STATUSES:
            raise StoreError(f"Unknown status {status!r}.")
        now = time.time()
        with self._transaction() as db:
            conv = db.execute(
                "SELECT current_leaf, title FROM conversations WHERE id=?", (conversation_id,)
            ).fetchone()
            if conv is None:
                raise StoreError(f"There is no conversation {conversation_id}.")
            parent = conv["current_leaf"] if parent_id is ... else parent_id
            if parent is not None:
                owner = db.execute("SELECT conversation_id FROM messages WHERE id=?", (parent,)).fetchone()
                if owner is None or owner[0] != conversation_id:
                    raise StoreError(f"Message {parent} is not part of conversation {conversation_id}.")
            cur = db.execute(
                "INSERT INTO messages(conversation_id, parent_id, role, content, created, model,"
                " options, stats, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, parent, role, content, now, model,
                 json.dumps(options or {}), json.dumps(stats or {}), status),
            )
            message_id = cur.lastrowid
            title = conv["title"]
            if role == "user" and title == DEFAULT_TITLE:
                title = _title_from(content)
            db.execute(
                "UPDATE conversations SET current_leaf=?, updated=?, title=? WHERE id=?",
                (message_id, now, title, conversation_id),
            )
        return self.get_message(message_id)

    def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        status: str | None = None,
        stats: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Change a message's content, status, stats or generation options in one committed transaction."""
        sets, params = [], []
        if content is not None:
            sets.append("content=?")
            params.append(content)
        if status is not None:
            if status not in STATUSES:
                raise StoreError(f"Unknown status {status!r}.")
            sets.append("status=?")
            params.append(status)
        if stats is not None:
            sets.append("stats=?")
            params.append(json.dumps(stats))
        if options is not None:
            sets.append("options=?")
            params.append(json.dumps(options))
        if not sets:
            return
        with self._transaction() as db:
            cur = db.execute(f"UPDATE messages SET {', '.join(sets)} WHERE id=?", (*params, message_id))
            if cur.rowcount == 0:
                raise StoreError(f"There is no message {message_id}.")

    def get_message(self, message_id: int) -> Message:
        """Return one message or raise :class:`StoreError`."""
        with self._lock:
            row = self._db.execute("SELECT * FROM messages WHERE id=?", (message_id,)).fetchone()
        if row is None:
            raise StoreError(f"There is no message {message_id}.")
        return _message(row)

    def history(self, conversation_id: int, leaf_id: int | None = None) -> list[Message]:
        """Return the messages from the root to ``leaf_id`` (default: the current leaf), oldest first."""
        if leaf_id is None:
            leaf_id = self.get_conversation(conversation_id).current_leaf
            if leaf_id is None:
                return []
        with self._lock:
            rows = self._db.execute(
                """
                WITH RECURSIVE chain(id, parent_id, depth) AS (
                    SELECT id, parent_id, 0 FROM messages WHERE id=? AND conversation_id=?
                    UNION ALL
                    SELECT m.id, m.parent_id, chain.depth + 1
                    FROM messages m JOIN chain ON m.id = chain.parent_id
                )
                SELECT messages.* FROM chain JOIN messages ON messages.id = chain.id
                ORDER BY chain.depth DESC
                """,
                (leaf_id, conversation_id),
            ).fetchall()
        return [_message(r) for r in rows]

    def all_messages(self, conversation_id: int) -> list[Message]:
        """Return every message of a conversation, on every branch, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM messages WHERE conversation_id=? ORDER BY id", (conversation_id,)
            ).fetchall()
        return [_message(r) for r in rows]

    def children(self, message_id: int) -> list[Message]:
        """Return the replies to a message, one per branch, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM messages WHERE parent_id=? ORDER BY id", (message_id,)
            ).fetchall()
        return [_message(r) for r in rows]

    def siblings(self, message: Message) -> list[Message]:
        """Return the message and its alternatives (the other branches at the same point), oldest first."""
        with self._lock:
            if message.parent_id is None:
                rows = self._db.execute(
                    "SELECT * FROM messages WHERE conversation_id=? AND parent_id IS NULL ORDER BY id",
                    (message.conversation_id,),
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM messages WHERE parent_id=? ORDER BY id", (message.parent_id,)
                ).fetchall()
        return [_message(r) for r in rows]

    def latest_leaf(self, message_id: int) -> int:
        """Follow the newest reply from ``message_id`` down to the end of its branch."""
        with self._lock:
            row = self._db.execute(
                """
                WITH RECURSIVE down(id, depth) AS (
                    SELECT ?, 0
                    UNION ALL
                    SELECT (SELECT MAX(m.id) FROM messages m WHERE m.parent_id = down.id), depth + 1
                    FROM down WHERE (SELECT MAX(m.id) FROM messages m WHERE m.parent_id = down.id) IS NOT NULL
                )
                SELECT id FROM down ORDER BY depth DESC LIMIT 1
                """,
                (message_id,),
            ).fetchone()
        return row[0]

    # -- traces -----------------------------------------------------------------------------
    def save_trace(self, message_id: int, prompt: str, entries: list[dict[str, Any]]) -> None:
        """Store the exact prompt of an answer and the labelled parts plugins added to it."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO traces(message_id, prompt, entries) VALUES (?, ?, ?)",
                (message_id, prompt, json.dumps(entries)),
            )

    def get_trace(self, message_id: int) -> dict[str, Any] | None:
        """Return ``{"prompt": str, "entries": [...]}`` for an answer, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM traces WHERE message_id=?", (message_id,)).fetchone()
        if row is None:
            return None
        return {"prompt": row["prompt"], "entries": json.loads(row["entries"])}

    # -- search -----------------------------------------------------------------------------
    def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """Full-text search over every message; plain words match, quotes and operators are literal."""
        terms = [t for t in query.split() if t]
        if not terms:
            return []
        # Quote each word so characters like '-' or ':' in a user's query are not FTS syntax.
        fts_query = " ".join('"' + t.replace('"', '""') + '"' for t in terms)
        with self._lock:
            rows = self._db.execute(
                """
                SELECT m.id AS message_id, m.conversation_id, m.role, c.title,
                       snippet(messages_fts, 0, '[', ']', '…', 12) AS snippet
                FROM messages_fts
                JOIN messages m ON m.id = messages_fts.rowid
                JOIN conversations c ON c.id = m.conversation_id
                WHERE messages_fts MATCH ?
                ORDER BY rank LIMIT ?
                """,
                (fts_query, limit),
            ).fetchall()
        return [
            SearchHit(r["conversation_id"], r["title"], r["message_id"], r["role"], r["snippet"])
            for r in rows
        ]

    # -- export / import --------------------------------------------------------------------
    def export_json(self, conversation_id: int) -> dict[str, Any]:
        """Return the whole conversation, every branch and trace included, as JSON-ready data."""
        conv = self.get_conversation(conversation_id)
        messages = []
        for m in self.all_messages(conversation_id):
            item = asdict(m)
            del item["conversation_id"]
            trace = self.get_trace(m.id)
            if trace is not None:
                item["trace"] = trace
            messages.append(item)
        return {
            "format": EXPORT_FORMAT,
            "title": conv.title,
            "created": conv.created,
            "updated": conv.updated,
            "model": conv.model,
            "system_prompt": conv.system_prompt,
            "current_leaf": conv.current_leaf,
            "meta": conv.meta,
            "messages": messages,
        }

    def export_markdown(self, conversation_id: int) -> str:
        """Return the conversation's current branch as readable Markdown."""
        conv = self.get_conversation(conversation_id)
        lines = [f"# {conv.title}", ""]
        if conv.model:
            lines += [f"*Model: {conv.model}*", ""]
        if conv.system_prompt:
            lines += ["> **System:** " + conv.system_prompt.replace("\n", "\n> "), ""]
        for m in self.history(conversation_id):
            label = {"user": "You", "assistant": "Assistant", "system": "System", "tool": "Tool"}[m.role]
            suffix = " *(incomplete)*" if m.status == "incomplete" else ""
            lines += [f"## {label}{suffix}", "", m.content, ""]
        return "\n".join(lines).rstrip() + "\n"

    def import_json(self, data: dict[str, Any]) -> Conversation:
        """Create a new conversation from :meth:`export_json` data; ids are assigned afresh."""
        if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
            raise StoreError(f"This is not a Parley conversation export (expected format {EXPORT_FORMAT}).")
        messages = data.get("messages")
        if not isinstance(messages, list):
            raise StoreError("The export has no list of messages.")
        id_map: dict[int, int] = {}
        now = time.time()
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO conversations(title, created, updated, model, system_prompt, meta)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (str(data.get("title") or DEFAULT_TITLE), float(data.get("created") or now), now,
                 data.get("model"), data.get("system_prompt"), json.dumps(data.get("meta") or {})),
            )
            conversation_id = cur.lastrowid
            for index, m in enumerate(messages):
                try:
                    role, content = m["role"], m["content"]
                    if role not in ROLES or not isinstance(content, str):
                        raise ValueError
                    old_parent = m.get("parent_id")
                    parent = id_map[old_parent] if old_parent is not None else None
                    status = m.get("status", "complete")
                    if status not in STATUSES:
                        raise ValueError
                except (KeyError, TypeError, ValueError):
                    raise StoreError(f"Message {index + 1} of the export is malformed.") from None
                cur = db.execute(
                    "INSERT INTO messages(conversation_id, parent_id, role, content, created, model,"
                    " options, stats, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (conversation_id, parent, role, content, float(m.get("created") or now),
                     m.get("model"), json.dumps(m.get("options") or {}), json.dumps(m.get("stats") or {}),
                     status),
                )
                id_map[m.get("id", -index - 1)] = cur.lastrowid
                trace = m.get("trace")
                if isinstance(trace, dict):
                    db.execute(
                        "INSERT INTO traces(message_id, prompt, entries) VALUES (?, ?, ?)",
                        (cur.lastrowid, str(trace.get("prompt", "")), json.dumps(trace.get("entries", []))),
                    )
            leaf = id_map.get(data.get("current_leaf"))
            if leaf is None and id_map:
                leaf = list(id_map.values())[-1]
            db.execute("UPDATE conversations SET current_leaf=? WHERE id=?", (leaf, conversation_id))
        return self.get_conversation(conversation_id)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the store's lock; rolls back on any error."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock):
        self._db, self._lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
            else:
                self._db.execute("ROLLBACK")
        finally:
            self._lock.release()


def _split_sql(script: str) -> Iterator[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()


def _title_from(content: str) -> str:
    first_line = content.strip().splitlines()[0] if content.strip() else DEFAULT_TITLE
    return first_line[:60] + ("…" if len(first_line) > 60 else "")


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"], title=row["title"], created=row["created"], updated=row["updated"],
        model=row["model"], system_prompt=row["system_prompt"], current_leaf=row["current_leaf"],
        meta=json.loads(row["meta"] or "{}"),
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"], conversation_id=row["conversation_id"], parent_id=row["parent_id"],
        role=row["role"], content=row["content"], created=row["created"], model=row["model"],
        options=json.loads(row["options"] or "{}"), stats=json.loads(row["stats"] or "{}"),
        status=row["status"],
    )
