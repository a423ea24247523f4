"""Generation speed of Parley against llama-cpp-python's high-level API and llama.cpp itself.

All three run in this process's run, on the same model, prompt, thread count and greedy
sampling:

- Parley's turn pipeline (store, plugins, engine), tokens/s after the first token;
- llama-cpp-python's ``create_chat_completion(stream=True)``;
- llama.cpp's own ``llama-bench`` (text generation), built by ``make native``. It
  cannot take the prompt's text, so it generates after as many tokens (``-d``); from an
  empty context it is also run, for reference.

It also compares the time to first token of a follow-up question after a 10-turn history
with that of a first question of the same length (KV cache reuse).

Run: ``make bench`` (or ``.venv/bin/python benchmarks/engine_throughput.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from desktop_app.core.chat import ChatService  # noqa: E402
from desktop_app.core.engine import Engine, LoadConfig, physical_cores  # noqa: E402
from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT, default_model_path  # noqa: E402
from desktop_app.core.settings import Settings  # noqa: E402
from desktop_app.core.store import Store  # noqa: E402
from tests.native_tools import find_native_tool  # noqa: E402

from offload import describe, engine_layers, native_layers  # noqa: E402  (benchmarks/ is on the path)

PROMPT = "Write a long, detailed essay about the history of the Roman Empire."
CTX = 2048


def parley_speed(service: ChatService, engine: Engine, tokens: int) -> tuple[float, int]:
    conv = service.store.create_conversation()
    engine.clear_cache()
    outcome = service.send(conv.id, PROMPT, options={"max_tokens": tokens})
    stats = outcome.result.stats
    return stats["tokens_per_second"], stats["generated_tokens"]


def parley_prompt_tokens(service: ChatService, engine: Engine) -> int:
    """How many tokens the benchmark's prompt is, as the pipeline sends it (system prompt included)."""
    conv = service.store.create_conversation()
    engine.clear_cache()
    outcome = service.send(conv.id, PROMPT, options={"max_tokens": 1})
    return outcome.result.stats["prompt_tokens"]


def high_level_speed(llm, tokens: int) -> tuple[float, int]:
    llm.reset()
    messages = [{"role": "system", "content": DEFAULT_MODEL_SYSTEM_PROMPT}, {"role": "user", "content": PROMPT}]
    first = None
    count = 0
    for chunk in llm.create_chat_completion(messages, stream=True, temperature=0.0, max_tokens=tokens,
                                            repeat_penalty=1.1, top_k=40, top_p=0.95, min_p=0.05):
        if chunk["choices"][0]["delta"].get("content"):
            count += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return (count - 1) / (end - first), count


def native_speed(model: Path, threads: int, tokens: int, repetitions: int, depth: int = 0) -> float | None:
    """llama-bench's generation speed, ``depth`` tokens into the context (its ``-d``)."""
    bench = find_native_tool("llama-bench")
    if bench is None:
        return None
    out = subprocess.run(
        [str(bench), "-m", str(model), "-t", str(threads), "-p", "0", "-n", str(tokens), "-fa", "1",
         "-d", str(depth), "-r", str(repetitions), "-ngl", native_layers(), "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(json.loads(out)[0]["avg_ts"])


def decode_only_speed(engine: Engine, tokens: int) -> float:
    """The same context decoding fixed tokens with no sampling, as llama-bench does."""
    import llama_cpp

    loaded = engine._loaded
    ctx = loaded.llm._ctx.ctx
    prompt = engine.tokenize(engine.render([_system(), _user(PROMPT)]))
    with engine._lock:
        engine.clear_cache()
        array = (llama_cpp.llama_token * len(prompt))(*prompt)
        llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(prompt)))
        one = (llama_cpp.llama_token * 1)()
        start = time.perf_counter()
        for i in range(tokens - 1):
            one[0] = 1000 + i
            llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1))
        elapsed = time.perf_counter() - start
        engine.clear_cache()
    return (tokens - 1) / elapsed


def decode_time(engine: Engine, position: int, count: int) -> float:
    """llama.cpp's own time to evaluate ``count`` new tokens after ``position`` cached ones."""
    import llama_cpp

    ctx = engine._loaded.llm._ctx.ctx
    memory = llama_cpp.llama_get_memory(ctx)
    with engine._lock:
        engine.clear_cache()
        filler = (llama_cpp.llama_token * position)(*range(1000, 1000 + position))
        llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(filler, position))
        times = []
        for _ in range(7):
            llama_cpp.llama_memory_seq_rm(memory, 0, position, -1)
            new = (llama_cpp.llama_token * count)(*range(2000, 2000 + count))
            start = time.perf_counter()
            llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(new, count))
            times.append(time.perf_counter() - start)
        engine.clear_cache()
    return statistics.median(times)


def _system():
    from desktop_app.core.turn import ChatMessage

    return ChatMessage("system", DEFAULT_MODEL_SYSTEM_PROMPT)


def _user(text: str):
    from desktop_app.core.turn import ChatMessage

    return ChatMessage("user", text)


def ttft(service: ChatService, conversation_id: int, text: str) -> float:
    outcome = service.send(conversation_id, text, options={"max_tokens": 8})
    stats = outcome.result.stats
    ttft.evaluated = stats["prompt_tokens_evaluated"]
    return stats["time_to_first_token"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per run")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    model = default_model_path()
    threads = physical_cores()
    print(f"model {model.name}, {threads} threads, {describe()}, greedy, {args.tokens} tokens, "
          f"median of {args.runs} runs")

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(Path(tmp) / "settings.toml")
        settings.set("generation.temperature", 0.0)
        store = Store(Path(tmp) / "conversations.db")
        engine = Engine()
        engine.load(model, LoadConfig(context_length=CTX, threads=threads, flash_attention=True,
                                      gpu_layers=engine_layers()))
        service = ChatService(store, engine, settings)

        import llama_cpp

        llm = llama_cpp.Llama(model_path=str(model), n_ctx=CTX, n_threads=threads, flash_attn=True,
                              n_threads_batch=threads, n_batch=512, n_gpu_layers=engine_layers(), verbose=False)

        # Each round runs all five back to back, in alternating order, so that a drift in the
        # machine's speed (several percent within a minute here) hits each alike; the ratios
        # are taken within each round, and their median is reported.
        # llama-bench cannot take a prompt's text, but it can start generating after as many
        # tokens (-d), which is what makes each generated token cost the same: the attention
        # reads every earlier token. Parley's first run tells how long its prompt is.
        depth = parley_prompt_tokens(service, engine)
        counts: dict[str, set[int]] = {"parley": set(), "high": set()}  # tokens per run

        def counted(name: str, result: tuple[float, int]) -> float:
            counts[name].add(result[1])
            return result[0]

        runners = {
            "parley": lambda: counted("parley", parley_speed(service, engine, args.tokens)),
            "native": lambda: native_speed(model, threads, args.tokens, 1, depth),
            "native_empty": lambda: native_speed(model, threads, args.tokens, 1),
            "decode": lambda: decode_only_speed(engine, args.tokens),
            "high": lambda: counted("high", high_level_speed(llm, args.tokens)),
        }
        rounds: list[dict] = []
        for i in range(args.runs):
            order = list(runners) if i % 2 == 0 else list(reversed(runners))
            rounds.append({name: runners[name]() for name in order})
        del llm
        has_native = all(r["native"] is not None and r["native_empty"] is not None for r in rounds)

        def speed(name: str) -> float:
            return statistics.median(r[name] for r in rounds)

        def ratio(top: str, bottom: str) -> tuple[float, float, float]:
            """Median and quartiles over the rounds of one speed divided by another."""
            values = sorted(r[top] / r[bottom] for r in rounds)
            q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
            return statistics.median(values), q[0], q[2]

        parley, high, decode_only = speed("parley"), speed("high"), speed("decode")
        native = speed("native") if has_native else None
        print(f"parley pipeline        {parley:7.1f} tok/s  (tokens per run: {sorted(counts['parley'])})")
        print(f"high-level stream API  {high:7.1f} tok/s  (tokens per run: {sorted(counts['high'])})")
        if native is None:
            print("llama-bench (native)       n/a   (run `make native` first)")
        else:
            print(f"llama-bench (native)   {native:7.1f} tok/s  (after the same {depth}-token prompt: -d {depth})")
            print(f"llama-bench, empty context {speed('native_empty'):5.1f} tok/s  (-d 0, for reference)")
        mid, low, top = ratio("parley", "high")
        print(f"ratio parley / high-level API: {mid:.3f}x  (goal >= 1.0x; quartiles {low:.3f}-{top:.3f})")
        if native is not None:
            mid, low, top = ratio("parley", "native")
            print(f"ratio parley / native:         {mid:.3f}x  (goal >= 0.95x; quartiles {low:.3f}-{top:.3f})")
            mid, low, top = ratio("parley", "native_empty")
            print(f"ratio parley / native in an empty context: {mid:.3f}x  (quartiles {low:.3f}-{top:.3f})")
            mid, low, top = ratio("high", "native")
            print(f"ratio high-level API / native: {mid:.3f}x")
            mid, low, top = ratio("decode", "native")
            print(f"  where the rest goes: Parley's loop decoding without sampling runs at {decode_only:.1f} "
                  f"tok/s ({mid:.3f}x native, quartiles {low:.3f}-{top:.3f}); llama-bench never samples")
        print(f"  (ratios: median over {len(rounds)} rounds of the ratio within each round)")

        # Time to first token: a follow-up after 10 turns vs a first question of the same length.
        # A different question each time (same length), so no run finds its own prompt cached.
        questions = iter(f"Now tell me one more interesting fact about topic {k}, please." for k in range(10, 99))
        first_warm, first_cold, follow, follow_cold = [], [], [], []
        for _ in range(args.runs):
            conv = store.create_conversation()
            engine.clear_cache()
            first_cold.append(ttft(service, conv.id, next(questions)))
            conv = store.create_conversation()  # same system prompt, cached as in daily use
            first_warm.append(ttft(service, conv.id, next(questions)))
            first_evaluated = ttft.evaluated
        conv = store.create_conversation()
        for i in range(10):
            service.send(conv.id, f"Tell me about the number {i} in one sentence.", options={"max_tokens": 24})
        history_tokens = 0
        for _ in range(args.runs):
            follow.append(ttft(service, conv.id, next(questions)))
            follow_evaluated = ttft.evaluated
            history_tokens = store.history(conv.id)[-1].stats["prompt_tokens"]
            store.set_current_leaf(conv.id, store.history(conv.id)[-3].id)  # branch back: same 10 turns
        engine.clear_cache()
        follow_cold.append(ttft(service, conv.id, next(questions)))
        fw, fc, fu = statistics.median(first_warm), statistics.median(first_cold), statistics.median(follow)
        print(f"TTFT first turn (system prompt cached) {fw * 1000:7.1f} ms  ({first_evaluated} tokens evaluated)")
        print(f"TTFT first turn (cold cache)           {fc * 1000:7.1f} ms")
        print(f"TTFT follow-up after 10 turns          {fu * 1000:7.1f} ms  (prompt {history_tokens} tokens, {follow_evaluated} evaluated)")
        print(f"TTFT same follow-up without KV reuse   {follow_cold[0] * 1000:7.1f} ms")
        print(f"ratio follow-up / first-turn TTFT (first turn of a session): {fu / fc:.2f}x  (goal <= 1.2x)")
        print(f"ratio follow-up / first-turn TTFT (system prompt already cached): {fu / fw:.2f}x")
        raw = decode_time(engine, history_tokens - follow_evaluated, follow_evaluated) / decode_time(
            engine, CTX // 32, follow_evaluated)
        print(f"  llama.cpp alone, {follow_evaluated} new tokens after {history_tokens - follow_evaluated} "
              f"cached vs after {CTX // 32}: {raw:.2f}x (attention over the longer history)")
        engine.unload()
        store.close()


if __name__ == "__main__":
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    main()
