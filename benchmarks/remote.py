"""Parley's remote backend against llama-server's own numbers, and what one turn costs on the wire.

llama.cpp's ``llama-server`` (built by ``make native``) serves the built-in model on 127.0.0.1.
Each round asks the same question two ways, in alternating order:

- through Parley's remote backend (``RemoteBackend.stream_chat``, as the window uses it),
  timed from Parley's side: tokens/s after the first piece, and time to first token;
- through a lean client (``httpx``, the same raw prompt to ``/completion``), for the bytes on
  the wire and a reference time to first token.

llama-server reports its own timings with every answer (``predicted_per_second``,
``prompt_ms``): the ratio "Parley's tokens/s / the server's own" is taken per answer, so it
says how much of the server's speed reaches the user through Parley. The added time to first
token is Parley's wait minus the server's prompt time. It also counts Parley's HTTP requests
per turn and the bytes per streamed token, for docs/scaling.md.

Then it runs ``benchmarks/remote_docs.py`` (document search over 10,000 chunks on a Chroma
server against the embedded store), unless ``--no-docs``.

Run: ``.venv/bin/python benchmarks/remote.py [--tokens N] [--runs N] [--threads N] [--no-docs]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins" / "remote"))
sys.path.insert(0, str(ROOT / "plugins" / "remote" / "tests"))

from desktop_app.core.engine import physical_cores  # noqa: E402
from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT  # noqa: E402
from desktop_app.core.turn import ChatMessage, GenerationOptions  # noqa: E402


def question(k: int) -> str:
    """The k-th question; all the same length in tokens for k in 10..99 (no prompt cache hit)."""
    return f"Write a long, detailed essay about the history of the Roman Empire, part {k}."


def parley_run(backend, prompt: str, tokens: int, requests: list) -> dict:
    options = GenerationOptions(temperature=0.0, repeat_penalty=1.0, max_tokens=tokens)
    messages = [ChatMessage("system", DEFAULT_MODEL_SYSTEM_PROMPT), ChatMessage("user", prompt)]
    before = len(requests)
    done = list(backend.stream_chat(messages, options))[-1]
    if type(done).__name__ != "DoneEvent":
        raise RuntimeError(done.message)
    timings = backend.last_timings
    return {"speed": done.stats.tokens_per_second, "ttft": done.stats.time_to_first_token,
            "server_speed": timings["predicted_per_second"], "server_prompt_ms": timings["prompt_ms"],
            "tokens": done.stats.generated_tokens, "requests": len(requests) - before, "text": done.text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-docs", action="store_true", help="skip the document search against a Chroma server")
    args = parser.parse_args()
    threads = args.threads or physical_cores()

    import httpx
    from remote_servers import LlamaServer  # the remote tests' llama-server starter

    from desktop_app_remote.backend import RemoteBackend
    from desktop_app_remote.engines import EngineStore

    print(f"llama-server with the built-in model, context 2048, {threads} threads, greedy, {args.tokens} tokens, "
          f"median of {args.runs} rounds", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = LlamaServer(Path(tmp) / "llama-server.log", [])
        server.command[server.command.index("-t") + 1] = str(threads)
        server.start()
        try:
            store = EngineStore(Path(tmp) / "engines.json")
            store.add("bench", server.url)
            backend = RemoteBackend(lambda: store)
            backend.load("remote:bench/smollm2")
            requests: list = []
            client = backend.client("bench")  # the backend's own connections, counted as they are used
            for http in (client._http, client._streams):
                http.event_hooks["request"].append(requests.append)
            lean = httpx.Client(base_url=server.url, timeout=300, trust_env=False)
            parley_run(backend, question(10), args.tokens, requests)  # warm-up: the system prompt is cached
            rounds = []
            for i in range(args.runs):
                prompt = question(11 + i)
                rendered = backend.render([ChatMessage("system", DEFAULT_MODEL_SYSTEM_PROMPT),
                                           ChatMessage("user", prompt)])
                order = ("parley", "lean") if i % 2 == 0 else ("lean", "parley")
                found = {}
                for name in order:
                    found[name] = (parley_run(backend, prompt, args.tokens, requests) if name == "parley"
                                   else lean_stream(lean, rendered, args.tokens))
                rounds.append(found)
            lean.close()
        finally:
            server.stop()

    def med(values):
        return statistics.median(values)

    parley = [r["parley"] for r in rounds]
    raw = [r["lean"] for r in rounds]
    print(f"Parley remote backend   {med(p['speed'] for p in parley):7.1f} tok/s (its own clock)   "
          f"TTFT {med(p['ttft'] for p in parley) * 1000:6.1f} ms   tokens per answer "
          f"{sorted({p['tokens'] for p in parley})}")
    print(f"llama-server's timings  {med(p['server_speed'] for p in parley):7.1f} tok/s (same answers)   "
          f"prompt {med(p['server_prompt_ms'] for p in parley):6.1f} ms")
    print(f"lean client (httpx)     {med(r['speed'] for r in raw):7.1f} tok/s   TTFT {med(r['ttft'] for r in raw) * 1000:6.1f} ms")
    same = sum(p["text"] == r["text"] for p, r in zip(parley, raw))
    print(f"  Parley wrote the same text as the lean client in {same} of {len(rounds)} rounds")
    ratio = [p["speed"] / p["server_speed"] for p in parley]
    print(f"Parley tokens/s / llama-server's own (goal >= 0.95): {med(ratio):.3f}x "
          f"(range {min(ratio):.3f}-{max(ratio):.3f})")
    added = [(p["ttft"] * 1000 - p["server_prompt_ms"]) for p in parley]
    print(f"Parley TTFT - the server's prompt time: {med(added):+.1f} ms")
    versus = [(p["ttft"] - r["ttft"]) * 1000 for p, r in zip(parley, raw)]
    print(f"Parley TTFT - lean client TTFT: {med(versus):+.1f} ms")
    print(f"HTTP requests per turn: {sorted({p['requests'] for p in parley})} "
          "(one streamed POST /completion, on a connection of its own; prompts longer in bytes than the "
          "context's budget add a /tokenize)")
    per_token = [r["bytes"] / max(r["tokens"], 1) for r in raw]
    print(f"bytes per streamed token (llama-server's /completion events, HTTP chunking included): {med(per_token):.0f}")
    if not args.no_docs:
        import subprocess

        print(flush=True)
        subprocess.run([sys.executable, str(Path(__file__).with_name("remote_docs.py"))], check=True)


def lean_stream(http, prompt_text: str, tokens: int) -> dict:
    """One answer read raw from llama-server: bytes, pieces, and their times. A kept-alive
    connection the server closed meanwhile (after its keep-alive time) is tried once more."""
    import httpx

    try:
        return _lean_stream(http, prompt_text, tokens)
    except httpx.RemoteProtocolError:
        return _lean_stream(http, prompt_text, tokens)


def _lean_stream(http, prompt_text: str, tokens: int) -> dict:
    body = {"prompt": prompt_text, "stream": True, "n_predict": tokens, "temperature": 0.0, "repeat_penalty": 1.0,
            "cache_prompt": True}
    start = time.perf_counter()
    first = last = 0.0
    size = 0
    text = []
    count = 0
    buffer = b""
    with http.stream("POST", "/completion", json=body) as reply:
        for raw in reply.iter_raw():
            size += len(raw)
            buffer += raw
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if not event.startswith(b"data: "):
                    continue
                data = json.loads(event[6:])
                if data.get("content"):
                    last = time.perf_counter()
                    first = first or last
                    text.append(data["content"])
                if data.get("stop"):
                    count = data.get("tokens_predicted") or len(text)
    count = count or len(text)
    return {"bytes": size, "ttft": first - start, "speed": (count - 1) / (last - first) if last > first else 0.0,
            "tokens": count, "text": "".join(text)}


if __name__ == "__main__":
    main()
