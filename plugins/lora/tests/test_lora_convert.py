"""The PEFT -> GGUF converter: names, the q/k row order, scaling, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from desktop_app.core.models import default_model_path
from desktop_app_lora.adapters import read_adapter_info
from desktop_app_lora.convert import ConversionError, convert_peft_adapter, gguf_tensor_name, permute_rotary_rows
from desktop_app_lora.safetensors_file import read_safetensors
from lora_test_files import ALL_MODULES, SMOLLM, make_peft, peft_key, write_safetensors

EXPECTED_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                  "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def gguf_tensors(path) -> dict[str, np.ndarray]:
    import gguf

    return {t.name: np.array(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
            for t in gguf.GGUFReader(str(path)).tensors}


def llama_cpp_row_order(rows: int, heads: int) -> list[int]:
    """For each GGUF row, the HF row it comes from: pairs (i, i + half) of a head side by side."""
    head_dim = rows // heads
    half = head_dim // 2
    order = []
    for head in range(heads):
        for i in range(half):
            order += [head * head_dim + i, head * head_dim + half + i]
    return order


@pytest.fixture
def converted(tmp_path):
    folder = make_peft(tmp_path / "peft", rank=4, alpha=8, modules=ALL_MODULES, layers=2, seed=3)
    out = tmp_path / "out.gguf"
    info = convert_peft_adapter(folder, out, default_model_path(), outtype="f32")
    source, _ = read_safetensors(folder / "adapter_model.safetensors")
    return info, gguf_tensors(out), source


def test_every_module_gets_llama_cpps_name(converted):
    info, tensors, _ = converted
    expected = {f"blk.{layer}.{kind}.weight.lora_{half}" for layer in range(2)
                for kind in EXPECTED_NAMES.values() for half in "ab"}
    assert set(tensors) == expected
    assert info.targets == sorted(EXPECTED_NAMES.values()) and info.layers == 2


def test_names_are_mapped_one_by_one():
    assert gguf_tensor_name("base_model.model.model.layers.7.self_attn.o_proj.lora_A.weight") == (
        "blk.7.attn_output.weight", "a")
    assert gguf_tensor_name("base_model.model.model.layers.12.mlp.down_proj.lora_B.weight") == (
        "blk.12.ffn_down.weight", "b")
    assert gguf_tensor_name("model.layers.0.mlp.gate_proj.lora_A.default.weight") == ("blk.0.ffn_gate.weight", "a")


def test_weights_other_than_q_and_k_are_copied_unchanged(converted):
    _, tensors, source = converted
    for module in ("v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        base = f"blk.1.{EXPECTED_NAMES[module]}.weight"
        np.testing.assert_array_equal(tensors[f"{base}.lora_a"], source[peft_key(1, module, "A")])
        np.testing.assert_array_equal(tensors[f"{base}.lora_b"], source[peft_key(1, module, "B")])


@pytest.mark.parametrize("module, heads", [("q_proj", SMOLLM["heads"]), ("k_proj", SMOLLM["heads_kv"])])
def test_q_and_k_follow_llama_cpps_rotary_row_order(converted, module, heads):
    _, tensors, source = converted
    base = f"blk.0.{EXPECTED_NAMES[module]}.weight"
    a, b = source[peft_key(0, module, "A")], source[peft_key(0, module, "B")]
    # lora_a (rank x inputs) is untouched; lora_b's rows are reordered like the model's own q/k rows ...
    np.testing.assert_array_equal(tensors[f"{base}.lora_a"], a)
    order = llama_cpp_row_order(b.shape[0], heads)
    np.testing.assert_array_equal(tensors[f"{base}.lora_b"], b[order])
    # ... so the change the adapter makes is the HF change with the model's row order.
    delta_hf = b @ a
    delta_gguf = tensors[f"{base}.lora_b"] @ tensors[f"{base}.lora_a"]
    np.testing.assert_allclose(delta_gguf, delta_hf[order], rtol=1e-6, atol=1e-9)
    assert not np.allclose(delta_gguf, delta_hf)  # the reordering is not a no-op


def test_permutation_refuses_rows_that_do_not_split_into_heads():
    with pytest.raises(ConversionError, match="Cannot split 10 rows into 3 rotary heads"):
        permute_rotary_rows(np.zeros((10, 2)), 3)


def test_alpha_rank_and_base_model_are_recorded(tmp_path):
    import gguf

    folder = make_peft(tmp_path / "peft", rank=16, alpha=24, layers=1)
    out = tmp_path / "a.gguf"
    info = convert_peft_adapter(folder, out, default_model_path(), name="Pirate")
    fields = gguf.GGUFReader(str(out)).fields

    def value(key):
        field = fields[key]
        part = field.parts[field.data[0]]
        return bytes(part).decode() if field.types[0] == gguf.GGUFValueType.STRING else part[0]

    assert value("general.type") == "adapter" and value("adapter.type") == "lora"
    assert value("adapter.lora.alpha") == 24.0 and value("parley.lora.rank") == 16
    assert value("general.name") == "Pirate"
    assert value("general.base_model.0.name") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info.rank == 16 and info.alpha == 24.0 and info.tensor_type == "F16"


def test_bfloat16_weights_are_read(tmp_path):
    folder = make_peft(tmp_path / "peft", rank=2, layers=1, modules=("v_proj",), dtype="BF16")
    tensors, _ = read_safetensors(folder / "adapter_model.safetensors")
    out = tmp_path / "a.gguf"
    convert_peft_adapter(folder, out, default_model_path(), outtype="f32")
    np.testing.assert_array_equal(gguf_tensors(out)["blk.0.attn_v.weight.lora_a"],
                                  tensors[peft_key(0, "v_proj", "A")])


def test_rslora_and_per_module_alpha_are_folded_into_lora_b(tmp_path):
    folder = make_peft(tmp_path / "peft", rank=4, alpha=8, layers=1, modules=("v_proj", "o_proj"),
                       config={"use_rslora": True, "alpha_pattern": {"o_proj": 16}})
    source, _ = read_safetensors(folder / "adapter_model.safetensors")
    out = tmp_path / "a.gguf"
    convert_peft_adapter(folder, out, default_model_path(), outtype="f32")
    tensors = gguf_tensors(out)
    # llama.cpp scales by alpha/rank = 2; rsLoRA meant alpha/sqrt(rank) = 4 (v) and 16/2 = 8 (o).
    np.testing.assert_allclose(tensors["blk.0.attn_v.weight.lora_b"], source[peft_key(0, "v_proj", "B")] * 2,
                               rtol=1e-6)
    np.testing.assert_allclose(tensors["blk.0.attn_output.weight.lora_b"],
                               source[peft_key(0, "o_proj", "B")] * 4, rtol=1e-6)


# PEFT's module names (no "base_model.model." in front), each with the keys that should and
# should not pick it; the comparison with PEFT's own function below is what decides.
PATTERN_NAMES = [f"model.layers.{layer}.{part}.{module}" for layer in (0, 3, 13)
                 for part, module in (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "o_proj"),
                                      ("mlp", "down_proj"))]
PATTERN_SETS = [
    {"q_proj": 16},
    {"q_proj|k_proj": 16},  # alternation: both modules, not "…q_proj" or "k_proj…"
    {"^model.layers.3.self_attn.k_proj": 32},  # anchored at the module name PEFT sees
    {"model.layers.3.self_attn.k_proj": 32},
    {"layers.3.self_attn.k_proj": 32, "k_proj": 4},  # first match wins, in the file's order
    {"k_proj": 4, "layers.3.self_attn.k_proj": 32},
    {r"layers\.(0|3)\.self_attn\.q_proj": 12},
    {"proj": 2},  # a bare suffix that is not a whole dotted part matches nothing in PEFT
    {"self_attn.o_proj|mlp.down_proj": 6, "^model.layers.13.*": 7},
    {".*_proj": 9},
    {"layers.1": 3},  # "layers.1" must not pick "layers.13…"
]


@pytest.mark.parametrize("patterns", PATTERN_SETS, ids=lambda p: "+".join(p))
def test_per_module_keys_resolve_as_in_peft(patterns):
    from peft.utils.other import get_pattern_key  # PEFT's own choice (LoraModel._create_and_replace)

    from desktop_app_lora.convert import _pattern_value

    for name in PATTERN_NAMES:
        expected = patterns.get(get_pattern_key(patterns.keys(), name), "default")
        # Parley sees the names as saved, with PEFT's prefix; both forms must resolve the same.
        assert _pattern_value(patterns, f"base_model.model.{name}", "default") == expected, name
        assert _pattern_value(patterns, name, "default") == expected, name


def test_alternation_and_anchored_alpha_keys_scale_the_right_modules(tmp_path):
    folder = make_peft(tmp_path / "peft", rank=4, alpha=8, layers=4, modules=("q_proj", "k_proj", "v_proj"),
                       config={"alpha_pattern": {"^model.layers.3.self_attn.k_proj": 32, "q_proj|k_proj": 16}})
    source, _ = read_safetensors(folder / "adapter_model.safetensors")
    out = tmp_path / "a.gguf"
    convert_peft_adapter(folder, out, default_model_path(), outtype="f32")
    tensors = gguf_tensors(out)
    heads = {"q_proj": SMOLLM["heads"], "k_proj": SMOLLM["heads_kv"]}
    # llama.cpp scales by alpha/rank = 2: the factor folded into lora_b is PEFT's alpha / 8.
    for layer in range(4):
        for module, kind, factor in (("q_proj", "attn_q", 2), ("k_proj", "attn_k", 4 if layer == 3 else 2),
                                     ("v_proj", "attn_v", 1)):
            expected = source[peft_key(layer, module, "B")] * factor
            if module in heads:
                expected = expected[llama_cpp_row_order(expected.shape[0], heads[module])]
            np.testing.assert_allclose(tensors[f"blk.{layer}.{kind}.weight.lora_b"], expected, rtol=1e-6,
                                       err_msg=f"layer {layer} {module}")


# -- refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize("config, reason", [
    ({"use_dora": True}, "DoRA"),
    ({"peft_type": "IA3"}, "IA3 adapter; only LoRA"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save: lm_head"),
    ({"fan_in_fan_out": True}, "Conv1D"),
    ({"bias": "all"}, "trains biases"),
    ({"modules_to_save": "lm_head"}, r"modules_to_save: lm_head\)"),  # one name, not its letters
    ({"r": 0}, r"r \(the rank\) must be a whole number from 1 to 65536, not 0"),
    ({"r": "abc"}, "r .the rank. must be a whole number from 1 to 65536, not 'abc'"),
    ({"r": 10**12}, "r .the rank. must be a whole number"),
    ({"r": True}, "r .the rank. must be a whole number"),
    ({"lora_alpha": -1}, "lora_alpha must be a number above 0 .*, not -1"),
    ({"lora_alpha": float("nan")}, "lora_alpha must be a number above 0 .*, not nan"),
    ({"lora_alpha": float("inf")}, "lora_alpha must be a number above 0 .*, not inf"),
    ({"alpha_pattern": [1, 2]}, "alpha_pattern must map module names to numbers"),
    ({"alpha_pattern": {"q_proj": "x"}}, r"alpha_pattern\['q_proj'\] must be a number above 0"),
    ({"alpha_pattern": {"(": 2}}, "invalid module pattern '\\('"),
    ({"alpha_pattern": {"(?i)q_proj": 2}}, "invalid module pattern"),  # a flag mid-pattern, as it is used
    ({"lora_alpha": 1e39}, "below 3.4e38"),  # more than the file's 32-bit float holds
    ({"use_rslora": "yes"}, "use_rslora must be true or false, not 'yes'"),
])
def test_unsupported_configurations_are_refused(tmp_path, config, reason):
    folder = make_peft(tmp_path / "peft", layers=1, config=config)
    out = tmp_path / "a.gguf"
    with pytest.raises(ConversionError, match=reason):
        convert_peft_adapter(folder, out, default_model_path())
    assert not out.exists() and not list(tmp_path.glob(".a.gguf.*"))


def test_a_rank_written_as_a_float_and_a_null_rslora_are_read(tmp_path):
    folder = make_peft(tmp_path / "peft", rank=4, layers=1, config={"r": 4.0, "use_rslora": None})
    info = convert_peft_adapter(folder, tmp_path / "a.gguf", default_model_path())
    assert info.rank == 4


@pytest.mark.parametrize("key, reason", [
    ("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", "not a LoRA weight of a llama-family"),
    ("base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight", "module 'qkv_proj'"),
    ("base_model.model.model.embed_tokens.lora_embedding_A", "token embeddings or the output layer"),
    ("base_model.model.lm_head.lora_A.weight", "token embeddings or the output layer"),
])
def test_unsupported_target_modules_are_refused(tmp_path, key, reason):
    folder = tmp_path / "peft"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    write_safetensors(folder / "adapter_model.safetensors", {key: np.zeros((4, 576))})
    with pytest.raises(ConversionError, match=reason):
        convert_peft_adapter(folder, tmp_path / "a.gguf", default_model_path())


def test_an_incomplete_adapter_is_refused(tmp_path):
    folder = tmp_path / "peft"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    write_safetensors(folder / "adapter_model.safetensors", {peft_key(0, "q_proj", "A"): np.zeros((4, 576))})
    with pytest.raises(ConversionError, match="blk.0.attn_q.weight has only lora_A"):
        convert_peft_adapter(folder, tmp_path / "a.gguf", default_model_path())


def test_an_adapter_for_another_model_is_refused(tmp_path):
    folder = make_peft(tmp_path / "peft", layers=1, shapes={"n_embd": 768, "n_kv": 768})
    with pytest.raises(ConversionError, match="does not fit SmolLM2"):
        convert_peft_adapter(folder, tmp_path / "a.gguf", default_model_path())
    assert not (tmp_path / "a.gguf").exists()


def test_unsupported_base_architectures_are_refused(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from tests.gguf_files import write_tiny_gguf

    base = write_tiny_gguf(tmp_path / "gpt2.gguf", architecture="gpt2")
    folder = make_peft(tmp_path / "peft", layers=1)
    with pytest.raises(ConversionError, match="gpt2 model; converting LoRA adapters is supported for llama, qwen2, qwen3"):
        convert_peft_adapter(folder, tmp_path / "a.gguf", base)


@pytest.mark.parametrize("value, outtype, reason", [
    (np.nan, "f16", "hold NaN or infinite values"),
    (np.inf, "f32", "hold NaN or infinite values"),
    (1e6, "f16", "too large for f16; convert with the output type f32"),
])
def test_weights_that_would_wreck_the_answers_are_refused(tmp_path, value, outtype, reason):
    folder = tmp_path / "peft"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 4}))
    b = np.zeros((576, 4))
    b[3, 1] = value
    write_safetensors(folder / "adapter_model.safetensors",
                      {peft_key(0, "q_proj", "A"): np.ones((4, 576)), peft_key(0, "q_proj", "B"): b})
    with pytest.raises(ConversionError, match=reason):
        convert_peft_adapter(folder, tmp_path / "a.gguf", default_model_path(), outtype=outtype)
    assert not (tmp_path / "a.gguf").exists()


@pytest.mark.parametrize("damage, reason", [
    ("no config", "has no adapter_config.json"),
    ("bad json", "adapter_config.json cannot be read"),
    ("no weights", "has no adapter_model.safetensors"),
    ("pickle", "adapter_model.bin"),
    ("cut weights", "cut short"),
])
def test_damaged_folders_are_refused(tmp_path, damage, reason):
    folder = make_peft(tmp_path / "peft", layers=1)
    weights = folder / "adapter_model.safetensors"
    if damage == "no config":
        (folder / "adapter_config.json").unlink()
    elif damage == "bad json":
        (folder / "adapter_config.json").write_text("{")
    elif damage == "no weights":
        weights.unlink()
    elif damage == "pickle":
        weights.rename(folder / "adapter_model.bin")
    else:
        weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ConversionError, match=reason):
        convert_peft_adapter(folder, tmp_path / "a.gguf", default_model_path())


def test_what_the_converter_writes_reads_back(tmp_path):
    folder = make_peft(tmp_path / "peft", rank=8, modules=("q_proj", "k_proj"), layers=30)
    out = tmp_path / "deep" / "a.gguf"
    info = convert_peft_adapter(folder, out, default_model_path())
    assert read_adapter_info(out).summary() == info.summary()
