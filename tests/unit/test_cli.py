"""The headless command line, run in-process (and once as a real process for --help)."""

import json
import subprocess
import sys

import pytest

from desktop_app.cli import main

HEAVY = ("llama_cpp", "torch", "chromadb", "sentence_transformers", "transformers", "peft",
         "PySide6", "numpy", "gguf", "jinja2")


def test_help_imports_no_heavy_library():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['parley', '--help']\n"
        "try:\n    runpy.run_module('desktop_app.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: parley" in out
    assert out.strip().splitlines()[-1] == "[]"


def test_models_list_and_info(capsys):
    assert main(["models", "list"]) == 0
    assert "* SmolLM2-135M-Instruct\tbuilt-in" in capsys.readouterr().out
    assert main(["models", "info"]) == 0
    out = capsys.readouterr().out
    assert "Q4_1" in out and "llama" in out and "gpu offload supported" in out


def test_models_add_refuses_a_bad_file_with_a_message(tmp_path, capsys):
    bad = tmp_path / "x.gguf"
    bad.write_text("this is a text file, not a model")
    assert main(["models", "add", str(bad)]) == 1
    assert "not a GGUF model" in capsys.readouterr().err


def test_plugins_disable_is_persisted(tmp_path, monkeypatch, paths, capsys):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (paths.plugins_dir / "hello.py").write_text("from desktop_app.api import hookimpl\n")
    assert main(["plugins", "list"]) == 0
    assert "hello\tplugins folder\tenabled" in capsys.readouterr().out
    assert main(["plugins", "disable", "hello"]) == 0
    assert "hello" in paths.settings_file.read_text()
    capsys.readouterr()
    assert main(["plugins", "list"]) == 0
    assert "hello\tplugins folder\tdisabled" in capsys.readouterr().out
    assert main(["plugins", "enable", "hello"]) == 0
    assert main(["plugins", "disable", "ghost"]) == 1
    assert "no plugin called 'ghost'" in capsys.readouterr().err


def test_a_plugin_can_add_a_subcommand(paths, monkeypatch, capsys):
    monkeypatch.delenv("PARLEY_LOAD_PLUGINS")
    (paths.plugins_dir / "greet.py").write_text(
        "from desktop_app.api import hookimpl\n"
        "@hookimpl\n"
        "def register_commands(subparsers):\n"
        "    p = subparsers.add_parser('greet')\n"
        "    p.add_argument('name')\n"
        "    p.set_defaults(handler=lambda args, context: print('hello', args.name))\n"
    )
    assert main(["greet", "Ada"]) == 0
    assert capsys.readouterr().out == "hello Ada\n"


def test_chat_then_continue_export_import_search(tmp_path, capsys, monkeypatch):
    assert main(["chat", "--temperature", "0", "--max-tokens", "20", "--stats", "What is the capital of France?"]) == 0
    captured = capsys.readouterr()
    assert "Paris" in captured.out
    assert "tokens/s" in captured.err and "conversation 1" in captured.err
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("And of Italy?\n"))
    assert main(["chat", "-c", "1", "--temperature", "0", "--max-tokens", "20"]) == 0
    capsys.readouterr()
    assert main(["conversations", "list"]) == 0
    assert "What is the capital of France?" in capsys.readouterr().out
    assert main(["conversations", "search", "Italy"]) == 0
    assert "[Italy]" in capsys.readouterr().out
    out_file = tmp_path / "c.json"
    assert main(["conversations", "export", "1", "--format", "json", "-o", str(out_file)]) == 0
    data = json.loads(out_file.read_text())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert main(["conversations", "import", str(out_file)]) == 0
    assert "Imported as conversation 2" in capsys.readouterr().out
    assert main(["conversations", "show", "2"]) == 0
    shown = capsys.readouterr().out
    assert "## You\n\nWhat is the capital of France?" in shown and "And of Italy?" in shown
    assert main(["conversations", "rename", "2", "Copy"]) == 0
    assert main(["conversations", "delete", "2"]) == 0
    assert main(["conversations", "show", "2"]) == 1
    assert "no conversation 2" in capsys.readouterr().err


def test_chat_with_a_corrupt_model_says_why(tmp_path, capsys):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    assert main(["chat", "--model", str(bad), "hi"]) == 1
    assert "damaged or incomplete" in capsys.readouterr().err


def test_import_of_a_non_json_file_says_why(tmp_path, capsys):
    f = tmp_path / "x.json"
    f.write_text("{not json")
    assert main(["conversations", "import", str(f)]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_without_a_display_the_app_explains_itself(capsys, monkeypatch):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    assert main([]) == 1
    assert "no display" in capsys.readouterr().err


def test_empty_stdin_question_is_an_error(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("  \n"))
    assert main(["chat"]) == 2
    assert "no question" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--version"]])
def test_version(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("parley ")


def test_a_corrupt_settings_file_is_reported(paths, capsys):
    paths.settings_file.write_text("[broken")
    assert main(["models", "list"]) == 0
    assert "could not be read" in capsys.readouterr().err
