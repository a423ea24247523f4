"""LoRA adapters at run time: switching on the loaded model against reloading it, and their cost.

Measured in one run, on the built-in SmolLM2-135M (Q4_1), with random adapters of realistic
shape written by Parley's own converter (rank 16; attention only, and every linear layer):

- switching adapters with ``Engine.set_adapters`` (handles cached, and the first time, when
  the file is read), against loading the model again with the adapter, the old way:
  llama-cpp-python's ``Llama(lora_path=...)``, and Parley's own reload (``Engine.load`` then
  ``set_adapters``). The ratio says how many switches fit in one reload;
- generation speed (tokens/s after the first token, greedy) without adapters, with one, and
  with two stacked.

Run: ``.venv/bin/python benchmarks/lora.py`` (about a minute on two cores).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins" / "lora"))

import numpy as np  # noqa: E402

from desktop_app.core.engine import Engine, LoadConfig, physical_cores  # noqa: E402
from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT, check_gguf_file, default_model_path  # noqa: E402
from desktop_app.core.turn import ChatMessage, GenerationOptions  # noqa: E402
from desktop_app_lora.convert import convert_peft_adapter  # noqa: E402

PROMPT = [ChatMessage("system", DEFAULT_MODEL_SYSTEM_PROMPT),
          ChatMessage("user", "Write a long, detailed essay about the history of the Roman Empire.")]
CTX = 2048
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_LINEAR = (*ATTENTION, "gate_proj", "up_proj", "down_proj")


def random_adapter(folder: Path, model: Path, modules: tuple[str, ...], rank: int, seed: int) -> Path:
    """A PEFT adapter with random weights for ``model``'s shapes, converted to GGUF."""
    import json

    from safetensors.numpy import save_file

    header = check_gguf_file(model)
    shapes = header.tensor_shapes or {}
    names = {"q_proj": ("self_attn", "attn_q"), "k_proj": ("self_attn", "attn_k"), "v_proj": ("self_attn", "attn_v"),
             "o_proj": ("self_attn", "attn_output"), "gate_proj": ("mlp", "ffn_gate"), "up_proj": ("mlp", "ffn_up"),
             "down_proj": ("mlp", "ffn_down")}
    layers = int(header.scalars[f"{header.architecture}.block_count"])
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(layers):
        for module in modules:
            part, gguf_name = names[module]
            n_in, n_out = shapes[f"blk.{layer}.{gguf_name}.weight"]
            key = f"base_model.model.model.layers.{layer}.{part}.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.normal(0, 0.01, (rank, n_in)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.normal(0, 0.01, (n_out, rank)).astype(np.float32)
    peft = folder / f"peft-{seed}"
    peft.mkdir(parents=True)
    save_file(tensors, str(peft / "adapter_model.safetensors"))
    (peft / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": 2 * rank}))
    out = folder / f"adapter-{seed}.gguf"
    convert_peft_adapter(peft, out, model, name=f"random {seed}")
    return out


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(engine: Engine, tokens: int, repeat: int) -> float:
    """Median tokens/s after the first token for a fresh answer of ``tokens`` tokens."""
    options = GenerationOptions(temperature=0.0, max_tokens=tokens, seed=1)
    results = []
    for _ in range(repeat):
        engine.clear_cache()
        done = list(engine.stream_chat(PROMPT, options))[-1]
        results.append(done.stats.tokens_per_second)
    return statistics.median(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import llama_cpp

    model = default_model_path()
    threads = physical_cores()
    print(f"model {model.name}, {threads} threads, context {CTX}, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        attention = random_adapter(folder, model, ATTENTION, 16, 1)
        everywhere = random_adapter(folder, model, ALL_LINEAR, 16, 2)
        print(f"adapters: rank 16 attention ({attention.stat().st_size / 1e6:.1f} MB), "
              f"rank 16 all linear layers ({everywhere.stat().st_size / 1e6:.1f} MB)\n")

        engine = Engine()
        config = LoadConfig(context_length=CTX, threads=threads)
        engine.load(model, config)

        # -- switching against reloading --------------------------------------------------
        first_read = timed(lambda: (engine.set_adapters([(attention, 1.0)]), engine.set_adapters([])), 1)
        engine.load_adapter(everywhere)
        flip = [attention, everywhere]
        counter = [0]

        def switch() -> None:
            counter[0] += 1
            engine.set_adapters([(flip[counter[0] % 2], 1.0)])

        switched = timed(switch, max(20, args.repeat * 4))
        scales = itertools.cycle([0.5, 1.0])
        rescaled = timed(lambda: engine.set_adapters([(everywhere, next(scales))]), max(20, args.repeat * 4))
        engine.set_adapters([])

        def reload_high_level() -> None:
            llm = llama_cpp.Llama(model_path=str(model), n_ctx=CTX, n_threads=threads, n_threads_batch=threads,
                                  flash_attn=True, lora_path=str(attention), verbose=False)
            llm.close()

        old_way = timed(reload_high_level, args.repeat)
        parley_reload = timed(lambda: (engine.load(model, config), engine.set_adapters([(attention, 1.0)])),
                              args.repeat)
        engine.set_adapters([])

        print("switching adapters on the loaded model vs loading the model again with the adapter")
        print(f"  switch (adapters already read)          {switched * 1000:9.3f} ms")
        print(f"  change a scale                          {rescaled * 1000:9.3f} ms")
        print(f"  first use (reads the adapter file)      {first_read * 1000:9.3f} ms")
        print(f"  reload with lora_path (llama-cpp-python) {old_way * 1000:8.1f} ms")
        print(f"  reload in Parley (load + set_adapters)  {parley_reload * 1000:9.1f} ms")
        print(f"  ratio reload / switch: {old_way / switched:,.0f}x (llama-cpp-python), "
              f"{parley_reload / switched:,.0f}x (Parley reload); "
              f"reload / first use: {old_way / first_read:,.0f}x\n")

        # -- generation speed -------------------------------------------------------------
        rows = [("no adapter", []), ("rank 16, attention", [(attention, 1.0)]),
                ("rank 16, all linear layers", [(everywhere, 1.0)]),
                ("both stacked", [(attention, 1.0), (everywhere, 0.5)])]
        base = None
        print(f"generation speed, {args.tokens} tokens, greedy, median of {args.repeat}")
        for label, adapters in rows:
            engine.set_adapters(adapters)
            tps = speed(engine, args.tokens, args.repeat)
            base = base or tps
            print(f"  {label:<28} {tps:7.1f} tokens/s  ({tps / base:.2f}x of no adapter)")
        engine.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
