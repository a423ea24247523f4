"""Adapter files llama.cpp would crash on are refused with a reason, by the plugin and by the
engine itself (another plugin may hand the engine any file)."""

from pathlib import Path

import gguf
import numpy as np
import pytest

from desktop_app.api import EngineError
from desktop_app.core.engine import Engine, LoadConfig
from desktop_app.core.models import default_model_path
from desktop_app_lora.adapters import AdapterError, read_adapter_info


@pytest.fixture(scope="module")
def engine():
    e = Engine()
    e.load(default_model_path(), LoadConfig(context_length=512, seed=1))
    yield e
    e.unload()


def _adapter(path: Path, *, alpha64: bool = False, dtype=np.float32, kind: str = "adapter") -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(kind)
    writer.add_string("adapter.type", "lora")
    if alpha64:
        writer.add_float64("adapter.lora.alpha", 8.0)
    else:
        writer.add_float32("adapter.lora.alpha", 8.0)
    rng = np.random.default_rng(1)
    writer.add_tensor("blk.0.attn_v.weight.lora_a", rng.normal(0, .01, (4, 576)).astype(dtype))
    writer.add_tensor("blk.0.attn_v.weight.lora_b", rng.normal(0, .01, (192, 4)).astype(dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("kwargs, reason", [
    ({"alpha64": True}, "32-bit float"),
    ({"dtype": np.float64}, "type F64"),
    ({"kind": "model"}, "not a LoRA adapter"),
])
def test_files_llama_cpp_cannot_take_are_refused_not_crashed_on(tmp_path, engine, kwargs, reason):
    path = _adapter(tmp_path / "bad.gguf", **kwargs)
    with pytest.raises(AdapterError, match=reason):
        read_adapter_info(path)
    with pytest.raises(EngineError, match=reason):
        engine.set_adapters([(path, 1.0)])
    assert engine.active_adapters == []
    # The model goes on answering.
    from desktop_app.api import ChatMessage, GenerationOptions

    done = list(engine.stream_chat([ChatMessage("user", "Hi")], GenerationOptions(temperature=0, max_tokens=4)))[-1]
    assert done.text


def test_a_well_formed_adapter_of_the_same_shape_is_accepted(tmp_path, engine):
    path = _adapter(tmp_path / "good.gguf")
    assert read_adapter_info(path).alpha == 8.0
    assert engine.set_adapters([(path, 1.0)]) is True
    engine.set_adapters([])
