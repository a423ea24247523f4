"""Document search against a Chroma server (``chroma run``) next to the embedded store.

Both collections hold the same chunks (at least 10,000, with the same vectors and text) and are
searched with Parley's own hybrid search (query embedding, vectors, BM25 keywords, fusion), the
same queries in alternating order, so the machine's load falls on both alike; the ratio of the
two is taken within this run. The server is started here on a free loopback port, in a temporary
folder; the shared collection is written by one instance ("alice") and searched by another
("bob"), whose keyword index is a cache caught up from the server.

Also printed: how long bob's first search takes (it fetches every chunk's text), the search
right after alice changed one file (bob catches up: the file records and that file's chunks),
and the query embedding alone (the part both pay).

Run: ``.venv/bin/python benchmarks/remote_docs.py [--chunks 10000] [--queries 100]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins" / "local_docs"))

from benchmarks.ingest import WORDS, write_corpus  # noqa: E402
from tests.chroma_server import ChromaServerProcess  # noqa: E402

CHUNKS_PER_FILE = 10


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p95) of milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


def fill(store, seed: list[str], vectors: list[list[float]], chunks: int) -> None:
    """Store ``chunks`` chunks as files of CHUNKS_PER_FILE, cycling through the seed chunks."""
    from desktop_app_local_docs.chunking import Chunk
    from desktop_app_local_docs.store import PreparedFile

    for f in range((chunks + CHUNKS_PER_FILE - 1) // CHUNKS_PER_FILE):
        picked = [(f * CHUNKS_PER_FILE + i) % len(seed) for i in range(CHUNKS_PER_FILE)]
        # A unique first line per chunk: no two chunks of the collection are the same text.
        texts = [f"Part {f}-{i}. {seed[p]}" for i, p in enumerate(picked)]
        path = f"/benchmark/doc{f:05d}.txt"
        digest = f"{f:064x}"
        file = PreparedFile(path, 1000, 1.0, digest, [Chunk(t, None, None, 0, len(t)) for t in texts],
                            store.chunk_ids_for(path, digest, texts))
        store.put_file(file, [vectors[p] for p in picked])
    store.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000, help="chunks in each collection")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    from desktop_app_local_docs.chunking import Chunk
    from desktop_app_local_docs.embedder import Embedder
    from desktop_app_local_docs.index import DocsIndex
    from desktop_app_local_docs.store import PreparedFile

    rng = random.Random(7)
    embedder = Embedder()
    embedder.encode(["warm up"])
    with tempfile.TemporaryDirectory() as tmp, ChromaServerProcess(Path(tmp) / "server") as server:
        tmp = Path(tmp)
        seed_folder = tmp / "seed"
        seed_folder.mkdir()
        write_corpus(seed_folder, 40, 8, rng)
        # Four instances, so that each searched docs.db holds only the collection searched (the
        # keyword index of one folder is shared by its collections): the seed is indexed apart;
        # carol keeps the embedded collection; alice writes the shared one and bob searches it.
        seeder, carol, alice, bob = (DocsIndex(tmp / who, embedder) for who in ("seeder", "carol", "alice", "bob"))
        seeder.add_collection("seed", [str(seed_folder)])
        seeder.index("seed")
        # Embedding 10k chunks takes minutes on 2 cores, so the collections reuse the seed's
        # vectors (the search cost is the same).
        stored = seeder._vectors("seed").get(include=["embeddings", "documents"])
        seed, vectors = stored["documents"], [list(map(float, v)) for v in stored["embeddings"]]
        carol.add_collection("embedded", [str(seed_folder)])
        alice.add_collection("shared", [], server=server.url)
        started = time.perf_counter()
        fill(carol.store("embedded"), seed, vectors, args.chunks)
        embedded_fill = time.perf_counter() - started
        started = time.perf_counter()
        fill(alice.store("shared"), seed, vectors, args.chunks)
        server_fill = time.perf_counter() - started
        bob.add_collection("shared", [], server=server.url)
        started = time.perf_counter()
        bob.search(["shared"], "harbour ferry", k=5)
        first_sync = time.perf_counter() - started
        carol.search(["embedded"], "harbour ferry", k=5)
        count = len(bob.chunk_ids("shared"))
        files = bob.collections()["shared"]["files"]
        queries = [" ".join(rng.choice(WORDS) for _ in range(3)) for _ in range(args.queries)]
        timings: dict[str, list[float]] = {"embedded": [], "server": [], "embedding": []}
        for number, query in enumerate(queries):
            runs = [("embedded", carol, "embedded"), ("server", bob, "shared")]
            for label, index, name in runs if number % 2 == 0 else reversed(runs):
                start = time.perf_counter()
                hits = index.search([name], query, k=5)
                timings[label].append((time.perf_counter() - start) * 1000)
                assert hits, f"no hits for {query!r} in {label}"
            start = time.perf_counter()
            embedder.encode([query])
            timings["embedding"].append((time.perf_counter() - start) * 1000)

        # Right after another instance changed a file: bob's search catches up first.
        catch_up = []
        shared = alice.store("shared")
        for round_ in range(10):
            text = f"Changed {round_}. {seed[round_]}"
            path, digest = "/benchmark/doc00000.txt", f"changed{round_}"
            shared.put_file(PreparedFile(path, 1000, 2.0 + round_, digest, [Chunk(text, None, None, 0, len(text))],
                                         shared.chunk_ids_for(path, digest, [text])), [vectors[round_]])
            shared.commit()
            start = time.perf_counter()
            bob.search(["shared"], queries[round_], k=5)
            catch_up.append((time.perf_counter() - start) * 1000)

        e50, e95 = percentiles(timings["embedded"])
        s50, s95 = percentiles(timings["server"])
        q50, q95 = percentiles(timings["embedding"])
        print(f"document search over {count:,} chunks in {files:,} files (vector + BM25, query embedding included), "
              f"{len(queries)} queries each, alternating:")
        print(f"  embedded store           p50 {e50:6.1f} ms   p95 {e95:6.1f} ms")
        print(f"  Chroma server (loopback) p50 {s50:6.1f} ms   p95 {s95:6.1f} ms")
        print(f"  ratio server / embedded: p50 {s50 / e50:.2f}x, p95 {s95 / e95:.2f}x")
        print(f"  of which query embedding p50 {q50:6.1f} ms   p95 {q95:6.1f} ms (the same for both)")
        print(f"  first search of a fresh instance (fetches all {count:,} chunks' text): {first_sync:.1f} s")
        print(f"  search right after another instance changed one file: median {statistics.median(catch_up):.1f} ms "
              "(catching up the records and that file)")
        print(f"  writing {args.chunks:,} chunks: embedded {embedded_fill:.1f} s, server {server_fill:.1f} s "
              f"({server_fill / embedded_fill:.2f}x)")
        for index in (seeder, carol, alice, bob):
            index.close()


if __name__ == "__main__":
    main()
