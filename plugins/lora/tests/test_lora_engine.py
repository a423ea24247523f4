"""Adapters on the real SmolLM2 model through llama.cpp: apply, scale, stack, refuse, invalidate the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from desktop_app.core.engine import Engine, EngineError, LoadConfig
from desktop_app.core.models import DEFAULT_MODEL_SYSTEM_PROMPT, default_model_path
from desktop_app.core.turn import Adapter, ChatMessage, GenerationOptions
from desktop_app_lora.convert import convert_peft_adapter
from desktop_app_lora.safetensors_file import read_safetensors
from lora_test_files import make_adapter_gguf, make_peft, write_safetensors

QUESTION = [ChatMessage("system", DEFAULT_MODEL_SYSTEM_PROMPT), ChatMessage("user", "What is the capital of France?")]
GREEDY = GenerationOptions(temperature=0.0, max_tokens=24, seed=1)


def convert(folder: Path, out: Path) -> Path:
    convert_peft_adapter(folder, out, default_model_path(), outtype="f32")
    return out


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    """Random adapters strong enough to change answers: "a" on attention, "b" on the MLP, and
    "a_half_b_double": one file holding a's weights at half strength and b's at double."""
    root = tmp_path_factory.mktemp("adapters")
    a = make_peft(root / "a", seed=7, std=0.05)
    b = make_peft(root / "b", seed=11, std=0.03, modules=("gate_proj", "up_proj", "down_proj"))
    merged = root / "a_half_b_double"
    merged.mkdir()
    tensors_a, _ = read_safetensors(a / "adapter_model.safetensors")
    tensors_b, _ = read_safetensors(b / "adapter_model.safetensors")
    # Halving and doubling are exact in floating point, so the merged file must give exactly
    # what stacking a at 0.5 with b at 2 gives.
    write_safetensors(merged / "adapter_model.safetensors", {
        **{k: v * 0.5 if ".lora_B." in k else v for k, v in tensors_a.items()},
        **{k: v * 2.0 if ".lora_B." in k else v for k, v in tensors_b.items()},
    })
    (merged / "adapter_config.json").write_text((a / "adapter_config.json").read_text())
    return {name: convert(root / name, root / f"{name}.gguf") for name in ("a", "b", "a_half_b_double")}


@pytest.fixture(scope="module")
def engine():
    e = Engine()
    e.load(default_model_path(), LoadConfig(context_length=1024, seed=1))
    yield e
    e.unload()


@pytest.fixture(autouse=True)
def no_adapters(engine):
    engine.set_adapters([])
    yield
    engine.set_adapters([])


def answer(engine, messages=QUESTION):
    done = list(engine.stream_chat(messages, GREEDY))[-1]
    assert done.finish_reason in ("stop", "length"), done
    return done


def test_an_adapter_changes_the_answer_and_scale_0_takes_it_away(engine, adapters):
    # Judged by the model's scores: whether greedy text flips depends on how sure the model is.
    base, base_text = prompt_logits(engine), answer(engine).text
    assert engine.set_adapters([Adapter("a", str(adapters["a"]), 1.0)]) is True
    assert engine.active_adapters == [(adapters["a"].resolve(), 1.0)]
    assert np.abs(prompt_logits(engine) - base).max() > 1.0
    assert engine.set_adapters([(adapters["a"], 0.0)]) is True
    assert engine.active_adapters == []
    np.testing.assert_array_equal(prompt_logits(engine), base)
    assert answer(engine).text == base_text


def test_unchanged_adapters_are_a_no_op_that_keeps_the_cache(engine, adapters):
    engine.set_adapters([(adapters["a"], 1.0)])
    first = answer(engine)
    assert first.stats.prompt_tokens_evaluated == first.stats.prompt_tokens
    assert engine.set_adapters([(str(adapters["a"]), 1.0)]) is False
    again = answer(engine)
    assert again.stats.prompt_tokens_evaluated == 1  # only the last prompt token is evaluated again


def test_a_scale_change_empties_the_cache_so_the_answer_is_fresh(engine, adapters):
    # A second engine that only ever ran at scale 0.5 gives the fresh answer.
    fresh_engine = Engine()
    fresh_engine.load(default_model_path(), LoadConfig(context_length=1024, seed=1))
    try:
        fresh_engine.set_adapters([(adapters["a"], 0.5)])
        fresh = answer(fresh_engine).text
    finally:
        fresh_engine.unload()
    engine.set_adapters([(adapters["a"], 1.5)])
    stale_candidate = answer(engine)
    assert stale_candidate.text != fresh
    assert engine.set_adapters([(adapters["a"], 0.5)]) is True
    after = answer(engine)
    assert after.stats.prompt_tokens_evaluated == after.stats.prompt_tokens  # nothing reused
    assert after.text == fresh


def prompt_logits(engine, messages=QUESTION) -> np.ndarray:
    """The model's scores for the token after the prompt, with the engine's current adapters.

    Greedy text is a poor judge of small differences (a near tie flips on rounding noise);
    the scores show how much each adapter moves the model.
    """
    import llama_cpp

    tokens = engine.tokenize(engine.render(messages))
    with engine._lock:
        engine.clear_cache()
        ctx = engine._loaded.llm._ctx.ctx
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(tokens))) == 0
        n_vocab = llama_cpp.llama_vocab_n_tokens(engine._loaded.vocab)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy()
        engine.clear_cache()
    return logits


def test_stacked_adapters_act_together_each_at_its_scale(engine, adapters):
    def with_adapters(*pairs):
        engine.set_adapters([(adapters[name], scale) for name, scale in pairs])
        return prompt_logits(engine)

    base = with_adapters()
    only_a, only_b = with_adapters(("a", 0.5)), with_adapters(("b", 2.0))
    assert np.abs(only_a - base).max() > 1.0 and np.abs(only_b - base).max() > 1.0
    stacked = with_adapters(("a", 0.5), ("b", 2.0))
    assert len(engine.active_adapters) == 2
    assert np.abs(stacked - only_a).max() > 1.0 and np.abs(stacked - only_b).max() > 1.0
    # Exactly what one file with both changes (a halved, b doubled) gives: both adapters act, each
    # at its own scale, whatever order they are given in.
    np.testing.assert_array_equal(stacked, with_adapters(("a_half_b_double", 1.0)))
    np.testing.assert_array_equal(with_adapters(("b", 2.0), ("a", 0.5)), stacked)
    # Different scales really are different.
    assert np.abs(with_adapters(("a", 1.0), ("b", 2.0)) - stacked).max() > 1.0


def test_llama_cpp_refuses_a_misfit_and_the_model_keeps_working(engine, adapters, tmp_path):
    engine.set_adapters([(adapters["a"], 1.0)])
    before = prompt_logits(engine)
    wrong = make_adapter_gguf(tmp_path / "wide.gguf", n_embd=1024, layers=1)
    with pytest.raises(EngineError, match="could not load the LoRA adapter wide.gguf"):
        engine.load_adapter(wrong)
    with pytest.raises(EngineError, match="could not load"):
        engine.set_adapters([(adapters["a"], 1.0), (wrong, 1.0)])
    assert engine.active_adapters == [(adapters["a"].resolve(), 1.0)]
    np.testing.assert_array_equal(prompt_logits(engine), before)
    assert answer(engine).finish_reason in ("stop", "length")
    with pytest.raises(EngineError, match="does not exist"):
        engine.set_adapters([(tmp_path / "missing.gguf", 1.0)])


def test_an_adapter_file_that_changes_on_disk_is_read_again(engine, adapters, tmp_path):
    path = tmp_path / "changing.gguf"
    path.write_bytes(adapters["a"].read_bytes())
    engine.set_adapters([(path, 1.0)])
    with_a = prompt_logits(engine)
    path.write_bytes(adapters["b"].read_bytes())
    assert engine.set_adapters([(path, 1.0)]) is True
    changed = prompt_logits(engine)
    engine.set_adapters([(adapters["b"], 1.0)])
    np.testing.assert_array_equal(changed, prompt_logits(engine))
    assert np.abs(changed - with_a).max() > 1.0


def test_adapters_need_a_model_and_go_with_it(adapters):
    e = Engine()
    assert e.set_adapters([]) is False
    with pytest.raises(EngineError, match="No model is loaded"):
        e.set_adapters([(adapters["a"], 1.0)])
    e.load(default_model_path(), LoadConfig(context_length=512))
    e.set_adapters([(adapters["a"], 1.0)])
    e.release_adapter(adapters["a"])  # active: kept
    assert e.active_adapters
    e.load(default_model_path(), LoadConfig(context_length=512))  # a reload frees the handles
    assert e.active_adapters == []
    e.load_adapter(adapters["b"])
    e.release_adapter(adapters["b"])
    e.unload()
    assert e.active_adapters == []


def test_scales_are_real_numbers(engine, adapters):
    engine.set_adapters([(adapters["a"], np.float32(2.0))])
    assert engine.active_adapters == [(adapters["a"].resolve(), 2.0)]


def test_converted_q_and_k_act_in_llama_cpp_as_they_do_in_transformers(engine, tmp_path, monkeypatch):
    """The converter's q/k row order, checked against the model it came from.

    transformers (with peft) and llama.cpp run the same dequantised weights with the same
    random q/k adapter; what the adapter changes in the next-token scores must agree. Converted
    without reordering lora_b's rows, the same adapter acts differently in llama.cpp.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import desktop_app_lora.convert as convert_module

    folder = make_peft(tmp_path / "qk", seed=3, std=0.1, modules=("q_proj", "k_proj"))
    right = convert(folder, tmp_path / "right.gguf")
    monkeypatch.setattr(convert_module, "permute_rotary_rows", lambda matrix, heads: matrix)
    wrong = convert(folder, tmp_path / "wrong.gguf")
    monkeypatch.undo()

    tokens = engine.tokenize(engine.render(QUESTION))
    engine.set_adapters([])
    base_cpp = prompt_logits(engine)
    engine.set_adapters([(right, 1.0)])
    right_cpp = prompt_logits(engine)
    engine.set_adapters([(wrong, 1.0)])
    wrong_cpp = prompt_logits(engine)

    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                 local_files_only=True)
    ids = torch.tensor([tokens])
    with torch.no_grad():
        base_hf = model(input_ids=ids).logits[0, -1].numpy()
        with_lora = PeftModel.from_pretrained(model, str(folder))
        lora_hf = with_lora(input_ids=ids).logits[0, -1].numpy()

    def agreement(cpp):
        return float(np.corrcoef(cpp - base_cpp, lora_hf - base_hf)[0, 1])

    # The adapter moves the scores far more than the two programs' rounding differs (max 0.8).
    assert np.abs(lora_hf - base_hf).max() > 5.0
    assert agreement(right_cpp) > 0.97
    assert agreement(wrong_cpp) < 0.8
    print(f"\nq/k adapter, transformers vs llama.cpp: correlation {agreement(right_cpp):.3f} converted, "
          f"{agreement(wrong_cpp):.3f} without the row reordering")
