"""The memory-fit estimate, from the GGUF header alone, against llama.cpp's own buffer sizes."""

from __future__ import annotations

import pytest

from desktop_app.core.memory_fit import ESTIMATE_TOLERANCE, estimate_memory, measure_llama_buffers
from desktop_app.core.models import check_gguf_file

pytestmark = pytest.mark.model


@pytest.mark.parametrize("n_ctx", [512, 2048, 8192])
@pytest.mark.parametrize("flash_attention", [True, False])
def test_the_estimate_is_within_tolerance_of_what_llama_cpp_allocates(model_path, n_ctx, flash_attention):
    estimate = estimate_memory(check_gguf_file(model_path), n_ctx, flash_attention=flash_attention)
    measured = measure_llama_buffers(model_path, n_ctx, flash_attention=flash_attention)
    assert set(measured) == {"model", "KV", "compute", "output"}, measured  # the log lines are still there
    total = sum(measured.values())
    assert abs(estimate.total - total) <= ESTIMATE_TOLERANCE * total, (estimate, measured)
    # The KV cache is the part that grows with the context: it must be right on its own.
    assert abs(estimate.kv_cache - measured["KV"]) <= 0.02 * measured["KV"]


def test_measuring_gives_llama_cpp_python_its_log_callback_back(model_path):
    import llama_cpp
    from llama_cpp import _logger

    calls = []
    original = llama_cpp.llama_log_set

    def spy(callback, user_data):
        calls.append(callback)
        return original(callback, user_data)

    llama_cpp.llama_log_set = spy
    try:
        measure_llama_buffers(model_path, 256)
    finally:
        llama_cpp.llama_log_set = original
    assert calls[-1] is _logger.llama_log_callback
