"""Indexing and retrieval with the real embedder and chromadb, on the corpus in tests/data/docs."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desktop_app_local_docs.embedder import Embedder
from desktop_app_local_docs.extract import SkipFile, extract
from desktop_app_local_docs.index import DocsError, DocsIndex

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"
CORPUS = DATA / "docs"


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture
def corpus(tmp_path):
    target = tmp_path / "corpus"
    shutil.copytree(CORPUS, target)
    return target


@pytest.fixture
def index(tmp_path, embedder):
    idx = DocsIndex(tmp_path / "index", embedder)
    yield idx
    idx.close()


def test_recall_at_5_on_the_question_set(index, corpus):
    index.add_collection("corpus", [str(corpus)])
    report = index.index("corpus")
    assert report.indexed == 28 and len(report.skipped) == 5
    questions = json.loads((DATA / "docs_questions.json").read_text())
    found = 0
    for q in questions:
        hits = index.search(["corpus"], q["question"], k=5)
        found += any(Path(h.path) == corpus / q["file"] for h in hits)
    recall = found / len(questions)
    assert recall >= 0.9, f"recall@5 = {recall:.2f}"


def test_every_bad_file_is_skipped_with_its_reason(index, corpus, tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret")
    with open(corpus / "broken" / "locked.pdf", "wb") as handle:
        writer.write(handle)
    (corpus / "broken" / "huge.txt").write_text("x" * 3_000_000)
    (corpus / "broken" / "loop").symlink_to(corpus / "broken")  # a symlink loop
    (corpus / "broken" / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    small = DocsIndex(tmp_path / "index2", index.embedder, max_bytes=2_000_000)
    try:
        small.add_collection("c", [str(corpus)])
        report = small.index("c")
        reasons = {Path(p).name: r for p, r in report.skipped.items()}
        assert reasons["empty.txt"] == "empty file"
        assert reasons["binary.md"] == "binary file"
        assert reasons["corrupt.pdf"].startswith("corrupt PDF")
        assert reasons["corrupt.docx"].startswith("corrupt DOCX")
        assert reasons["picture.png"] == "unsupported file type .png"
        assert reasons["locked.pdf"].startswith("encrypted PDF")
        assert reasons["huge.txt"].startswith("larger than the 2 MB limit")
        assert reasons["dangling.md"].startswith("cannot be read")
        assert report.indexed == 28
        assert small.skipped("c") == {p: r for p, r in report.skipped.items()}
    finally:
        small.close()


def test_formats_keep_pages_headings_and_visible_text_only(tmp_path):
    sections = extract(CORPUS / "projects" / "puffin.pdf", 10_000_000)
    assert sections[0].page == 1 and "Tromsø" in sections[0].text
    sections = extract(CORPUS / "projects" / "heron.docx", 10_000_000)
    assert sections[0].heading == "Project Heron" and "3 March" in sections[0].text
    html = extract(CORPUS / "faq" / "newsletter.html", 10_000_000)[0].text
    assert "Tidewater Notes" in html and "never indexed" not in html and "color: red" not in html
    md = extract(CORPUS / "handbook" / "bakery.md", 10_000_000)
    assert md[0].heading == "The Lindqvist bakery"
    with pytest.raises(SkipFile, match="unsupported"):
        extract(CORPUS / "broken" / "picture.png", 10_000_000)


def test_chunks_respect_the_token_budget_and_paragraphs(index, embedder, tmp_path):
    from desktop_app_local_docs.chunking import chunk_sections
    from desktop_app_local_docs.extract import Section

    paragraphs = [f"Paragraph {i}. " + "The quick brown fox jumps over the lazy dog. " * (3 + i % 5) for i in range(30)]
    paragraphs.append("word " * 900)  # one paragraph longer than a chunk
    text = "\n\n".join(paragraphs)
    chunks = chunk_sections([Section(text, offset=100)], embedder.tokenizer, 120, 20)
    for chunk in chunks:
        assert len(embedder.tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 120
        assert text[chunk.start - 100:chunk.end - 100].strip() == chunk.text
    # Whole paragraphs: no chunk starts in the middle of a normal paragraph.
    assert all(c.text.startswith(("Paragraph", "word")) for c in chunks)
    assert len([c for c in chunks if c.text.startswith("word")]) >= 7


def test_incremental_reindex_touches_only_changed_files_and_removes_deleted_ones(index, corpus):
    index.add_collection("c", [str(corpus)])
    index.index("c")
    again = index.index("c")
    assert again.indexed == 0 and again.chunks == 0 and again.unchanged == 33
    (corpus / "faq" / "kayaks.txt").write_text("Kayaks now have to be back by 20:00 and rinsed.\n")
    os.utime(corpus / "handbook" / "parking.txt")  # touched, content unchanged: nothing re-embedded
    (corpus / "recipes" / "rye_bread.txt").unlink()
    report = index.index("c")
    assert report.indexed == 1 and report.removed == 1 and report.unchanged == 31
    hits = index.search(["c"], "By when must kayaks be back?", k=3)
    assert Path(hits[0].path).name == "kayaks.txt" and "20:00" in hits[0].text
    assert not any(Path(h.path).name == "rye_bread.txt" for h in index.search(["c"], "rye bread dough", k=5))
    ids = index.chunk_ids("c")
    assert len(ids) == len(set(ids)) == index.collections()["c"]["chunks"]


# Three cold starts of the CLI (torch, sentence-transformers, chromadb) and 224 files to embed:
# minutes on one slow core.
@pytest.mark.timeout(1800)
def test_an_interrupted_run_resumes_without_duplicates(tmp_path, corpus):
    from desktop_app_local_docs.index import STALL_FOR_TEST_ENV

    big = tmp_path / "big"
    for i in range(8):
        shutil.copytree(corpus, big / f"copy{i}")
    env = dict(os.environ, PARLEY_HOME=str(tmp_path / "home"))
    add = subprocess.run([sys.executable, "-m", "desktop_app.cli", "docs", "add", "big", str(big), "--no-index"],
                         env=env, capture_output=True, text=True)
    assert add.returncode == 0, add.stderr
    # The run stalls at a known point, half-way through storing its second batch of files (their
    # vectors written, their rows not), and is killed there: however fast or slow the machine.
    stalled, log = tmp_path / "stalled", tmp_path / "index.log"
    with log.open("wb") as output:  # a file, not a pipe nobody reads: the run must never block on it
        proc = subprocess.Popen([sys.executable, "-m", "desktop_app.cli", "docs", "index", "big"],
                                env=dict(env, **{STALL_FOR_TEST_ENV: str(stalled)}),
                                stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 1200  # only a guard against a run that never gets there
        while not stalled.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stalled.exists(), f"the run did not reach its second batch (exit {proc.poll()}): {log.read_text()}"
    finally:
        proc.kill()  # SIGKILL: no chance to tidy up
        proc.wait()
    db = sqlite3.connect(tmp_path / "home" / "data" / "documents" / "docs.db")
    try:
        done = db.execute("SELECT COUNT(*) FROM files WHERE status='indexed'").fetchone()[0]
    finally:
        db.close()
    assert 0 < done < 224, "the run must be stopped part-way"
    rerun = subprocess.run([sys.executable, "-m", "desktop_app.cli", "docs", "index", "big"], env=env,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    idx = DocsIndex(tmp_path / "home" / "data" / "documents", Embedder())
    try:
        info = idx.collections()["big"]
        assert info["files"] == 224
        ids = idx.chunk_ids("big")
        assert len(ids) == len(set(ids)) == info["chunks"]
        fts = idx.db.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM chunks WHERE collection='big'").fetchone()
        assert fts == (info["chunks"], info["chunks"])
    finally:
        idx.close()


def test_changing_the_embedder_reindexes_and_vectors_never_mix(tmp_path, corpus, embedder):
    from desktop_app_local_docs.embedder import resolve_embedder

    first = DocsIndex(tmp_path / "i", embedder)
    first.add_collection("c", [str(corpus / "faq")])
    assert first.index("c").indexed == 4
    first.close()
    # The same weights under another name stand in for a different model.
    other = DocsIndex(tmp_path / "i", Embedder(resolve_embedder("")))
    try:
        report = other.index("c")
        assert report.indexed == 4 and report.unchanged == 0
        assert other.collections()["c"]["embedder"] == other.embedder.name
        names = [c.name for c in other.client.list_collections()]
        assert len(names) == 1  # the old model's vectors are gone
    finally:
        other.close()


def test_collections_add_rename_remove(index, corpus):
    index.add_collection("a", [str(corpus / "faq")])
    index.add_collection("a", [str(corpus / "recipes")])
    assert len(index.collections()["a"]["paths"]) == 2
    index.index("a")
    index.rename_collection("a", "b")
    assert list(index.collections()) == ["b"]
    assert index.search(["b"], "fish soup spirit", k=1)[0].path.endswith("fish_soup.md")
    index.remove_collection("b")
    assert index.collections() == {}
    assert (corpus / "faq" / "kayaks.txt").exists()
    with pytest.raises(DocsError, match="no collection"):
        index.search(["b"], "x")
    with pytest.raises(DocsError, match="does not exist"):
        index.add_collection("x", [str(corpus / "missing")])


def test_nothing_relevant_gives_no_hits(index, corpus):
    index.add_collection("c", [str(corpus / "recipes")])
    index.index("c")
    assert index.search(["c"], "quantum chromodynamics lattice gauge", k=5, min_similarity=0.35) == []


def test_an_unreachable_folder_keeps_its_index_and_pipes_never_block(index, corpus, tmp_path):
    index.add_collection("c", [str(corpus / "faq")])
    assert index.index("c").indexed == 4
    moved = tmp_path / "unplugged"
    (corpus / "faq").rename(moved)  # like a drive that is not mounted
    report = index.index("c")
    assert report.removed == 0 and index.collections()["c"]["files"] == 4
    assert any("folder not found" in r for r in report.skipped.values())
    moved.rename(corpus / "faq")
    os.mkfifo(corpus / "faq" / "pipe.txt")  # reading it would wait forever
    report = index.index("c")
    assert report.skipped[str(corpus / "faq" / "pipe.txt")] == "not a regular file"


def test_common_words_alone_do_not_make_a_passage_relevant(index, corpus):
    index.add_collection("c", [str(corpus / "recipes")])
    index.index("c")
    assert index.search(["c"], "What is the capital of the country where they have the most?", k=5,
                        min_similarity=0.5) == []


def test_renaming_onto_an_existing_collection_is_refused(index, corpus):
    index.add_collection("a", [str(corpus / "faq")])
    index.add_collection("b", [str(corpus / "recipes")])
    with pytest.raises(DocsError, match="already a collection"):
        index.rename_collection("a", " b ")
    assert set(index.collections()) == {"a", "b"}


def test_loading_the_embedder_leaves_the_model_hub_online():
    # HF_HUB_OFFLINE, once set, switches huggingface_hub off for the whole process (it is read at
    # import), so the Models window could no longer search or download.
    script = ("import os\n"
              "from desktop_app_local_docs.embedder import Embedder\n"
              "assert Embedder().model is not None\n"
              "assert 'HF_HUB_OFFLINE' not in os.environ, os.environ['HF_HUB_OFFLINE']\n"
              "import huggingface_hub.constants as c\n"
              "assert not c.HF_HUB_OFFLINE\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)


def test_keyword_search_leaves_out_terms_in_most_chunks_of_a_large_index(tmp_path):
    from desktop_app_local_docs.bookkeeping import COMMON_TERMS_FROM, Bookkeeping

    books = Bookkeeping(tmp_path / "docs.db")
    rows = [(f"c{i}", "notes", f"/notes/{i}.txt", 0, "", 0, f"harbour report number {i}"
             + (" ferry timetable" if i == 7 else "")) for i in range(COMMON_TERMS_FROM + 10)]

    def insert(part):
        with books.transaction():
            books.db.executemany("INSERT INTO chunks(id, collection, path, page, heading, start, text)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?)", part)

    insert(rows[:5])
    # A small index keeps every term: "harbour" (in every chunk) still finds chunks.
    assert len(books.keyword("notes", ["harbour"], 3)) == 3
    insert(rows[5:])
    # A large one leaves it out: it carries no BM25 weight, and ranking every chunk is slow.
    assert books.keyword("notes", ["harbour"], 3) == []
    # A rare term still finds its chunk, ranked first, with the common one beside it.
    assert [r[0] for r in books.keyword("notes", ["harbour", "ferry"], 3)] == ["c7"]
    # A term written with an accent (folded in the index) is kept, not mistaken for a missing one.
    insert([("x1", "notes", "/notes/x.txt", 0, "", 0, "café opening hours")])
    assert [r[0] for r in books.keyword("notes", ["café"], 3)] == ["x1"]
    books.close()
