"""Compatibility of hub adapters with the loaded model, decided from metadata before any download.

The adapters are made by lora_test_files for (or against) the real SmolLM2's shapes, and read
through the same head readers the hub search uses, here from local files.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from desktop_app.api import check_gguf_file
from desktop_app.core.models import default_model_path
from desktop_app_lora.hub_adapters import (
    COMPATIBLE,
    INCOMPATIBLE,
    PROBABLY,
    UNKNOWN,
    base_model_matches,
    gguf_compatibility,
    model_label,
    peft_compatibility,
    read_safetensors_head,
)
from desktop_app_lora.safetensors_file import SafetensorsError
from lora_test_files import ALL_MODULES, make_adapter_gguf, make_peft, write_safetensors

#: Tensors that are 576 × 576 in SmolLM2 (make_adapter_gguf gives every kind one output width).
SQUARE = ("attn_q", "attn_output")


@pytest.fixture(scope="module")
def model():
    return check_gguf_file(default_model_path())


class CountingReader:
    """Reads a local file's byte ranges and remembers how much was asked for."""

    def __init__(self, path: Path):
        self.data = path.read_bytes()
        self.read_bytes = 0

    def __call__(self, start: int, end: int) -> bytes:
        self.read_bytes += end - start
        return self.data[start:end]


def peft_verdict(folder: Path, model, **kwargs):
    config = folder / "adapter_config.json"
    weights = folder / "adapter_model.safetensors"
    tensors = (read_safetensors_head(CountingReader(weights), weights.stat().st_size, weights.name)
               if weights.exists() else None)
    return peft_compatibility(config.read_bytes() if config.exists() else None, tensors, model,
                              adapter_name=f"someone/{folder.name}", model_name=model_label(model, "the model"),
                              **kwargs)


def gguf_verdict(path: Path, model, **kwargs):
    header = check_gguf_file(path)  # the search reads the same header by a Range request
    return gguf_compatibility(header, model, adapter_name=path.name, model_name=model_label(model, "the model"),
                              **kwargs)


def test_a_peft_adapter_made_for_smollm2_is_compatible(tmp_path, model):
    folder = make_peft(tmp_path / "smollm2-lora", modules=ALL_MODULES)
    verdict = peft_verdict(folder, model)
    assert verdict.verdict == COMPATIBLE and verdict.usable
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in verdict.reason and "30 layers" in verdict.reason
    assert verdict.info.rank == 8 and verdict.info.layers == 30 and verdict.info.embedding_length == 576
    assert verdict.info.targets == sorted(["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                           "ffn_down"])


def test_only_the_safetensors_header_is_read(tmp_path, model):
    folder = make_peft(tmp_path / "big", rank=64, modules=ALL_MODULES)  # about 60 MB of weights
    weights = folder / "adapter_model.safetensors"
    reader = CountingReader(weights)
    tensors = read_safetensors_head(reader, weights.stat().st_size, weights.name)
    assert len(tensors) == 2 * 7 * 30
    assert reader.read_bytes <= 256 * 1024 < weights.stat().st_size // 100


def test_a_long_safetensors_header_takes_one_more_read(tmp_path):
    import numpy as np

    many = {f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight": np.zeros((1, 1))
            for i in range(6000)}
    path = write_safetensors(tmp_path / "adapter_model.safetensors", many)
    reader = CountingReader(path)
    tensors = read_safetensors_head(reader, path.stat().st_size, path.name)
    assert len(tensors) == 6000 and reader.read_bytes < path.stat().st_size


def test_a_wrong_embedding_size_is_refused_with_both_sizes(tmp_path, model):
    folder = make_peft(tmp_path / "bigger", shapes={"n_embd": 1024, "n_kv": 256, "n_ff": 4096}, layers=2)
    verdict = peft_verdict(folder, model)
    assert verdict.verdict == INCOMPATIBLE and not verdict.usable
    assert "embedding size 1024" in verdict.reason and "576" in verdict.reason


def test_more_layers_than_the_model_has_is_refused(tmp_path, model):
    folder = make_peft(tmp_path / "deep", layers=32, rank=2)
    verdict = peft_verdict(folder, model)
    assert verdict.verdict == INCOMPATIBLE
    assert "32 layers" in verdict.reason and "30" in verdict.reason


def test_a_gguf_adapter_for_another_architecture_is_refused(tmp_path, model):
    path = make_adapter_gguf(tmp_path / "qwen-lora.gguf", architecture="qwen2")
    verdict = gguf_verdict(path, model)
    assert verdict.verdict == INCOMPATIBLE
    assert "qwen2" in verdict.reason and "llama" in verdict.reason


def test_a_gguf_adapter_with_smollm2_shapes_is_probably_compatible(tmp_path, model):
    path = make_adapter_gguf(tmp_path / "plain.gguf", layers=30, kinds=SQUARE)
    verdict = gguf_verdict(path, model)
    assert verdict.verdict == PROBABLY and verdict.usable
    assert "does not say which model" in verdict.reason


def test_a_gguf_adapter_naming_its_base_model(tmp_path, model):
    path = make_adapter_gguf(tmp_path / "plain.gguf", kinds=SQUARE)
    header = dataclasses.replace(check_gguf_file(path))  # a copy: check_gguf_file keeps what it read
    header.scalars = dict(header.scalars)
    header.scalars["general.base_model.0.name"] = "SmolLM2 135M Instruct"
    same = gguf_compatibility(header, model, adapter_name=path.name, model_name="smollm2 135M")
    assert same.verdict == COMPATIBLE and same.base_model == "SmolLM2 135M Instruct"
    header.scalars["general.base_model.0.name"] = "SmolLM2-360M"
    other = gguf_compatibility(header, model, adapter_name=path.name, model_name="smollm2 135M")
    assert other.verdict == PROBABLY and "Trained on SmolLM2-360M, not on smollm2 135M" in other.reason


def test_the_hubs_base_model_tag_is_used_when_the_file_says_nothing(tmp_path, model):
    path = make_adapter_gguf(tmp_path / "plain.gguf", kinds=SQUARE)
    verdict = gguf_verdict(path, model, base_model="HuggingFaceTB/SmolLM2-135M")
    assert verdict.verdict == COMPATIBLE and verdict.base_model == "HuggingFaceTB/SmolLM2-135M"


def test_a_gguf_model_is_not_an_adapter(model):
    path = default_model_path()
    verdict = gguf_verdict(path, model)
    assert verdict.verdict == INCOMPATIBLE and "not a LoRA adapter" in verdict.reason


def test_a_gguf_adapter_of_the_wrong_width_is_refused(tmp_path, model):
    path = make_adapter_gguf(tmp_path / "wide.gguf", n_embd=2048)
    verdict = gguf_verdict(path, model)
    assert verdict.verdict == INCOMPATIBLE and "2048" in verdict.reason and "576" in verdict.reason


def test_a_non_lora_peft_type_is_refused(tmp_path, model):
    folder = make_peft(tmp_path / "ia3", layers=1, config={"peft_type": "IA3"})
    verdict = peft_verdict(folder, model)
    assert verdict.verdict == INCOMPATIBLE and "IA3" in verdict.reason and "only LoRA" in verdict.reason


def test_a_dora_adapter_is_refused(tmp_path, model):
    folder = make_peft(tmp_path / "dora", layers=1, config={"use_dora": True})
    assert "DoRA" in peft_verdict(folder, model).reason


def test_a_missing_config_is_refused(tmp_path, model):
    folder = make_peft(tmp_path / "no-config", layers=1)
    (folder / "adapter_config.json").unlink()
    verdict = peft_verdict(folder, model)
    assert verdict.verdict == INCOMPATIBLE and "no adapter_config.json" in verdict.reason


def test_a_damaged_config_says_so(tmp_path, model):
    folder = make_peft(tmp_path / "broken", layers=1)
    (folder / "adapter_config.json").write_text("{ not json")
    verdict = peft_verdict(folder, model)
    assert verdict.verdict == INCOMPATIBLE and "adapter_config.json cannot be read" in verdict.reason


def test_target_modules_the_converter_does_not_know_are_refused(tmp_path, model):
    folder = make_peft(tmp_path / "gpt2ish", layers=1, config={"target_modules": ["c_attn", "q_proj"]})
    verdict = peft_verdict(folder, model)
    assert verdict.verdict == INCOMPATIBLE and "c_attn" in verdict.reason and "q_proj" in verdict.reason


def test_unreadable_weights_give_unknown(tmp_path, model):
    folder = make_peft(tmp_path / "unseen", layers=1)
    verdict = peft_compatibility((folder / "adapter_config.json").read_bytes(), None, model,
                                 adapter_name="someone/unseen", model_name="smollm2 135M")
    assert verdict.verdict == UNKNOWN and not verdict.usable


def test_a_peft_adapter_trained_on_another_base_is_probably_compatible(tmp_path, model):
    folder = make_peft(tmp_path / "other", layers=2,
                       config={"base_model_name_or_path": "someone/TinyLlama-576"})
    verdict = peft_verdict(folder, model)
    assert verdict.verdict == PROBABLY and "Trained on someone/TinyLlama-576" in verdict.reason


def test_base_model_names_match_by_family_and_size(model):
    assert base_model_matches("HuggingFaceTB/SmolLM2-135M-Instruct", model)
    assert base_model_matches("https://huggingface.co/HuggingFaceTB/SmolLM2-135M", model)
    assert not base_model_matches("HuggingFaceTB/SmolLM2-1.7B-Instruct", model)
    assert not base_model_matches("meta-llama/Llama-3.2-1B", model)
    assert model_label(model, "x") == "smollm2 135M"


def test_a_damaged_safetensors_header_says_so(tmp_path):
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes((12).to_bytes(8, "little") + b"{not json!!}" + bytes(16))
    with pytest.raises(SafetensorsError, match="damaged header"):
        read_safetensors_head(CountingReader(path), path.stat().st_size, path.name)


def test_configs_with_patterns_and_rslora_pass(tmp_path, model):
    folder = make_peft(tmp_path / "rs", layers=2, config={"use_rslora": True, "alpha_pattern": {"q_proj|k_proj": 4}})
    assert peft_verdict(folder, model).verdict == COMPATIBLE
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["use_rslora"]
