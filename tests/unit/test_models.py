import pytest

from desktop_app.core.errors import ModelFileError
from desktop_app.core.models import (
    DEFAULT_MODEL_NAME,
    ModelLibrary,
    check_gguf_file,
    default_model_path,
    read_gguf_info,
)
from tests.gguf_files import write_tiny_gguf


def test_the_default_model_ships_with_the_app():
    path = default_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_quick_check_reads_architecture_and_exact_data_end():
    header = check_gguf_file(default_model_path())
    assert header.architecture == "llama"
    assert header.data_end == header.file_size


def test_full_metadata_of_the_default_model():
    info = read_gguf_info(default_model_path())
    assert info.architecture == "llama"
    assert info.quantization == "Q4_1"
    assert 130e6 < info.parameter_count < 140e6
    assert info.context_length == 8192
    assert info.has_chat_template and "im_start" in info.chat_template


def test_not_gguf_is_refused(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ModelFileError, match="not a GGUF model"):
        check_gguf_file(bad)


def test_missing_and_tiny_files_are_refused(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        check_gguf_file(tmp_path / "nope.gguf")
    (tmp_path / "t.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelFileError, match="too small"):
        check_gguf_file(tmp_path / "t.gguf")


def test_truncated_tensor_data_is_refused_with_the_missing_size(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    check_gguf_file(path)
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    with pytest.raises(ModelFileError, match="truncated: 1,000 bytes"):
        check_gguf_file(path)


def test_file_cut_inside_the_header_is_refused(tmp_path):
    source = default_model_path()
    cut = tmp_path / "cut.gguf"
    with open(source, "rb") as handle:
        cut.write_bytes(handle.read(200_000))  # inside the tokenizer arrays
    with pytest.raises(ModelFileError, match="damaged or incomplete|truncated"):
        check_gguf_file(cut)


def test_unknown_architecture_is_refused(tmp_path):
    path = write_tiny_gguf(tmp_path / "alien.gguf", architecture="alienformer")
    with pytest.raises(ModelFileError, match="architecture 'alienformer'"):
        check_gguf_file(path)


def test_library_add_reference_list_info_remove(paths, tmp_path):
    lib = ModelLibrary(paths)
    assert [e.name for e in lib.entries()] == [DEFAULT_MODEL_NAME]
    entry = lib.add(default_model_path(), name="smol")
    assert not entry.copied and entry.info["architecture"] == "llama"
    assert [e.name for e in ModelLibrary(paths).entries()] == [DEFAULT_MODEL_NAME, "smol"]
    assert lib.add(default_model_path(), name="smol").name == "smol (2)"
    assert lib.info("smol").quantization == "Q4_1"
    lib.remove("smol")
    assert default_model_path().exists()  # a referenced file is never deleted
    with pytest.raises(ModelFileError, match="built-in"):
        lib.remove(DEFAULT_MODEL_NAME)
    with pytest.raises(ModelFileError, match="no model called"):
        lib.get("ghost")


def test_library_copy_lives_in_the_data_folder_and_is_deleted_with_the_entry(paths, tmp_path):
    lib = ModelLibrary(paths)
    source = write_tiny_gguf(tmp_path / "tiny.gguf")
    entry = lib.add(source, copy=True)
    copied = paths.models_dir / "tiny.gguf"
    assert entry.copied and copied.exists() and entry.path == str(copied)
    lib.remove(entry.name)
    assert not copied.exists() and source.exists()


def test_library_refuses_bad_files_and_stays_unchanged(paths, tmp_path):
    lib = ModelLibrary(paths)
    bad = tmp_path / "bad.gguf"
    bad.write_text("hello")
    with pytest.raises(ModelFileError):
        lib.add(bad)
    assert len(lib.entries()) == 1


def test_a_corrupt_library_index_is_set_aside(paths):
    paths.models_file.write_text("{broken")
    assert [e.name for e in ModelLibrary(paths).entries()] == [DEFAULT_MODEL_NAME]
    assert list(paths.data_dir.glob("models.json.corrupt-*"))


def test_header_walk_agrees_with_the_gguf_packages_reader():
    import gguf

    path = default_model_path()
    info = read_gguf_info(path)
    reader = gguf.GGUFReader(str(path))
    fields = reader.fields
    assert info.architecture == fields["general.architecture"].contents()
    assert info.name == fields["general.name"].contents()
    assert info.context_length == fields["llama.context_length"].contents()
    assert info.chat_template == fields["tokenizer.chat_template"].contents()
    assert info.parameter_count == sum(int(t.n_elements) for t in reader.tensors)
    assert info.quantization == gguf.LlamaFileType(fields["general.file_type"].contents()).name.removeprefix("MOSTLY_")
    end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    assert check_gguf_file(path).data_end == end
