"""Collections shared on a real Chroma server (``chroma run`` on a loopback port), with the real
embedder: several Parley instances, each with its own data folder, see the same collection."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from desktop_app_local_docs.embedder import Embedder
from desktop_app_local_docs.index import DocsError, DocsIndex, ServerUnavailable

CORPUS = Path(__file__).resolve().parents[3] / "tests" / "data" / "docs"
KAYAKS = "When must kayaks be returned?"


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture
def folders(tmp_path):
    """Two small folders of the test corpus (faq: 4 files, recipes: 4 files)."""
    shutil.copytree(CORPUS / "faq", tmp_path / "docs" / "faq")
    shutil.copytree(CORPUS / "recipes", tmp_path / "docs" / "recipes")
    return tmp_path / "docs" / "faq", tmp_path / "docs" / "recipes"


@pytest.fixture
def instances(tmp_path, embedder):
    """Two instances: each its own docs.db (keyword index, bookkeeping) and embedded store."""
    made = [DocsIndex(tmp_path / "alice", embedder), DocsIndex(tmp_path / "bob", embedder)]
    yield made
    for index in made:
        index.close()


def vector_paths(index, name, query):
    """Files of the vector store's nearest chunks (after catching up, as a search does)."""
    store = index.store(name)
    store.sync()
    [vector] = index.embedder.encode([query])
    return {Path(h.path).name for h in store.query(vector, 5)}


def keyword_paths(index, name, words):
    return {Path(row[1]).name for row in index._keyword(name, words, 10)}


def cached_chunk_ids(index, name):
    return sorted(row[0] for row in index.db.execute("SELECT id FROM chunks WHERE collection=?", (name,)))


def test_two_contexts_share_one_collection(tmp_path, monkeypatch, capsys, chroma_server, shared_name, folders):
    """Two Parleys (own PARLEY_HOME each) through `parley docs`; what one indexes and removes, the other sees."""
    from desktop_app.cli import main
    from desktop_app.context import build_context
    from desktop_app.core.paths import AppPaths
    from desktop_app_local_docs import state

    faq, _ = folders

    def as_user(who):
        monkeypatch.setenv("PARLEY_HOME", str(tmp_path / who))

    def context_of(who):
        as_user(who)
        return build_context(AppPaths.default().ensure())

    as_user("alice")
    assert main(["docs", "add", shared_name, str(faq), "--server", chroma_server.url]) == 0
    assert "4 indexed" in capsys.readouterr().out
    as_user("bob")  # only searches: no folder of its own
    assert main(["docs", "add", shared_name, "--server", chroma_server.url]) == 0
    bob = context_of("bob")
    try:
        hit = state.index.search([shared_name], KAYAKS, k=1)[0]
        assert hit.path == str(faq / "kayaks.txt") and hit.similarity > 0.5
        assert "kayaks.txt" in vector_paths(state.index, shared_name, KAYAKS)
        assert "kayaks.txt" in keyword_paths(state.index, shared_name, "kayaks sunset")
        assert state.index.collections()[shared_name]["files"] == 4
    finally:
        bob.close()
    (faq / "kayaks.txt").unlink()
    as_user("alice")
    assert main(["docs", "index", shared_name]) == 0
    assert "1 removed" in capsys.readouterr().out
    # Bob's keyword index still holds the file until his next search catches up with the server.
    bob = context_of("bob")
    try:
        assert "kayaks.txt" in keyword_paths(state.index, shared_name, "kayaks sunset")
        hits = state.index.search([shared_name], KAYAKS, k=5)
        assert hits and all(Path(h.path).name != "kayaks.txt" for h in hits)
        assert "kayaks.txt" not in keyword_paths(state.index, shared_name, "kayaks sunset")
        assert "kayaks.txt" not in vector_paths(state.index, shared_name, KAYAKS)
        assert state.index.collections()[shared_name]["files"] == 3
    finally:
        bob.close()
    as_user("bob")
    assert main(["docs", "list"]) == 0
    assert f"shared on {chroma_server.url}" in capsys.readouterr().out


def test_what_one_running_instance_indexes_the_other_finds_at_its_next_search(instances, chroma_server,
                                                                              shared_name, folders):
    alice, bob = instances
    faq, _ = folders
    alice.add_collection(shared_name, [str(faq)], server=chroma_server.url)
    bob.add_collection(shared_name, [], server=chroma_server.url)
    assert bob.search([shared_name], KAYAKS) == []
    assert alice.index(shared_name).indexed == 4
    assert "kayaks.txt" in vector_paths(bob, shared_name, KAYAKS)
    assert "kayaks.txt" in keyword_paths(bob, shared_name, "kayaks sunset")
    # A changed file: the new text everywhere, the old one nowhere.
    (faq / "kayaks.txt").write_text("Kayaks must now be back at the boathouse by 19:30.\n")
    assert alice.index(shared_name).indexed == 1
    assert "19:30" in bob.search([shared_name], KAYAKS, k=1)[0].text
    assert keyword_paths(bob, shared_name, "sunset") == set()
    # The server's chunks, and both keyword indexes, hold exactly the same chunks, once each.
    on_server = sorted(bob.chunk_ids(shared_name))
    assert on_server == cached_chunk_ids(bob, shared_name) == cached_chunk_ids(alice, shared_name)
    assert len(on_server) == bob.collections()[shared_name]["chunks"] == 4


def test_each_instance_updates_only_files_under_its_own_folders(instances, chroma_server, shared_name, folders):
    alice, bob = instances
    faq, recipes = folders
    alice.add_collection(shared_name, [str(faq)], server=chroma_server.url)
    bob.add_collection(shared_name, [str(recipes)], server=chroma_server.url)
    alice.index(shared_name)
    report = bob.index(shared_name)
    assert report.indexed == 4 and report.removed == 0  # alice's files are not bob's to remove
    (recipes / "rye_bread.txt").unlink()
    assert bob.index(shared_name).removed == 1
    assert alice.index(shared_name).removed == 0
    for index in (alice, bob):
        index.sync(shared_name)
        assert index.collections()[shared_name]["files"] == 7
    assert "fish_soup.md" in {Path(h.path).name for h in alice.search([shared_name], "fish soup saffron")}
    # Renaming is local; removing here leaves the collection to the others, --on-server deletes it.
    alice.rename_collection(shared_name, "ours")
    assert "kayaks.txt" in {Path(h.path).name for h in alice.search(["ours"], KAYAKS)}
    alice.remove_collection("ours")
    assert bob.search([shared_name], KAYAKS)
    alice.add_collection(shared_name, [], server=chroma_server.url)
    bob.remove_collection(shared_name, on_server=True)
    with pytest.raises(DocsError, match="no longer on"):
        alice.search([shared_name], KAYAKS)


def test_two_instances_indexing_at_once_end_up_consistent(instances, chroma_server, shared_name, folders):
    alice, bob = instances
    faq, recipes = folders
    # Both have the faq folder (as on a shared drive); recipes only alice.
    alice.add_collection(shared_name, [str(faq), str(recipes)], server=chroma_server.url)
    bob.add_collection(shared_name, [str(faq)], server=chroma_server.url)
    start = threading.Barrier(2)
    errors = []

    def run(index):
        try:
            start.wait()
            index.index(shared_name)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in (alice, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for index in (alice, bob):
        index.sync(shared_name)
        info = index.collections()[shared_name]
        assert (info["files"], info["chunks"], info["incomplete"]) == (8, 8, 0)
    on_server = sorted(alice.chunk_ids(shared_name))
    assert on_server == cached_chunk_ids(alice, shared_name) == cached_chunk_ids(bob, shared_name)
    assert len(set(on_server)) == 8


def test_a_file_a_lost_race_left_incomplete_is_left_out_then_stored_again(instances, chroma_server, shared_name,
                                                                          folders):
    alice, bob = instances
    faq, _ = folders
    alice.add_collection(shared_name, [str(faq)], server=chroma_server.url)
    bob.add_collection(shared_name, [str(faq)], server=chroma_server.url)
    alice.index(shared_name)
    # What a writer that lost a race leaves: the winner's record, and the winner's chunks deleted
    # by the loser's clean-up; then the loser announces a new generation.
    store = alice.store(shared_name)
    store._chunks.delete(where={"path": str(faq / "kayaks.txt")})
    store._writing()
    store.commit()
    bob.sync(shared_name)
    assert bob.collections()[shared_name]["incomplete"] == 1
    assert all(Path(h.path).name != "kayaks.txt" for h in bob.search([shared_name], KAYAKS, k=5))
    assert "kayaks.txt" not in keyword_paths(bob, shared_name, "kayaks sunset")
    # Bob has the file: his next run stores it again, for everyone.
    assert bob.index(shared_name).indexed == 1
    assert bob.collections()[shared_name]["incomplete"] == 0
    assert Path(alice.search([shared_name], KAYAKS, k=1)[0].path).name == "kayaks.txt"
    assert "kayaks.txt" in keyword_paths(alice, shared_name, "kayaks sunset")


def test_writes_never_announced_are_announced_at_the_next_sync(instances, chroma_server, shared_name, folders,
                                                               monkeypatch):
    from desktop_app_local_docs.server_store import ServerStore

    alice, bob = instances
    faq, _ = folders
    alice.add_collection(shared_name, [str(faq)], server=chroma_server.url)
    bob.add_collection(shared_name, [], server=chroma_server.url)
    assert bob.search([shared_name], KAYAKS) == []  # bob has caught up with the empty collection
    real = ServerStore._announce

    def server_gone(self):
        raise ServerUnavailable("the server went away")

    monkeypatch.setattr(ServerStore, "_announce", server_gone)
    with pytest.raises(ServerUnavailable):
        alice.index(shared_name)
    monkeypatch.setattr(ServerStore, "_announce", real)
    # The files are on the server, but nobody was told: bob's results stay consistent (none).
    assert bob.search([shared_name], KAYAKS) == [] and keyword_paths(bob, shared_name, "kayaks") == set()
    alice.search([shared_name], KAYAKS)  # alice's next sync announces them
    assert Path(bob.search([shared_name], KAYAKS, k=1)[0].path).name == "kayaks.txt"


def test_a_server_that_goes_down_gives_a_clear_error_and_nothing_is_lost(tmp_path, instances, folders):
    from tests.chroma_server import ChromaServerProcess

    alice, _ = instances
    faq, _ = folders
    with ChromaServerProcess(tmp_path / "own-server") as server:
        alice.add_collection("team", [str(faq)], server=server.url)
        alice.index("team")
        server.stop()
        for action in (lambda: alice.search(["team"], KAYAKS), lambda: alice.index("team")):
            with pytest.raises(ServerUnavailable, match="cannot be reached") as error:
                action()
            assert server.url in str(error.value) and "chroma run" in str(error.value)
        # Nothing local is lost: the collection, its counts and its keyword index are all there.
        assert alice.collections()["team"]["files"] == 4
        assert "kayaks.txt" in keyword_paths(alice, "team", "kayaks sunset")
        server.start()  # the same folder and port: the same client works again
        assert Path(alice.search(["team"], KAYAKS, k=1)[0].path).name == "kayaks.txt"
        assert alice.index("team").unchanged == 4


def test_bad_server_addresses_get_a_clear_message(tmp_path, capsys, monkeypatch, instances, folders):
    import http.server

    from desktop_app.cli import main
    from tests.chroma_server import free_port

    alice, _ = instances
    faq, _ = folders
    closed = f"http://127.0.0.1:{free_port()}"
    for url, message in (("ftp://127.0.0.1:8000", "not an http:// or https:// address"),
                         ("127.0.0.1:8000", "has no scheme"),
                         ("http://127.0.0.1:8000/some/path", "only the server's address"),
                         ("http://127.0.0.1:notaport", "port"),
                         (closed, "cannot be reached")):
        with pytest.raises(DocsError, match=message):
            alice.add_collection("x", [str(faq)], server=url)
    # Something that answers HTTP, but is not a Chroma server.
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DocsError, match="not as a Chroma server"):
            alice.add_collection("x", [str(faq)], server=f"http://127.0.0.1:{web.server_address[1]}")
    finally:
        web.shutdown()
    assert alice.collections() == {}  # nothing recorded for a wrong address
    monkeypatch.setenv("PARLEY_HOME", str(tmp_path / "cli"))
    assert main(["docs", "add", "x", str(faq), "--server", closed]) == 1
    assert "cannot be reached" in capsys.readouterr().err


def test_an_instance_with_another_embedder_is_refused(tmp_path, instances, chroma_server, shared_name, folders):
    from desktop_app_local_docs.embedder import resolve_embedder

    alice, _ = instances
    alice.add_collection(shared_name, [str(folders[0])], server=chroma_server.url)
    other = DocsIndex(tmp_path / "other", Embedder(resolve_embedder("")))  # same weights, another name
    try:
        with pytest.raises(DocsError, match="indexed with the embedder 'all-MiniLM-L6-v2'"):
            other.add_collection(shared_name, [], server=chroma_server.url)
        with pytest.raises(DocsError, match="already a collection called"):
            alice.add_collection(shared_name, [], server="http://127.0.0.1:1")
    finally:
        other.close()


def test_the_panel_adds_a_folder_to_a_shared_collection(qtbot, tmp_path, paths, chroma_server, shared_name, folders):
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from desktop_app.context import build_context
    from desktop_app.ui.app import create_window
    from desktop_app_local_docs import state
    from desktop_app_local_docs.ui import AddCollectionDialog, DocumentsPanel
    from tests.chroma_server import ChromaServerProcess, free_port

    faq, recipes = folders
    context = build_context(paths)
    window = create_window(context, load_model=False)
    qtbot.addWidget(window)
    try:
        panel = window.findChild(DocumentsPanel)
        dialog = AddCollectionDialog(str(faq), panel)
        assert dialog.choice() == ("faq", None) and not dialog.server.isEnabled()  # this computer by default
        dialog.name.setText(shared_name)
        dialog.shared.setChecked(True)
        qtbot.keyClicks(dialog.server, chroma_server.url)
        name, server = dialog.choice()
        assert (name, server) == (shared_name, chroma_server.url)
        with qtbot.waitSignal(panel.bridge.finished, timeout=120_000) as done:
            panel.add_folder(name, str(faq), server)
        assert done.args[1].indexed == 4 and panel.checked() == [shared_name]
        assert f"shared on {chroma_server.url}" in panel.list.item(0).text()
        assert state.index.collections()[shared_name]["server"] == chroma_server.url
        # A server that is not there: a clear message, and nothing added.
        with qtbot.waitSignal(window.error_shown, timeout=30_000) as shown:
            panel.add_folder("elsewhere", str(faq), f"http://127.0.0.1:{free_port()}")
        assert "cannot be reached" in shown.args[0] and panel.list.count() == 1
        # A collection whose server goes away: the periodic check says so once, and still
        # updates the other collections.
        with ChromaServerProcess(tmp_path / "own-server") as own:
            with qtbot.waitSignal(panel.bridge.finished, timeout=120_000):
                panel.add_folder("a-gone", str(recipes), own.url)
        errors = []
        window.error_shown.connect(errors.append)
        for _ in range(2):
            with qtbot.waitSignal(panel.bridge.finished, timeout=60_000) as done:
                panel.check_for_changes()
            assert done.args[0] == shared_name
        assert len(errors) == 1 and "a-gone" in errors[0] and "cannot be reached" in errors[0]
    finally:
        window.close()
        context.close()
