"""The fit verdict for a model on the hub, and the GGUF header read from a file's first bytes."""

import pytest

from desktop_app.core.errors import ModelFileError
from desktop_app.core.hub_files import HubFile, HubModelFile
from desktop_app.core.hub_fit import fit_verdict
from desktop_app.core.memory_fit import ESTIMATE_TOLERANCE, RESERVE_BYTES, estimate_memory
from desktop_app.core.models import GGUFHeaderIncompleteError, check_gguf_file, default_model_path, read_gguf_header

GB = 10**9


@pytest.fixture(scope="module")
def header():
    return check_gguf_file(default_model_path())


def model(size: int, parts: int = 1) -> HubModelFile:
    files = tuple(HubFile("o/m", f"m-Q4_K_M-{i:05d}-of-{parts:05d}.gguf", size // parts) for i in range(1, parts + 1))
    return HubModelFile("o/m", "Q4_K_M", files, quantization="Q4_K_M")


def test_the_verdict_counts_the_files_and_the_context_buffers(header):
    m = model(3 * GB, parts=3)
    verdict = fit_verdict(m, header, available_ram=20 * GB, context_length=8192)
    e = estimate_memory(header, 8192)
    assert verdict.needed == 3 * GB + e.kv_cache + e.compute + e.output
    assert verdict.level == "fits" and verdict.available == 20 * GB
    assert verdict.text == f"fits: needs about {verdict.needed / GB:.1f} GB at 8,192 tokens of context, of 20.0 GB free"


def test_tight_is_fitting_only_without_the_margin_and_too_large_is_not_fitting(header):
    needed = fit_verdict(model(2 * GB), header, available_ram=100 * GB).needed
    at_margin = int(needed * (1 + ESTIMATE_TOLERANCE)) + RESERVE_BYTES + 1
    assert fit_verdict(model(2 * GB), header, available_ram=at_margin).level == "fits"
    tight = fit_verdict(model(2 * GB), header, available_ram=needed + 1)
    assert tight.level == "tight" and "tight: needs about 2.2 GB" in tight.text and "kept for the rest" in tight.text
    large = fit_verdict(model(2 * GB), header, available_ram=needed - 1)
    assert large.level == "too large" and large.text.startswith("too large: needs about") and "but only" in large.text


def test_vram_adds_to_the_budget_and_is_named(header):
    verdict = fit_verdict(model(6 * GB), header, available_ram=4 * GB, available_vram=8 * GB)
    assert verdict.level == "fits" and verdict.available == 12 * GB
    assert "of 12.0 GB free (4.0 GB RAM + 8.0 GB VRAM)" in verdict.text


def test_without_a_header_only_the_weights_are_counted_and_it_says_so():
    verdict = fit_verdict(model(500 * 10**6), None, available_ram=8 * GB)
    assert verdict.needed == 500 * 10**6 and verdict.estimate is None
    assert "500 MB for the weights alone (the context's memory could not be estimated)" in verdict.text


def test_a_header_is_read_from_the_first_bytes_and_a_short_read_asks_for_more(header):
    path = default_model_path()
    data = path.read_bytes()[:4 << 20]
    start = header.data_end - header.tensor_bytes
    with pytest.raises(GGUFHeaderIncompleteError) as cut:
        read_gguf_header(data[:start - 1], header.file_size, name="m.gguf")
    assert cut.value.have == start - 1 and "m.gguf" in str(cut.value) and "read more" in str(cut.value)
    for size in (start, len(data)):
        got = read_gguf_header(data[:size], header.file_size)
        assert (got.architecture, got.scalars, got.tensor_shapes, got.tensor_bytes, got.file_size) == \
            (header.architecture, header.scalars, header.tensor_shapes, header.tensor_bytes, header.file_size)
        assert estimate_memory(got, 4096) == estimate_memory(header, 4096)


def test_bytes_that_are_not_gguf_or_are_damaged_are_refused():
    with pytest.raises(ModelFileError, match="not a GGUF model file") as not_gguf:
        read_gguf_header(b"<html>not found</html>" * 10, name="m.gguf")
    assert not isinstance(not_gguf.value, GGUFHeaderIncompleteError)
    whole = default_model_path().read_bytes()[:1000]
    with pytest.raises(ModelFileError, match="damaged") as damaged:
        read_gguf_header(whole, file_size=1000, name="m.gguf")  # the whole "file", and the header runs past it
    assert not isinstance(damaged.value, GGUFHeaderIncompleteError)
