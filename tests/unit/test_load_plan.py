"""Choosing the context and GPU layers at load time, from synthetic headers and given amounts of memory."""

from __future__ import annotations

import pytest

from desktop_app.core.engine import Engine
from desktop_app.core.memory_fit import (ALL_GPU_LAYERS, AUTO_CONTEXT_MAX, ESTIMATE_TOLERANCE, VRAM_RESERVE_BYTES,
                                         available_vram, choose_gpu_layers, estimate_memory, layer_bytes, plan_load)
from desktop_app.core.models import GGUFHeader

MB = 1_000_000
GB = 1_000_000_000


def model_header(n_layer: int = 32, layer_size: int = 200 * MB, trained: int = 131072, tied: bool = False,
                 n_embd: int = 4096, n_vocab: int = 32000) -> GGUFHeader:
    """A header like a 7B model's: ``n_layer`` blocks of ``layer_size`` bytes, 8 KV heads of 128."""
    scalars = {"general.architecture": "llama", "llama.block_count": n_layer, "llama.embedding_length": n_embd,
               "llama.attention.head_count": 32, "llama.attention.head_count_kv": 8,
               "llama.context_length": trained}
    sizes = {}
    for i in range(n_layer):
        sizes[f"blk.{i}.attn_q.weight"] = layer_size // 2
        sizes[f"blk.{i}.ffn_up.weight"] = layer_size - layer_size // 2
    sizes["token_embd.weight"] = 70 * MB
    if not tied:
        sizes["output.weight"] = 100 * MB
    sizes["output_norm.weight"] = n_embd * 4
    return GGUFHeader(3, "llama", len(sizes), 0, 0, scalars, 0, {}, {"token_embd.weight": (n_embd, n_vocab)},
                      {}, sum(sizes.values()), sizes)


def gpu_need(header: GGUFHeader, context: int, layers: int) -> int:
    """What the offloaded part needs, worked out here from the estimate: compute + weights + KV."""
    e = estimate_memory(header, context)
    per_layer, output = layer_bytes(header)
    n_layer = len(per_layer)
    on_gpu = min(layers, n_layer)
    weights = sum(per_layer[n_layer - on_gpu:]) + (output if layers > n_layer else 0)
    return e.compute + weights + on_gpu * e.kv_cache // n_layer


def vram_for(header: GGUFHeader, context: int, layers: int) -> int:
    """Just enough free VRAM for ``layers`` (with the tolerance and the reserve)."""
    return int(gpu_need(header, context, layers) * (1 + ESTIMATE_TOLERANCE)) + VRAM_RESERVE_BYTES + 1


def test_layer_sizes_come_from_the_tensors_and_a_tied_output_is_the_embedding():
    per_layer, output = layer_bytes(model_header(n_layer=4))
    assert per_layer == [200 * MB] * 4 and output == 100 * MB + 4096 * 4
    assert layer_bytes(model_header(n_layer=4, tied=True))[1] == 70 * MB + 4096 * 4


def test_a_build_without_gpu_support_runs_on_the_cpu_and_says_so():
    choice = choose_gpu_layers(model_header(), 4096, None)
    assert choice.layers == 0 and choice.fits
    assert choice.explanation == "CPU only: this build of llama.cpp has no GPU support."
    mine = choose_gpu_layers(model_header(), 4096, None, user_layers=ALL_GPU_LAYERS)
    assert mine.layers == 0 and "your setting, all GPU layers, has no effect" in mine.explanation


def test_plenty_of_vram_takes_every_layer_and_the_output():
    choice = choose_gpu_layers(model_header(), 4096, 80 * GB)
    assert choice.layers == 33 and choice.fits and not choice.user_set
    assert "all 32 layers and the output" in choice.explanation


def test_the_most_layers_that_fit_are_offloaded():
    header = model_header()
    for layers in (1, 12, 32):
        vram = vram_for(header, 4096, layers)
        choice = choose_gpu_layers(header, 4096, vram)
        assert choice.layers == layers, (layers, choice.explanation)
        assert choice.needed == gpu_need(header, 4096, layers)
        assert choose_gpu_layers(header, 4096, vram - 2).layers == layers - 1  # one byte short of that many
    assert "12 of 32 layers, the most that fit" in choose_gpu_layers(header, 4096, vram_for(header, 4096, 12)).explanation
    assert "the rest run on the CPU" in choose_gpu_layers(header, 4096, vram_for(header, 4096, 12)).explanation


def test_a_longer_context_leaves_room_for_fewer_layers():
    header = model_header()
    vram = 6 * GB
    assert choose_gpu_layers(header, 32768, vram).layers < choose_gpu_layers(header, 2048, vram).layers


def test_too_little_vram_or_none_found_means_cpu_only_with_the_reason():
    header = model_header()
    small = choose_gpu_layers(header, 4096, 600 * 1024 * 1024)
    assert small.layers == 0 and "CPU only: even one layer needs about" in small.explanation
    assert "no GPU answered" in choose_gpu_layers(header, 4096, 0).explanation


def test_the_users_gpu_layers_are_kept_and_checked():
    header = model_header()
    mine = choose_gpu_layers(header, 4096, 2 * GB, user_layers=30)
    assert mine.layers == 30 and mine.user_set and not mine.fits and "may not fit" in mine.explanation
    assert choose_gpu_layers(header, 4096, 80 * GB, user_layers=ALL_GPU_LAYERS).layers == 33
    assert choose_gpu_layers(header, 4096, 80 * GB, user_layers=0).explanation == "CPU only (your setting)."


def test_an_auto_context_is_capped_for_a_quick_load_and_says_why():
    plan = plan_load(model_header(trained=131072), available=500 * GB, vram=None)
    assert plan.context_length == AUTO_CONTEXT_MAX and plan.gpu_layers == 0 and plan.fits
    assert "trained for 131,072" in plan.explanation
    assert plan.explanation.endswith("CPU only: this build of llama.cpp has no GPU support.")
    assert plan.warning("big.gguf") is None
    short = plan_load(model_header(trained=8192), available=500 * GB, vram=None)
    assert short.context_length == 8192 and "the model's trained context" in short.explanation


def test_an_auto_context_fits_the_free_memory():
    header = model_header()
    plan = plan_load(header, available=12 * GB, vram=None)
    assert 256 <= plan.context_length < AUTO_CONTEXT_MAX and "the largest that fits" in plan.explanation
    budget = 12 * GB - 1024 * 1024 * 1024
    assert estimate_memory(header, plan.context_length).total * (1 + ESTIMATE_TOLERANCE) <= budget
    assert estimate_memory(header, plan.context_length + 256).total * (1 + ESTIMATE_TOLERANCE) > budget


def test_lora_adapters_being_loaded_count_against_the_context():
    header = model_header()
    adapter = model_header(n_layer=32, layer_size=20 * MB)
    alone = plan_load(header, available=12 * GB, vram=None)
    with_adapter = plan_load(header, available=12 * GB, vram=None, adapters=[adapter])
    assert with_adapter.context_length < alone.context_length
    assert "adapters" in with_adapter.explanation


def test_with_a_gpu_the_context_counts_vram_and_the_layers_fill_it():
    header = model_header()
    plan = plan_load(header, available=4 * GB, vram=24 * GB)
    assert plan.context_length > plan_load(header, available=4 * GB, vram=None).context_length
    assert "of RAM and VRAM available" in plan.explanation and plan.gpu_layers > 0 and "GPU:" in plan.explanation


def test_the_users_context_is_kept_even_when_it_does_not_fit_and_a_warning_says_so():
    plan = plan_load(model_header(), context_length=32768, gpu_layers=0, available=2 * GB, vram=8 * GB)
    assert plan.context_length == 32768 and plan.gpu_layers == 0 and not plan.fits
    assert "(your setting) may not fit" in plan.explanation
    assert "CPU only (your setting)." in plan.explanation
    warning = plan.warning("big.gguf")
    assert warning.startswith("big.gguf may not fit") and "loaded anyway" in warning


def test_when_not_even_the_smallest_context_fits_it_is_still_planned_with_a_warning():
    plan = plan_load(model_header(), available=1 * GB, vram=None)
    assert plan.context_length == 256 and not plan.fits
    assert "smaller model" in plan.explanation and "loaded anyway" in plan.warning("big.gguf")


def test_available_vram_is_none_on_a_build_without_gpu_support():
    vram = available_vram()
    if Engine.gpu_offload_supported():
        assert vram is not None and vram >= 0
    else:
        assert vram is None


@pytest.mark.parametrize("layers", [0, 5])
def test_a_header_without_tensor_sizes_spreads_the_weights_evenly(layers):
    header = model_header(n_layer=4)
    header.tensor_sizes = None
    per_layer, output = layer_bytes(header)
    assert len(per_layer) == 4 and sum(per_layer) + output <= header.tensor_bytes
    assert choose_gpu_layers(header, 1024, 80 * GB, user_layers=layers).layers == layers
