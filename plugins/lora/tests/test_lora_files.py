"""Adapter files without running a model: metadata, damaged files, compatibility, the library, data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop_app.core.models import default_model_path
from desktop_app_lora.adapters import AdapterError, check_compatible, read_adapter_info
from desktop_app_lora.convert import convert_peft_adapter
from desktop_app_lora.data import DataError, load_jsonl, with_system_prompt
from desktop_app_lora.library import AdapterLibrary, Choice
from lora_test_files import make_adapter_gguf, make_peft


@pytest.fixture
def adapter(tmp_path) -> Path:
    """A rank-8 attention adapter for SmolLM2, made by the converter."""
    make_peft(tmp_path / "peft", rank=8, alpha=32, modules=("q_proj", "v_proj"))
    out = tmp_path / "made.gguf"
    convert_peft_adapter(tmp_path / "peft", out, default_model_path(), name="my adapter")
    return out


# -- metadata ------------------------------------------------------------------------------
def test_metadata_of_a_converted_adapter(adapter):
    info = read_adapter_info(adapter)
    assert info.architecture == "llama"
    assert info.name == "my adapter"
    assert info.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info.rank == 8 and info.ranks == [8]
    assert info.alpha == 32.0
    assert info.targets == ["attn_q", "attn_v"]
    assert info.layers == 30
    assert info.embedding_length == 576
    assert info.file_size == adapter.stat().st_size
    assert info.tensor_type == "F16"
    assert len(info.pairs) == 60
    assert "rank 8 · alpha 32 · attn_q, attn_v" in info.describe()


def test_metadata_matches_ggufs_own_reader(adapter):
    import gguf

    reader = gguf.GGUFReader(str(adapter))
    info = read_adapter_info(adapter)
    alpha = reader.fields["adapter.lora.alpha"]
    assert float(alpha.parts[alpha.data[0]][0]) == info.alpha
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    for base, (a, b) in info.pairs.items():
        assert shapes[f"{base}.lora_a"] == a and shapes[f"{base}.lora_b"] == b


def test_an_adapter_without_base_model_or_name_still_reads(tmp_path):
    info = read_adapter_info(make_adapter_gguf(tmp_path / "plain.gguf", rank=4, alpha=0.0))
    assert info.base_model is None and info.rank == 4 and info.alpha == 0.0 and info.layers == 2


# -- damaged or wrong files ----------------------------------------------------------------
@pytest.mark.parametrize("content, reason", [
    (b"", "not a GGUF LoRA adapter"),
    (b"hello, I am a text file", "not a GGUF LoRA adapter"),
    (b"GGUF\x03\x00\x00\x00" + b"\xff" * 40, "damaged or incomplete"),
])
def test_files_that_are_not_adapters_are_refused(tmp_path, content, reason):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(AdapterError, match=reason):
        read_adapter_info(path)


def test_a_truncated_adapter_is_refused(adapter, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])
    with pytest.raises(AdapterError, match="truncated"):
        read_adapter_info(cut)


def test_a_model_is_not_an_adapter():
    with pytest.raises(AdapterError, match="is a model, not a LoRA adapter"):
        read_adapter_info(default_model_path())


def test_peft_files_and_folders_get_a_hint(tmp_path):
    folder = make_peft(tmp_path / "peft", layers=1)
    with pytest.raises(AdapterError, match="convert it to GGUF first"):
        read_adapter_info(folder)
    with pytest.raises(AdapterError, match="looks like PEFT weights"):
        read_adapter_info(folder / "adapter_model.safetensors")


@pytest.mark.parametrize("kwargs, reason", [
    ({"drop": "blk.1.attn_v.weight.lora_b"}, "blk.1.attn_v.weight has no lora_b"),
    ({"adapter_type": "control_vector"}, "not a LoRA adapter"),
    ({"general_type": "model"}, "is a model"),
    ({"extra_tensors": {"blk.0.attn_q.weight": None}}, "not part of a LoRA adapter"),
])
def test_malformed_adapters_are_refused_with_the_reason(tmp_path, kwargs, reason):
    import numpy as np

    extra = kwargs.get("extra_tensors")
    if extra:
        kwargs["extra_tensors"] = {k: np.zeros((4, 4), dtype=np.float32) for k in extra}
    with pytest.raises(AdapterError, match=reason):
        read_adapter_info(make_adapter_gguf(tmp_path / "broken.gguf", **kwargs))


def test_mismatched_ranks_are_refused(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "ranks.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 576), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((576, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(AdapterError, match="ranks of blk.0.attn_q.weight's lora_a .4. and lora_b .8. differ"):
        read_adapter_info(path)


# -- compatibility -------------------------------------------------------------------------
def test_a_fitting_adapter_passes(adapter):
    check_compatible(read_adapter_info(adapter), default_model_path())


@pytest.mark.parametrize("kwargs, reason", [
    ({"architecture": "qwen2"}, "is for the qwen2 architecture, but SmolLM2.* is llama"),
    ({"n_embd": 2048, "layers": 2}, "embedding size 2048, but SmolLM2.* has 576"),
    ({"layers": 32}, "changes 32 layers, but SmolLM2.* has 30"),
    ({"kinds": ("attn_k",), "n_out": 576}, r"blk.0.attn_k.weight is 576 × 192 in the model, but the adapter expects 576 × 576"),
    ({"kinds": ("attn_qkv",)}, "changes blk.0.attn_qkv.weight, which SmolLM2.* does not have"),
    ({"kinds": ("ffn_down",), "n_embd": 1024}, "ffn_down.weight is 1536 × 576 in the model"),
])
def test_adapters_for_other_shapes_are_refused_with_the_reason(tmp_path, kwargs, reason):
    info = read_adapter_info(make_adapter_gguf(tmp_path / "other.gguf", **kwargs))
    with pytest.raises(AdapterError, match=reason):
        check_compatible(info, default_model_path())


def test_embedding_adapters_on_a_tied_model_are_refused(tmp_path):
    import numpy as np

    # SmolLM2 shares its embedding with its output layer; llama.cpp would abort on this.
    extra = {"token_embd.weight.lora_a": np.zeros((49152, 4), dtype=np.float32),
             "token_embd.weight.lora_b": np.zeros((576, 4), dtype=np.float32)}
    info = read_adapter_info(make_adapter_gguf(tmp_path / "embd.gguf", layers=1, kinds=("attn_q",),
                                               extra_tensors=extra))
    with pytest.raises(AdapterError, match="shares with its output layer"):
        check_compatible(info, default_model_path())


# -- the library ---------------------------------------------------------------------------
def test_library_add_list_remove(tmp_path, adapter):
    library = AdapterLibrary(tmp_path / "adapters")
    entry = library.add(adapter, name="style")
    copied = library.path(entry)
    assert copied.parent == tmp_path / "adapters" and copied.exists() and adapter.exists()
    assert entry.info["rank"] == 8 and entry.source.startswith("added from")
    second = library.add(adapter, name="style")
    assert second.name == "style (2)" and library.path(second) != copied
    assert [e.name for e in AdapterLibrary(tmp_path / "adapters").entries()] == ["style", "style (2)"]
    library.set_defaults([Choice("style", 0.7)])
    library.remove("style")
    assert not copied.exists()
    reopened = AdapterLibrary(tmp_path / "adapters")
    assert [e.name for e in reopened.entries()] == ["style (2)"]
    assert reopened.defaults() == []


def test_the_library_stays_readable_while_an_adapter_is_copied_in(tmp_path, adapter, monkeypatch):
    import shutil
    import threading

    from desktop_app_lora import library as library_module

    library = AdapterLibrary(tmp_path / "adapters")
    copying, release = threading.Event(), threading.Event()
    real_copy = shutil.copyfile

    def slow_copy(source, target):
        copying.set()
        assert release.wait(60)  # longer than the reader below is given
        return real_copy(source, target)

    monkeypatch.setattr(library_module.shutil, "copyfile", slow_copy)
    added = []
    worker = threading.Thread(target=lambda: added.append(library.add(adapter, name="big")))
    worker.start()
    assert copying.wait(60)
    # The window reads the list meanwhile; it must not wait for the copy (which is held until the
    # end of the test: a reader that waited for it would still be waiting after 30 s).
    reader = threading.Thread(target=library.entries)
    reader.start()
    reader.join(30)
    assert not reader.is_alive()
    monkeypatch.setattr(library_module.shutil, "copyfile", real_copy)
    second = library.add(adapter, name="big")  # the name being copied in is taken
    release.set()
    worker.join(30)
    assert second.name == "big (2)" and added[0].name == "big"
    assert library.path(second) != library.path(added[0])
    assert sorted(e.name for e in AdapterLibrary(tmp_path / "adapters").entries()) == ["big", "big (2)"]


def test_a_failed_copy_leaves_nothing_behind(tmp_path, adapter, monkeypatch):
    from desktop_app_lora import library as library_module

    library = AdapterLibrary(tmp_path / "adapters")

    def full_disk(source, target):
        Path(target).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(library_module.shutil, "copyfile", full_disk)
    with pytest.raises(OSError):
        library.add(adapter, name="big")
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "adapters").iterdir() if p.name != "index.json"] == []
    assert library.add(adapter, name="big").name == "big"  # the name was not kept reserved


def test_a_failed_move_puts_the_only_copy_back(tmp_path, adapter, monkeypatch):
    import shutil

    trained = tmp_path / "trained.gguf"
    shutil.copyfile(adapter, trained)
    library = AdapterLibrary(tmp_path / "adapters")

    def refuse(self, target):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(OSError):
        library.add(trained, name="trained", move=True)
    monkeypatch.undo()
    assert trained.read_bytes() == adapter.read_bytes()  # hours of training are not lost
    assert [p.name for p in (tmp_path / "adapters").iterdir() if p.name != "index.json"] == []


def test_a_name_being_copied_in_cannot_be_taken_by_a_rename(tmp_path, adapter):
    library = AdapterLibrary(tmp_path / "adapters")
    library.add(adapter, name="style")
    library._pending["big"] = tmp_path / "adapters" / "big.gguf"  # a copy in progress
    with pytest.raises(AdapterError, match="already is an adapter called 'big'"):
        library.rename("style", "big")


def test_library_refuses_a_bad_file_and_changes_nothing(tmp_path):
    library = AdapterLibrary(tmp_path / "adapters")
    bad = tmp_path / "bad.gguf"
    bad.write_text("nope")
    with pytest.raises(AdapterError):
        library.add(bad)
    assert library.entries() == [] and sorted(p.name for p in (tmp_path / "adapters").iterdir()) == []


def test_library_survives_a_damaged_index_and_finds_dropped_files(tmp_path, adapter):
    folder = tmp_path / "adapters"
    library = AdapterLibrary(folder)
    library.add(adapter, name="kept")
    (folder / "index.json").write_text("{ not json")
    (folder / "dropped.gguf").write_bytes(adapter.read_bytes())
    (folder / "junk.gguf").write_text("not an adapter")  # left alone, never deleted
    reopened = AdapterLibrary(folder)
    assert sorted(e.name for e in reopened.entries()) == ["dropped", "kept"]
    assert list(folder.glob("index.json.corrupt-*")) and (folder / "junk.gguf").exists()


def test_library_forgets_entries_whose_file_vanished(tmp_path, adapter):
    library = AdapterLibrary(tmp_path / "adapters")
    entry = library.add(adapter, name="gone")
    library.path(entry).unlink()
    assert AdapterLibrary(tmp_path / "adapters").entries() == []


def test_unknown_names_list_what_exists(tmp_path, adapter):
    library = AdapterLibrary(tmp_path / "adapters")
    library.add(adapter, name="one")
    with pytest.raises(AdapterError, match="no adapter called 'two'. Adapters: one"):
        library.get("two")


def test_scales_are_kept_within_range():
    assert Choice.parse({"name": "a", "scale": 7}).scale == 2.0
    assert Choice.parse({"name": "a", "scale": -1}).scale == 0.0
    assert Choice.parse({"name": "a"}).scale == 1.0
    assert Choice.parse({"scale": 1}) is None and Choice.parse("x") is None


# -- training data -------------------------------------------------------------------------
def test_jsonl_in_both_formats(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
        + "\n\n" + json.dumps({"prompt": "2+2?", "completion": "4"}) + "\n")
    chats = load_jsonl(path)
    assert chats[1] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    with_system = with_system_prompt(chats, "Be brief.")
    assert with_system[0][0] == {"role": "system", "content": "Be brief."} and len(chats[0]) == 2


@pytest.mark.parametrize("line, reason", [
    ("{oops", "line 2: not valid JSON"),
    ('{"text": "hi"}', 'line 2: expected {"messages"'),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "line 2: the role 'robot'"),
    ('{"messages": [{"role": "user", "content": "only a question"}]}', "line 2: the example has no assistant answer"),
    ('{"prompt": 1, "completion": "x"}', 'line 2: "prompt" and "completion" must be text'),
])
def test_bad_jsonl_names_the_line(tmp_path, line, reason):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "fine", "completion": "yes"}\n' + line + "\n")
    with pytest.raises(DataError, match=reason):
        load_jsonl(path)


def test_empty_or_missing_training_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no examples"):
        load_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")


# -- adapters other plugins provide (register_adapters) ------------------------------------
def test_adapters_from_other_plugins_are_listed_and_used_in_place(paths, adapter, tmp_path):
    import types

    from desktop_app.api import Adapter, hookimpl
    from desktop_app.context import build_context
    from desktop_app.plugins import PluginHost
    from desktop_app_lora import state

    broken = tmp_path / "broken.gguf"
    broken.write_text("no")

    @hookimpl
    def register_adapters(register):
        register(Adapter("house style", str(adapter)))
        register(Adapter("broken", str(broken)))

    host = PluginHost().load_all()
    host.register(types.SimpleNamespace(register_adapters=register_adapters), name="styles")
    context = build_context(paths, host=host)
    try:
        entry = state.library.get("house style")
        assert entry.plugin == "styles" and entry.source == "from the plugin styles"
        assert state.library.path(entry) == adapter.resolve() and adapter.exists()
        assert state.fits("house style", default_model_path()) is None
        with pytest.raises(AdapterError, match="comes from the plugin styles"):
            state.library.remove("house style")
        assert state.library.find("broken") is None
        assert any("offers the LoRA adapter “broken”" in n for n in state.notices)
        # Not saved: the plugin offers it again at the next start.
        index = json.loads((paths.data_dir / "adapters" / "index.json").read_text()) \
            if (paths.data_dir / "adapters" / "index.json").exists() else {"adapters": []}
        assert index["adapters"] == []
    finally:
        context.close()


def test_one_odd_entry_costs_only_itself(tmp_path, adapter):
    import json

    folder = tmp_path / "adapters"
    AdapterLibrary(folder).add(adapter, name="kept")
    index = json.loads((folder / "index.json").read_text())
    index["adapters"][0]["added_by_a_newer_version"] = True
    index["adapters"].append({"name": "broken"})
    (folder / "index.json").write_text(json.dumps(index))
    assert [e.name for e in AdapterLibrary(folder).entries()] == ["kept"]
    assert not list(folder.glob("index.json.corrupt-*"))


def test_two_open_libraries_keep_each_others_adapters(tmp_path, adapter):
    folder = tmp_path / "adapters"
    window = AdapterLibrary(folder)
    window.entries()
    AdapterLibrary(folder).add(adapter, name="from the command line")
    window.add(adapter, name="from the window")
    assert sorted(e.name for e in AdapterLibrary(folder).entries()) == ["from the command line", "from the window"]
    window.remove("from the window")
    assert [e.name for e in AdapterLibrary(folder).entries()] == ["from the command line"]
