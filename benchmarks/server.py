"""Parley's OpenAI-compatible server against its engine in-process and llama.cpp's llama-server.

Three ways to stream the same answer (same model, context, threads, plain greedy sampling,
system prompt, question and number of tokens), each round all three:

- llama.cpp's own ``llama-server`` (built by ``make native``), streaming from
  ``/v1/chat/completions``;
- Parley's engine in this process (``Engine.stream_chat``), no HTTP;
- ``parley serve``, when that command exists (else "skipped").

Both servers are read by two clients: a lean one (``httpx`` on one kept-alive connection,
reading the ``data:`` lines with ``json.loads``) and the official ``openai`` client. The goals
are judged with the lean client, since they are about the server: the official client builds
a typed object for every chunk, and on a 2-core machine that work takes CPU from the model's
threads (it costs llama-server the same, which the second table shows).

Both clocks are the caller's: time to first token from the request to the first piece of
text, tokens/s over the tokens after the first (as ``engine_throughput.py`` counts). Every
round asks a new question of the same length, so no one answers from its own prompt cache
(each has the system prompt cached after the warm-up, as in daily use); ratios are taken
within a round, in alternating order, and their median is printed, since this machine's speed
drifts by several percent within a minute. With no repeat penalty (llama.cpp's also counts
the prompt's tokens, Parley's only the answer's) all three write the same text, which the
output checks.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/server.py [--tokens N] [--runs N]``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from desktop_app.core.engine import DoneEvent, Engine, ErrorEvent, LoadConfig, TokenEvent, physical_cores  # noqa: E402
from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT, default_model_path  # noqa: E402
from desktop_app.core.settings import Settings  # noqa: E402
from desktop_app.core.turn import ChatMessage, GenerationOptions  # noqa: E402
from tests.native_tools import native_tool  # noqa: E402

CTX = 2048
STARTUP_TIMEOUT = 300.0  # seconds for a server to load the model and answer


def question(k: int) -> str:
    """The k-th question; all have the same length in tokens for k in 10..99."""
    return f"Write a long, detailed essay about the history of the Roman Empire, part {k}."


@dataclass
class Run:
    ttft: float  # seconds
    speed: float  # tokens/s after the first token
    tokens: int
    prompt_tokens: int | None
    text: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed(pieces, start: float) -> tuple[float, float, str, int]:
    """Consume ``pieces`` (text strings); return first and last arrival, the text, the count."""
    first = last = 0.0
    text = []
    for piece in pieces:
        if piece:
            last = time.perf_counter()
            first = first or last
            text.append(piece)
    if not first:
        raise RuntimeError("the answer was empty")
    return first - start, last - first, "".join(text), len(text)


def request_body(model: str, prompt: str, tokens: int, extra: dict | None) -> dict:
    """The streamed chat request both clients send."""
    return {"model": model, "messages": [{"role": "system", "content": DEFAULT_MODEL_SYSTEM_PROMPT},
                                         {"role": "user", "content": prompt}],
            "stream": True, "temperature": 0.0, "frequency_penalty": 0.0, "presence_penalty": 0.0,
            "max_tokens": tokens, "stream_options": {"include_usage": True}, **(extra or {})}


def lean_run(client, model: str, prompt: str, tokens: int, extra: dict | None) -> Run:
    """One streamed answer read line by line from the Server-Sent Events (``client`` is an
    ``httpx.Client`` whose base URL is the server's). llama-server closes a connection a moment
    after a stream ends, so a kept-alive one may be gone: then once more, on a new one."""
    import httpx

    try:
        return _lean_run(client, model, prompt, tokens, extra)
    except httpx.RemoteProtocolError:
        return _lean_run(client, model, prompt, tokens, extra)


def _lean_run(client, model: str, prompt: str, tokens: int, extra: dict | None) -> Run:
    usage: dict = {}

    def pieces():
        with client.stream("POST", "/v1/chat/completions", json=request_body(model, prompt, tokens, extra)) as reply:
            reply.raise_for_status()
            for line in reply.iter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage["completion"] = chunk["usage"]["completion_tokens"]
                    usage["prompt"] = chunk["usage"]["prompt_tokens"]
                if chunk["choices"]:
                    yield chunk["choices"][0]["delta"].get("content")

    start = time.perf_counter()
    ttft, span, text, chunks = _timed(pieces(), start)
    count = usage.get("completion") or chunks
    return Run(ttft, (count - 1) / span, count, usage.get("prompt"), text)


def http_run(client, model: str, prompt: str, tokens: int, extra: dict | None) -> Run:
    """One streamed answer from an OpenAI-compatible server, through the official client."""
    usage: dict = {}

    def pieces():
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "system", "content": DEFAULT_MODEL_SYSTEM_PROMPT},
                                   {"role": "user", "content": prompt}],
            stream=True, temperature=0.0, frequency_penalty=0.0, presence_penalty=0.0, max_tokens=tokens,
            stream_options={"include_usage": True},
            extra_body=extra)
        for chunk in stream:
            if chunk.usage is not None:
                usage["completion"], usage["prompt"] = chunk.usage.completion_tokens, chunk.usage.prompt_tokens
            if chunk.choices:
                yield chunk.choices[0].delta.content

    start = time.perf_counter()
    ttft, span, text, chunks = _timed(pieces(), start)
    count = usage.get("completion") or chunks  # a chunk may hold more than one token
    return Run(ttft, (count - 1) / span, count, usage.get("prompt"), text)


def engine_run(engine: Engine, prompt: str, tokens: int) -> Run:
    """The same answer from Parley's engine in this process."""
    done: list[DoneEvent] = []
    options = GenerationOptions(temperature=0.0, repeat_penalty=1.0, max_tokens=tokens)
    messages = [ChatMessage("system", DEFAULT_MODEL_SYSTEM_PROMPT), ChatMessage("user", prompt)]

    def pieces():
        for event in engine.stream_chat(messages, options):
            if isinstance(event, TokenEvent):
                yield event.text
            elif isinstance(event, DoneEvent):
                done.append(event)
            elif isinstance(event, ErrorEvent):
                raise RuntimeError(event.message)

    start = time.perf_counter()
    ttft, span, text, _ = _timed(pieces(), start)
    stats = done[0].stats
    return Run(ttft, (stats.generated_tokens - 1) / span, stats.generated_tokens, stats.prompt_tokens, text)


class Server:
    """A server process on a loopback port, its output kept in a log file."""

    def __init__(self, name: str, command: list[str], port: int, log: Path, env: dict[str, str] | None = None):
        self.name, self.port, self.log_path = name, port, log
        self.log = open(log, "w+b")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.process.returncode}:\n{self.output()[-3000:]}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready after {STARTUP_TIMEOUT:.0f} s:\n{self.output()[-3000:]}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def start_llama_server(model: Path, threads: int, tmp: Path) -> Server:
    binary = native_tool("llama-server")
    port = free_port()
    server = Server("llama-server", [
        str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "-c", str(CTX), "-t", str(threads), "-tb", str(threads), "-b", "512", "-ub", "512",
        "-fa", "on", "-np", "1", "--no-webui",
    ], port, tmp / "llama-server.log")
    server.wait_until(server.healthy)
    return server


def parley_command() -> str | None:
    found = Path(sys.executable).with_name("parley")
    return str(found) if found.exists() else shutil.which("parley")


def parley_env(tmp: Path, threads: int) -> dict[str, str]:
    """A data folder of its own, with the benchmark's context and threads as settings."""
    home = tmp / "parley-home"
    (home / "config").mkdir(parents=True)
    settings = Settings.load(home / "config" / "settings.toml")  # where AppPaths puts it under PARLEY_HOME
    settings.set("model.context_length", CTX)
    settings.set("model.threads", threads)
    settings.set("generation.temperature", 0.0)
    settings.set("model.flash_attention", True)  # as the in-process engine below
    settings.save()
    # Unbuffered: its "ready" line goes to a file, and must arrive when it is printed.
    return {**os.environ, "PARLEY_HOME": str(home), "PARLEY_LOAD_PLUGINS": "", "PYTHONUNBUFFERED": "1"}


def parley_serve_available(env: dict[str, str]) -> bool:
    command = parley_command()
    if command is None:
        return False
    done = subprocess.run([command, "serve", "--help"], env=env, capture_output=True, text=True, timeout=120)
    return done.returncode == 0


def start_parley_serve(env: dict[str, str], tmp: Path) -> Server:
    port = free_port()
    server = Server("parley serve", [parley_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                    port, tmp / "parley-serve.log", env)
    server.wait_until(lambda: server.base_url in server.output())
    return server


def openai_client(base_url: str):
    import openai

    # Loopback only: no proxy from the environment, no retries that would hide a failure.
    return openai.OpenAI(base_url=base_url + "/v1", api_key="not-needed", max_retries=0, timeout=300,
                         http_client=openai.DefaultHttpxClient(trust_env=False))


def lean_client(base_url: str):
    import httpx

    return httpx.Client(base_url=base_url, timeout=300, trust_env=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per answer")
    parser.add_argument("--runs", type=int, default=10, help="rounds")
    parser.add_argument("--threads", type=int, default=0,
                        help="model threads (default: the physical cores; fewer leave a core to the HTTP client)")
    args = parser.parse_args()

    model = default_model_path()
    threads = args.threads or physical_cores()
    print(f"model {model.name}, context {CTX}, {threads} threads, greedy (no repeat penalty), "
          f"{args.tokens} tokens, median of {args.runs} rounds", flush=True)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        servers: list[Server] = []
        engine = Engine()
        llama_lean = parley_lean = None
        try:
            llama = start_llama_server(model, threads, tmp)
            servers.append(llama)
            llama_client = openai_client(llama.base_url)
            llama_lean = lean_client(llama.base_url)
            # llama-server's own defaults add a repeat penalty; ignore_eos fixes the length (Parley
            # stops at the end token, which the counts printed below would show).
            llama_extra = {"repeat_penalty": 1.0, "ignore_eos": True}

            engine.load(model, LoadConfig(context_length=CTX, threads=threads, flash_attention=True))

            env = parley_env(tmp, threads)
            parley = None
            if parley_serve_available(env):
                parley = start_parley_serve(env, tmp)
                servers.append(parley)
                parley_client = openai_client(parley.base_url)
                parley_lean = lean_client(parley.base_url)
                parley_model = parley_client.models.list().data[0].id

            runners: dict[str, Callable[[str], Run]] = {
                "llama-server": lambda q: lean_run(llama_lean, "default", q, args.tokens, llama_extra),
                "in-process": lambda q: engine_run(engine, q, args.tokens),
                "llama-server-openai": lambda q: http_run(llama_client, "default", q, args.tokens, llama_extra),
            }
            if parley is not None:
                # The built-in model's recommended sampling adds a repeat penalty too: the same plain greedy.
                parley_extra = {"repeat_penalty": 1.0}
                runners["parley-http"] = lambda q: lean_run(parley_lean, parley_model, q, args.tokens, parley_extra)
                runners["parley-http-openai"] = lambda q: http_run(parley_client, parley_model, q, args.tokens,
                                                                   parley_extra)

            for name, run in runners.items():  # warm-up: loads pages, caches the system prompt
                run(question(10))
            rounds: list[dict[str, Run]] = []
            for i in range(args.runs):
                order = list(runners) if i % 2 == 0 else list(reversed(runners))
                prompt = question(11 + i)
                rounds.append({name: runners[name](prompt) for name in order})
        finally:
            for server in servers:
                server.stop()
            engine.unload()
            for client in (llama_lean, parley_lean):
                if client is not None:
                    client.close()

    def median(name: str, field: str) -> float:
        return statistics.median(getattr(r[name], field) for r in rounds)

    def within(top: str, bottom: str, combine: Callable[[Run, Run], float]) -> tuple[float, float, float]:
        """Median and quartiles over the rounds of a comparison made within each round."""
        values = sorted(combine(r[top], r[bottom]) for r in rounds)
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        return statistics.median(values), q[0], q[2]

    def speed_ratio(a: Run, b: Run) -> float:
        return a.speed / b.speed

    def ttft_gap(a: Run, b: Run) -> float:
        return (a.ttft - b.ttft) * 1000

    labels = {"llama-server": "llama-server (HTTP)", "in-process": "Parley in-process",
              "parley-http": "Parley HTTP (parley serve)", "llama-server-openai": "llama-server, openai client",
              "parley-http-openai": "Parley HTTP, openai client"}
    for name in labels:
        if name not in runners:
            print(f"{labels[name]:28s} skipped: parley serve not available")
            continue
        counts = sorted({r[name].tokens for r in rounds})
        prompts = sorted({r[name].prompt_tokens for r in rounds if r[name].prompt_tokens is not None})
        print(f"{labels[name]:28s} {median(name, 'speed'):7.1f} tok/s   TTFT {median(name, 'ttft') * 1000:6.1f} ms"
              f"   (tokens per answer {counts}, prompt tokens {prompts or '?'})")
    for name in ("llama-server", "parley-http", "llama-server-openai", "parley-http-openai"):
        if name in runners:
            same = sum(r[name].text == r["in-process"].text for r in rounds)
            print(f"  {labels[name]} wrote the same text as Parley in-process in {same} of {len(rounds)} rounds")

    def show(label: str, value: tuple[float, float, float], unit: str = "x") -> None:
        mid, low, top = value
        if unit == "ms":
            print(f"{label}: {mid:+.1f} ms  (quartiles {low:+.1f} to {top:+.1f})")
        else:
            print(f"{label}: {mid:.3f}x  (quartiles {low:.3f}-{top:.3f})")

    if "parley-http" in runners:
        show("Parley HTTP / in-process tokens/s (goal >= 0.95)", within("parley-http", "in-process", speed_ratio))
        show("Parley HTTP TTFT - in-process TTFT (goal <= +15 ms)", within("parley-http", "in-process", ttft_gap), "ms")
        show("Parley HTTP / llama-server tokens/s (goal >= 0.95)", within("parley-http", "llama-server", speed_ratio))
        show("Parley HTTP TTFT - llama-server TTFT", within("parley-http", "llama-server", ttft_gap), "ms")
    else:
        print("Parley HTTP ratios: skipped: parley serve not available")
    show("Parley in-process / llama-server tokens/s", within("in-process", "llama-server", speed_ratio))
    show("Parley in-process TTFT - llama-server TTFT", within("in-process", "llama-server", ttft_gap), "ms")
    print("With the official openai client (its parsing shares the 2 cores with the model):")
    if "parley-http-openai" in runners:
        show("  Parley HTTP / in-process tokens/s", within("parley-http-openai", "in-process", speed_ratio))
        show("  Parley HTTP TTFT - in-process TTFT", within("parley-http-openai", "in-process", ttft_gap), "ms")
        show("  Parley HTTP / llama-server tokens/s",
             within("parley-http-openai", "llama-server-openai", speed_ratio))
    show("  llama-server / Parley in-process tokens/s", within("llama-server-openai", "in-process", speed_ratio))
    print(f"  (median over {len(rounds)} rounds of the comparison within each round)")


if __name__ == "__main__":
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    main()
