"""`parley lora …` and `parley chat --lora`, run in-process like the other command-line tests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from desktop_app.cli import main
from desktop_app.core.models import default_model_path
from desktop_app_lora.convert import convert_peft_adapter
from lora_test_files import make_adapter_gguf, make_peft


@pytest.fixture
def files(tmp_path):
    convert_peft_adapter(make_peft(tmp_path / "peft", seed=2, std=0.03), tmp_path / "style.gguf",
                         default_model_path())
    make_adapter_gguf(tmp_path / "big.gguf", n_embd=4096, layers=2)
    return tmp_path


def test_importing_the_plugin_and_its_commands_loads_no_heavy_library():
    code = ("import sys, desktop_app_lora, desktop_app_lora.cli, desktop_app_lora.train, desktop_app_lora.library\n"
            "print([m for m in ('torch', 'transformers', 'peft', 'PySide6') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_add_list_info_and_remove(files, capsys):
    assert main(["lora", "list"]) == 0
    assert "No adapters yet" in capsys.readouterr().out
    assert main(["lora", "add", str(files / "style.gguf"), "--name", "style"]) == 0
    assert main(["lora", "add", str(files / "big.gguf")]) == 0
    capsys.readouterr()
    assert main(["lora", "list"]) == 0
    out = capsys.readouterr().out
    assert "style\trank 8, alpha 16, attn_k,attn_output,attn_q,attn_v\t" in out
    assert "fits SmolLM2-135M-Instruct.Q4_1.gguf" in out
    assert "big\trank 4, alpha 8, attn_q,attn_v\t" in out and "does not fit SmolLM2" in out
    assert main(["lora", "info", "big"]) == 0
    out = capsys.readouterr().out
    assert "embedding length  4096" in out and "fits              no: big.gguf was made for a model with " \
                                                 "embedding size 4096" in out
    assert main(["lora", "info", str(files / "style.gguf")]) == 0  # a file outside the library
    assert "fits              yes" in capsys.readouterr().out
    assert main(["lora", "info", "nothing"]) == 1
    assert "There is no adapter called 'nothing'. Adapters: style, big." in capsys.readouterr().err
    assert main(["lora", "remove", "big"]) == 0
    assert main(["lora", "remove", "big"]) == 1
    assert "There is no adapter called 'big'. Adapters: style." in capsys.readouterr().err


def test_bad_files_are_refused_with_a_message(files, tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    assert main(["lora", "add", str(bad)]) == 1
    assert "bad.gguf cannot be used as a LoRA adapter" in capsys.readouterr().err
    assert main(["lora", "add", str(tmp_path / "peft")]) == 1
    assert "is a PEFT adapter folder; convert it to GGUF first" in capsys.readouterr().err


def test_apply_checks_the_model_and_remembers_per_conversation(files, capsys):
    main(["lora", "add", str(files / "style.gguf"), "--name", "style"])
    main(["lora", "add", str(files / "big.gguf"), "--name", "big"])
    capsys.readouterr()
    assert main(["lora", "apply", "big"]) == 1
    assert "embedding size 4096" in capsys.readouterr().err
    assert main(["lora", "apply", "style=0.7"]) == 0
    assert "New conversations now use style ×0.7." in capsys.readouterr().out
    assert main(["lora", "list"]) == 0
    assert "*0.7 style" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["lora", "apply", "style=3"])
    assert exit_.value.code == 2 and "the scale must be from 0 to 2" in capsys.readouterr().err
    # A chat in a new conversation starts with them and remembers them.
    assert main(["chat", "--max-tokens", "4", "Hi"]) == 0
    capsys.readouterr()
    from desktop_app.core.paths import AppPaths
    from desktop_app.core.store import Store

    store = Store(AppPaths.default().database_file)
    conversation = store.list_conversations()[0]
    assert conversation.meta["lora"] == {"adapters": [{"name": "style", "scale": 0.7}]}
    trace = store.get_trace(store.history(conversation.id)[-1].id)
    assert [e["content"]["scale"] for e in trace["entries"] if e["kind"] == "adapter"] == [0.7]
    store.close()
    assert main(["lora", "apply", "-c", str(conversation.id), "--none"]) == 0
    assert f"Conversation {conversation.id} now uses no adapters." in capsys.readouterr().out
    assert main(["lora", "apply", "-c", "999", "style"]) == 1


def test_chat_takes_adapters_for_one_conversation(files, capsys):
    main(["lora", "add", str(files / "style.gguf"), "--name", "style"])
    assert main(["chat", "--max-tokens", "4", "--lora", "style=1.5", "Hi"]) == 0
    from desktop_app.core.paths import AppPaths
    from desktop_app.core.store import Store

    store = Store(AppPaths.default().database_file)
    conversation = store.list_conversations()[0]
    assert conversation.meta["lora"] == {"adapters": [{"name": "style", "scale": 1.5}]}
    store.close()
    with pytest.raises(SystemExit):
        main(["chat", "--lora", "style=x", "Hi"])
    assert "the scale after '=' must be a number" in capsys.readouterr().err


def test_convert_adds_or_writes_and_refuses_with_a_reason(tmp_path, capsys):
    folder = make_peft(tmp_path / "peft", rank=4, layers=3, modules=("q_proj", "down_proj"))
    assert main(["lora", "convert", str(folder), "--name", "converted"]) == 0
    assert "Added converted: llama · rank 4 · alpha 16 · attn_q, ffn_down" in capsys.readouterr().out
    out = tmp_path / "out.gguf"
    assert main(["lora", "convert", str(folder), "-o", str(out), "--outtype", "f32"]) == 0
    assert out.exists() and "F32" in json.dumps(__import__("desktop_app_lora.adapters", fromlist=["x"])
                                                 .read_adapter_info(out).summary())
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "use_dora": True}))
    assert main(["lora", "convert", str(folder)]) == 1
    assert "DoRA" in capsys.readouterr().err


def test_train_refuses_bad_input_before_loading_anything(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert main(["lora", "train", "--data", str(data), "--name", "x"]) == 1
    assert "line 1: the example has no assistant answer" in capsys.readouterr().err
    data.write_text('{"prompt": "hi", "completion": "hello"}\n')
    assert main(["lora", "train", "--data", str(data), "--name", "x", "--targets", "c_attn"]) == 1
    assert "Unknown target module(s) c_attn" in capsys.readouterr().err
    assert main(["lora", "train", "--data", str(data), "--name", "x", "--rank", "0"]) == 1
    assert "rank must be between 1 and 256" in capsys.readouterr().err
    assert main(["lora", "train", "--conversation", "42", "--name", "x"]) == 1
    assert "conversation" in capsys.readouterr().err.lower()
