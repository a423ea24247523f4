import json
import sqlite3

import pytest

from desktop_app.core.store import EXPORT_FORMAT, MIGRATIONS, Store, StoreError


@pytest.fixture
def store(paths):
    s = Store(paths.database_file)
    yield s
    s.close()


def chat(store, *pairs):
    conv = store.create_conversation()
    for user, answer in pairs:
        store.add_message(conv.id, "user", user)
        store.add_message(conv.id, "assistant", answer)
    return store.get_conversation(conv.id)


def test_wal_mode_and_schema_version(store):
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == len(MIGRATIONS)


def test_conversations_are_listed_most_recent_first_and_titled_by_first_message(store):
    a = chat(store, ("first question", "a"))
    b = chat(store, ("second question", "b"))
    assert [c.id for c in store.list_conversations()] == [b.id, a.id]
    store.add_message(a.id, "user", "more")
    assert [c.id for c in store.list_conversations()] == [a.id, b.id]
    assert store.get_conversation(a.id).title == "first question"


def test_rename_and_delete(store):
    conv = chat(store, ("q", "a"))
    store.rename_conversation(conv.id, "  Renamed ")
    assert store.get_conversation(conv.id).title == "Renamed"
    with pytest.raises(StoreError):
        store.rename_conversation(conv.id, "   ")
    store.delete_conversation(conv.id)
    assert store.list_conversations() == []
    assert store.search("q") == []
    with pytest.raises(StoreError, match="no conversation"):
        store.delete_conversation(conv.id)


def test_branches_keep_the_old_answer_when_a_message_is_edited(store):
    conv = chat(store, ("hello", "hi"), ("what is 2+2", "5"))
    history = store.history(conv.id)
    old_question = history[2]
    edited = store.add_message(conv.id, "user", "what is 2+3", parent_id=old_question.parent_id)
    store.add_message(conv.id, "assistant", "5")
    assert [m.content for m in store.history(conv.id)] == ["hello", "hi", "what is 2+3", "5"]
    siblings = store.children(old_question.parent_id)
    assert [m.id for m in siblings] == [old_question.id, edited.id]
    store.set_current_leaf(conv.id, history[-1].id)
    assert [m.content for m in store.history(conv.id)] == ["hello", "hi", "what is 2+2", "5"]
    assert len(store.all_messages(conv.id)) == 6


def test_partial_answers_are_marked_incomplete(store):
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "tell me")
    answer = store.add_message(conv.id, "assistant", "", status="incomplete")
    store.update_message(answer.id, content="Once upon")
    got = store.get_message(answer.id)
    assert (got.content, got.status) == ("Once upon", "incomplete")
    store.update_message(answer.id, status="complete", stats={"generated_tokens": 3})
    assert store.get_message(answer.id).stats == {"generated_tokens": 3}


def test_full_text_search_finds_words_and_tolerates_syntax(store):
    chat(store, ("How do I bake sourdough bread?", "Use a starter."))
    other = chat(store, ("Explain quantum tunnelling", "Particles cross barriers."))
    hits = store.search("sourdough")
    assert len(hits) == 1 and "[sourdough]" in hits[0].snippet
    assert [h.conversation_id for h in store.search("barriers")] == [other.id]
    assert store.search('quantum "AND -OR:') == []  # no FTS syntax error reaches the user
    assert store.search("   ") == []


def test_trace_is_stored_per_answer(store):
    conv = chat(store, ("q", "a"))
    answer = store.history(conv.id)[-1]
    store.save_trace(answer.id, "<prompt>", [{"plugin": "core", "kind": "system", "content": "x"}])
    assert store.get_trace(answer.id)["entries"][0]["plugin"] == "core"


def test_markdown_export(store):
    conv = chat(store, ("What is *FTS*?", "Full-text search."))
    store.set_system_prompt(conv.id, "Be brief.")
    md = store.export_markdown(conv.id)
    assert md.startswith("# What is *FTS*?")
    assert "## You\n\nWhat is *FTS*?" in md and "## Assistant\n\nFull-text search." in md
    assert "> **System:** Be brief." in md


def test_json_export_import_round_trip_keeps_branches_and_traces(store):
    conv = chat(store, ("a", "b"), ("c", "d"))
    first = store.history(conv.id)[0]
    store.add_message(conv.id, "user", "c2", parent_id=first.id + 1)
    store.save_trace(store.history(conv.id)[1].id, "P", [{"plugin": "core"}])
    data = json.loads(json.dumps(store.export_json(conv.id)))
    assert data["format"] == EXPORT_FORMAT
    copy = store.import_json(data)
    assert copy.id != conv.id and copy.title == conv.title
    assert [m.content for m in store.history(copy.id)] == [m.content for m in store.history(conv.id)]
    assert len(store.all_messages(copy.id)) == 5
    answer = store.history(copy.id)[1]
    assert store.get_trace(answer.id)["prompt"] == "P"


@pytest.mark.parametrize("data,match", [
    ({"format": "other"}, "not a Parley"),
    ({"format": EXPORT_FORMAT}, "no list"),
    ({"format": EXPORT_FORMAT, "messages": [{"role": "wizard", "content": "x"}]}, "Message 1"),
    ({"format": EXPORT_FORMAT, "messages": [{"id": 1, "role": "user", "content": "x", "parent_id": 9}]}, "Message 1"),
])
def test_malformed_imports_are_refused_and_leave_nothing_behind(store, data, match):
    with pytest.raises(StoreError, match=match):
        store.import_json(data)
    assert store.list_conversations() == []


def test_migrations_upgrade_an_old_database(paths):
    # A database at version 0 (empty) is brought to the newest schema on open.
    sqlite3.connect(paths.database_file).close()
    s = Store(paths.database_file)
    assert s.schema_version == len(MIGRATIONS)
    s.close()
    # Reopening does not re-run migrations.
    s = Store(paths.database_file)
    assert s.schema_version == len(MIGRATIONS)
    s.close()


def test_a_newer_schema_is_refused_with_advice(paths):
    db = sqlite3.connect(paths.database_file)
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer Parley"):
        Store(paths.database_file)


def test_a_file_that_is_not_a_database_gets_a_clear_message(paths):
    paths.database_file.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="cannot be opened"):
        Store(paths.database_file)


def test_siblings_and_latest_leaf_let_the_window_switch_branches(store):
    conv = chat(store, ("q1", "a1"), ("q2", "a2"))
    q1, a1, q2, a2 = store.history(conv.id)
    q2b = store.add_message(conv.id, "user", "q2b", parent_id=a1.id)
    a2b = store.add_message(conv.id, "assistant", "a2b")
    assert [m.id for m in store.siblings(q2)] == [q2.id, q2b.id]
    assert [m.id for m in store.siblings(q1)] == [q1.id]
    assert store.latest_leaf(q2.id) == a2.id
    assert store.latest_leaf(q1.id) == a2b.id  # the newest branch wins
    assert store.latest_leaf(a2b.id) == a2b.id


def test_a_parent_from_another_conversation_is_refused(store):
    a = chat(store, ("a question", "an answer"))
    b = chat(store, ("b question", "b answer"))
    foreign = store.history(a.id)[0]
    with pytest.raises(StoreError, match="not part of conversation"):
        store.add_message(b.id, "user", "edited", parent_id=foreign.parent_id if foreign.parent_id else foreign.id)
    assert len(store.all_messages(b.id)) == 2
