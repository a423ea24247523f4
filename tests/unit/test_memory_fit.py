"""Choosing a context length that fits, from the built-in model's header (nothing is loaded)."""

from __future__ import annotations

import pytest

from desktop_app.core.memory_fit import (CONTEXT_STEP, ESTIMATE_TOLERANCE, available_memory,
                                         choose_context_length, estimate_memory)
from desktop_app.core.models import check_gguf_file, default_model_path

MB = 1_000_000


@pytest.fixture(scope="module")
def header():
    return check_gguf_file(default_model_path())


def test_the_kv_cache_follows_the_formula_from_the_models_keys(header):
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dimensions each for keys and for values.
    e = estimate_memory(header, 2048)
    assert e.kv_cache == 30 * 2048 * (3 * 64 + 3 * 64) * 2
    assert estimate_memory(header, 2048, kv_type="q8_0").kv_cache == 30 * 2048 * 384 * 34 // 32
    assert estimate_memory(header, 1000).context_length == 1024  # llama.cpp's padding
    assert e.weights == header.tensor_bytes and 0 < header.tensor_bytes <= header.file_size


def test_memory_grows_with_the_context_and_adapters_add_their_size(header):
    totals = [estimate_memory(header, n).total for n in (256, 1024, 4096, 8192)]
    assert totals == sorted(totals) and len(set(totals)) == 4
    with_adapter = estimate_memory(header, 2048, adapters=[header])
    assert with_adapter.total - estimate_memory(header, 2048).total == header.tensor_bytes


def test_an_unknown_kv_type_is_refused(header):
    with pytest.raises(ValueError, match="Unknown KV cache type 'q9'"):
        estimate_memory(header, 512, kv_type="q9")


def test_plenty_of_memory_gives_the_trained_context(header):
    choice = choose_context_length(header, 64_000 * MB)
    assert choice.context_length == 8192 and choice.fits and not choice.user_set
    assert "trained context" in choice.explanation and "\n" not in choice.explanation


def test_the_largest_context_that_fits_is_chosen(header):
    budget = estimate_memory(header, 4096).total * (1 + ESTIMATE_TOLERANCE)
    choice = choose_context_length(header, int(budget) + 1, reserve=0)
    assert choice.context_length == 4096 and choice.fits
    assert "largest that fits" in choice.explanation
    one_step_more = estimate_memory(header, 4096 + CONTEXT_STEP).total * (1 + ESTIMATE_TOLERANCE)
    assert one_step_more > budget


def test_when_nothing_fits_the_smallest_context_is_given_and_said(header):
    choice = choose_context_length(header, 100 * MB, reserve=0)
    assert choice.context_length == CONTEXT_STEP and not choice.fits
    assert "smaller model" in choice.explanation


def test_the_users_setting_is_kept_even_when_it_does_not_fit(header):
    choice = choose_context_length(header, 100 * MB, user_context=8192)
    assert choice.context_length == 8192 and choice.user_set and not choice.fits
    assert "your setting" in choice.explanation and "may not fit" in choice.explanation


def test_available_memory_is_a_plausible_number():
    assert 0 < available_memory() < 1 << 50
