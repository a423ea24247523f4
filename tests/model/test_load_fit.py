"""The real SmolLM2 loaded with its context and GPU layers chosen to fit, and the reason given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from desktop_app.core.engine import Engine, LoadConfig
from desktop_app.core.memory_fit import AUTO_CONTEXT, AUTO_GPU_LAYERS, CONTEXT_STEP, available_memory
from desktop_app.core.models import check_gguf_file, check_lora_file


@pytest.fixture
def context(paths):
    from desktop_app.context import build_context
    from desktop_app.plugins import PluginHost

    host = PluginHost(default_plugins=(), entry_points=lambda: [])
    host.load_all()
    ctx = build_context(paths, host=host)
    yield ctx
    ctx.close()


def test_an_auto_context_is_what_llama_cpp_gets_and_the_reason_is_kept(context, model_path):
    assert not context.settings.is_changed("model.context_length")  # nobody chose one
    warnings = context.load_model(None)
    plan = context.engine.load_plan
    trained = check_gguf_file(model_path).scalars["llama.context_length"]
    assert plan is not None and plan.context_length % CONTEXT_STEP == 0 and plan.context_length <= trained
    assert context.engine.context_length == plan.context_length  # llama.cpp's own n_ctx
    explanation = context.engine.fit_explanation
    assert explanation.startswith(f"Context {plan.context_length:,} tokens, ")
    if available_memory() > 4 * 1024**3:  # SmolLM2 needs under 0.5 GB at its trained context
        assert plan.context_length == trained and "the model's trained context" in explanation
        assert warnings == []
    if not Engine.gpu_offload_supported():
        assert context.engine.config.gpu_layers == 0
        assert explanation.endswith("CPU only: this build of llama.cpp has no GPU support.")


def test_a_models_own_context_is_loaded_and_said_to_be_the_users(context, model_path):
    context.models.add(model_path, name="Short")
    context.models.set_settings("Short", {"context_length": 1024, "gpu_layers": "auto"})
    context.load_model("Short")
    assert context.engine.context_length == 1024 and context.loaded_model_name == "Short"
    assert context.engine.fit_explanation.startswith("Context 1,024 tokens (your setting) fits")


def write_sparse_adapter(path: Path, gigabytes: int) -> Path:
    """A LoRA adapter whose header declares ``gigabytes`` of F16 tensors, in a sparse file (no disk used)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 8.0)
    columns = gigabytes * 1024**3 // 2 // 4096
    writer.add_tensor_info("blk.0.attn_q.weight.lora_a", (4096, columns), gguf.GGMLQuantizationType.F16,
                           4096 * columns * 2, raw_dtype=gguf.GGMLQuantizationType.F16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) + 4096 * columns * 2 + 4096)
    return path


def test_when_even_the_smallest_context_does_not_fit_it_loads_anyway_with_a_warning(tmp_path, model_path):
    # An adapter larger than this computer's free memory is to be applied: nothing fits.
    gigabytes = available_memory() // 1024**3 + 8
    adapter = write_sparse_adapter(tmp_path / "huge.gguf", gigabytes)
    assert check_lora_file(adapter).tensor_bytes >= gigabytes * 1024**3 - 4096
    engine = Engine()
    try:
        warnings = engine.load(model_path, LoadConfig(context_length=AUTO_CONTEXT, gpu_layers=AUTO_GPU_LAYERS,
                                                      adapters=(str(adapter),)))
        assert engine.loaded and engine.context_length == CONTEXT_STEP
        assert len(warnings) == 1 and warnings[0].startswith(f"{model_path.name} may not fit")
        assert "loaded anyway" in warnings[0] and "the smallest" in warnings[0] and "adapters" in warnings[0]
        assert not engine.load_plan.fits
    finally:
        engine.unload()
