"""Several answers at once: Parley's batched engine against one stream and against llama-server --parallel.

Three figures, each a ratio within one run, on the built-in model with the same threads:

1. Self-consistency (N samples, the greedy chain first) against one chain-of-thought answer, both
   through the chat pipeline on the shipped arithmetic questions (goal <= 2.0x). The same
   self-consistency with the model loaded for one answer at a time (``parallel`` 1, its samples
   one after another) is measured too: what batching saves.
2. Aggregate tokens/s of four concurrent streams (four threads, four different prompts, each
   forced to write the same number of tokens) against llama.cpp's ``llama-server --parallel 4``
   on the same prompts, threads and context (goal >= 0.9x). llama-server is built by ``make native``.
3. One stream against ``llama-bench``'s generation speed after a prompt of the same length (goal >= 0.95x).
4. The strategy lab's grid (three candidates on the arithmetic set's held-out items): a run that
   writes its answers together against the same run answered one at a time, with how many of
   their verdicts agree (answers written together can differ in a rare token).

Run: ``.venv/bin/python benchmarks/parallel.py [--rounds N] [--tokens N] [--questions N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins" / "remote" / "tests"))

STREAMS = 4
CONTEXT = 4096
TOPICS = ["the history of the Roman Empire", "how bees make honey", "the water cycle", "the invention of printing",
          "volcanoes", "the life of whales", "how bread rises", "the first railways"]


def messages_for(k: int):
    from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT
    from desktop_app.core.turn import ChatMessage

    return [ChatMessage("system", DEFAULT_MODEL_SYSTEM_PROMPT),
            ChatMessage("user", f"Write a long, detailed essay about {TOPICS[k % len(TOPICS)]}. (Draft {k}.)")]


def end_tokens(engine) -> list[int]:
    """Every token that would end an answer: banned, so each stream writes exactly its token count."""
    import llama_cpp

    vocab = engine._loaded.vocab
    return [t for t in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, t)]


def _at_once(ask, count: int, barrier: threading.Barrier, generated: list[int]) -> tuple[float, int]:
    """Run ``ask(i)`` on ``count`` threads released together by ``barrier``; aggregate tokens/s
    (``generated`` holds each one's tokens) and the tokens in all."""
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return sum(generated) / elapsed, sum(generated)


def parley_streams(engine, streams: int, tokens: int, first: int) -> tuple[float, int]:
    """Aggregate tokens/s of ``streams`` threads asking at once (prompts never seen before)."""
    from desktop_app.core.engine import DoneEvent
    from desktop_app.core.turn import GenerationOptions

    options = GenerationOptions(temperature=0, max_tokens=tokens, repeat_penalty=1.0,
                                logit_bias={t: -100 for t in end_tokens.cache})
    generated = [0] * streams
    barrier = threading.Barrier(streams + 1)

    def ask(i: int) -> None:
        barrier.wait()
        for event in engine.stream_chat(messages_for(first + i), options):
            if isinstance(event, DoneEvent):
                generated[i] = event.stats.generated_tokens

    return _at_once(ask, streams, barrier, generated)


def width_costs(engine, tokens: int, widths=(1, 2, 4, 5, 8)) -> dict[int, float]:
    """Seconds per decode step with ``w`` answers written together (one prompt, evaluated once):
    what batching can save at most on this machine and model."""
    from desktop_app.core.engine import DoneEvent
    from desktop_app.core.turn import GenerationOptions

    costs = {}
    for w in widths:
        options = [GenerationOptions(temperature=0.7, seed=i, max_tokens=tokens, repeat_penalty=1.0,
                                     logit_bias={t: -100 for t in end_tokens.cache}) for i in range(w)]
        engine.clear_cache()
        start = time.perf_counter()
        steps = 0
        for _, event in engine.answers(messages_for(w), options).events():
            if isinstance(event, DoneEvent):
                steps = max(steps, event.stats.generated_tokens)
        costs[w] = (time.perf_counter() - start) / max(1, steps)
    return costs


def server_streams(url: str, prompts: list[str], tokens: int) -> tuple[float, int]:
    """Aggregate tokens/s of llama-server answering ``prompts`` at once (greedy, end of text ignored)."""
    generated = [0] * len(prompts)
    barrier = threading.Barrier(len(prompts) + 1)

    def ask(i: int) -> None:
        body = json.dumps({"prompt": prompts[i], "n_predict": tokens, "temperature": 0, "ignore_eos": True,
                           "repeat_penalty": 1.0, "cache_prompt": False, "stream": False}).encode()
        request = urllib.request.Request(url + "/completion", body, {"Content-Type": "application/json"})
        barrier.wait()
        with urllib.request.urlopen(request, timeout=600) as reply:
            generated[i] = json.loads(reply.read())["tokens_predicted"]

    return _at_once(ask, len(prompts), barrier, generated)


def strategy_times(context, task_set, items) -> dict[str, float]:
    """Seconds for chain-of-thought and for self-consistency (N=5) on ``items``, through the chat,
    with the strategy lab's setups of both."""
    from desktop_app_lab.candidates import build_setup, parse_candidates

    times = {"chain": 0.0, "self": 0.0}
    drawn = 0
    for candidate in parse_candidates(["chain, self:5"]):
        setup, options = build_setup(candidate, task_set)
        name = "self" if candidate.strategy == "self-consistency" else "chain"
        for item in items:
            conversation = context.store.create_conversation()
            start = time.perf_counter()
            outcome = context.chat.send(conversation.id, item.input, options=options,
                                        plugin_options=setup["plugins"])
            times[name] += time.perf_counter() - start
            if name == "self":
                drawn += int(outcome.message.stats.get("samples_drawn", 0) or 0)
    times["drawn"] = drawn / max(1, len(items))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128, help="tokens each concurrent stream writes")
    parser.add_argument("--single-rounds", type=int, default=9, help="rounds of one stream against llama-bench")
    parser.add_argument("--questions", type=int, default=6, help="arithmetic questions for self-consistency")
    parser.add_argument("--grid-items", type=int, default=8, help="held-out items of the lab grid")
    args = parser.parse_args()
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")

    from engine_throughput import native_speed
    from remote_servers import LlamaServer

    from desktop_app.core.engine import Engine, LoadConfig, physical_cores
    from desktop_app.core.models import default_model_path
    from desktop_app.core.turn import GenerationOptions

    model = default_model_path()
    threads = physical_cores()
    from offload import describe, engine_layers, native_layers

    layers = engine_layers()
    print(f"model {model.name}, {threads} threads, {describe()}, "
          f"context {CONTEXT}, {args.rounds} rounds", flush=True)

    with tempfile.TemporaryDirectory() as home:
        os.environ["PARLEY_HOME"] = home
        engine = Engine()
        engine.load(model, LoadConfig(context_length=CONTEXT, threads=threads, gpu_layers=layers))
        end_tokens.cache = end_tokens(engine)

        # 1. Four streams at once, against llama-server --parallel 4 on the same prompts.
        server = LlamaServer(Path(home) / "llama-server.log", ["--kv-unified"])
        command = server.command
        command[command.index("-t") + 1] = str(threads)
        command[command.index("-c") + 1] = str(CONTEXT)
        command[command.index("-np") + 1] = str(STREAMS)
        command += ["-ngl", native_layers(), "-b", "512", "-ub", "512", "-fa", "on"]
        server.start()
        rows = []
        try:
            k = 0
            parley_streams(engine, STREAMS, 16, 1000)  # warm-up
            for round_ in range(args.rounds):
                prompts = [engine.render(messages_for(k + i)) for i in range(STREAMS)]
                if round_ % 2:  # alternating order: a drift in the machine's speed hits both alike
                    ours, ours_count = parley_streams(engine, STREAMS, args.tokens, k)
                    native, native_count = server_streams(server.url, prompts, args.tokens)
                else:
                    native, native_count = server_streams(server.url, prompts, args.tokens)
                    ours, ours_count = parley_streams(engine, STREAMS, args.tokens, k)
                k += STREAMS
                single, _ = parley_streams(engine, 1, args.tokens, k)
                k += 1
                rows.append((ours, native, single, ours_count, native_count))
        finally:
            server.stop()
        for ours, native, single, ours_count, native_count in rows:
            print(f"  4 streams: Parley {ours:6.1f} tok/s ({ours_count} tokens), llama-server --parallel 4 "
                  f"{native:6.1f} tok/s ({native_count} tokens); one Parley stream {single:6.1f} tok/s")
        ratio = statistics.median(r[0] / r[1] for r in rows)
        gain = statistics.median(r[0] / r[2] for r in rows)
        print(f"ratio 4 concurrent streams Parley / llama-server --parallel 4: {ratio:.3f}x  (goal >= 0.9x)")
        print(f"  4 streams together give {gain:.2f}x the tokens/s of one stream")

        costs = [width_costs(engine, args.tokens) for _ in range(args.rounds)]
        widths = sorted(costs[0])
        line = ", ".join(f"{w}: {statistics.median(c[w] for c in costs) * 1000:.1f} ms "
                         f"({statistics.median(c[w] / c[1] for c in costs):.2f}x)" for w in widths)
        print(f"  time per decode step by answers written together: {line}")

        # 2. One stream against llama-bench, after a prompt of the same length. Greedy, as in
        # benchmarks/engine_throughput.py; each round runs both, in alternating order, so a drift
        # in the machine's speed hits both alike.
        depth = len(engine.tokenize(engine.render(messages_for(0))))
        singles = []

        def ours() -> float:
            engine.clear_cache()
            done = list(engine.stream_chat(messages_for(0), GenerationOptions(
                temperature=0, max_tokens=args.tokens, repeat_penalty=1.0)))[-1]
            return done.stats.tokens_per_second

        for i in range(args.single_rounds):
            if i % 2:
                bench = native_speed(model, threads, args.tokens, 1, depth)
                singles.append((ours(), bench))
            else:
                mine = ours()
                singles.append((mine, native_speed(model, threads, args.tokens, 1, depth)))
        engine.unload()
        if singles[0][1] is None:
            print("single stream / llama-bench: n/a (run `make native` first)")
        else:
            for mine, bench in singles:
                print(f"  one stream: Parley {mine:6.1f} tok/s, llama-bench -d {depth} {bench:6.1f} tok/s")
            print(f"ratio single stream Parley / llama-bench: {statistics.median(a / b for a, b in singles):.3f}x  "
                  "(goal >= 0.95x)")

        # 3. Self-consistency against one chain-of-thought answer, batched and one at a time.
        from desktop_app.context import build_context
        from desktop_app_lab.library import TaskSetLibrary

        task_set = TaskSetLibrary(Path(home) / "sets").load("arithmetic")
        items = task_set.test[:args.questions]
        context = build_context()
        context.settings.set("model.context_length", CONTEXT)
        context.settings.set("model.threads", threads)
        results = {}
        for parallel in (8, 1):
            context.settings.set("model.parallel", parallel)
            context.load_model(None)
            strategy_times(context, task_set, items[:1])  # warm-up
            results[parallel] = [strategy_times(context, task_set, items) for _ in range(args.rounds)]
        grid = lab_grid(context, task_set, args.grid_items, args.rounds, Path(home) / "runs")
        context.close()
        for parallel, label in ((8, "batched"), (1, "one at a time")):
            for r in results[parallel]:
                print(f"  self-consistency {label}: {r['self']:6.1f} s, chain-of-thought {r['chain']:6.1f} s "
                      f"({len(items)} questions, {r['drawn']:.1f} samples drawn on average)")
        batched = statistics.median(r["self"] / r["chain"] for r in results[8])
        serial = statistics.median(r["self"] / r["chain"] for r in results[1])
        print(f"ratio self-consistency (N=5) / one chain-of-thought answer, batched: {batched:.2f}x  (goal <= 2.0x)")
        print(f"ratio self-consistency (N=5) / one chain-of-thought answer, one sample at a time: {serial:.2f}x")
        for together, alone, agree, answers in grid:
            print(f"  lab grid of {answers} answers: together {together:6.1f} s, one at a time {alone:6.1f} s, "
                  f"{agree} of {answers} verdicts the same")
        print(f"ratio lab grid one at a time / together: {statistics.median(a / t for t, a, _, _ in grid):.2f}x "
              "(the speed-up of writing the grid's answers together)")


def lab_grid(context, task_set, count: int, rounds: int, folder: Path) -> list[tuple[float, float, int, int]]:
    """Wall time of one lab run (zero-shot, few-shot and chain-of-thought on ``count`` held-out
    items) with its answers written together and one at a time, and how many verdicts agree."""
    from desktop_app_lab.candidates import parse_candidates
    from desktop_app_lab.runner import run_lab
    from desktop_app_lab.runs import RunStore

    context.settings.set("model.parallel", 8)
    context.load_model(None)
    lab = context.plugin_context("lab")
    store = RunStore(folder)
    task_set.items = task_set.train + task_set.test[:count]
    candidates = parse_candidates(["zero, few:2, chain"])
    rows = []
    for round_ in range(rounds):
        times, verdicts = {}, {}
        for batched in ((True, False) if round_ % 2 == 0 else (False, True)):
            start = time.perf_counter()
            run = run_lab(lab, store.create(task_set, candidates, model="benchmark", batched=batched))
            times[batched] = time.perf_counter() - start
            verdicts[batched] = {(r["candidate"], r["item"]): r["passed"] for r in run.results}
        agree = sum(verdicts[True].get(key) == passed for key, passed in verdicts[False].items())
        rows.append((times[True], times[False], agree, len(verdicts[False])))
    return rows


if __name__ == "__main__":
    main()
