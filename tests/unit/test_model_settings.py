"""Each library model's own settings: which value wins, how they are checked and kept, and the CLI."""

from __future__ import annotations

import json

import pytest

from desktop_app.cli import main
from desktop_app.core.chat import ChatService
from desktop_app.core.errors import ModelFileError
from desktop_app.core.memory_fit import AUTO_CONTEXT, AUTO_GPU_LAYERS
from desktop_app.core.model_settings import (read_model_settings, resolve_model_settings, stored_settings,
                                             validate_model_settings)
from desktop_app.core.models import DEFAULT_MODEL_NAME, DEFAULT_MODEL_SYSTEM_PROMPT, ModelLibrary, default_model_path
from desktop_app.core.settings import Settings, SettingsError
from desktop_app.core.store import Store
from desktop_app.testing import FakeEngine


@pytest.fixture
def settings(paths):
    return Settings.load(paths.settings_file)


@pytest.fixture
def context(paths):
    from desktop_app.context import build_context
    from desktop_app.plugins import PluginHost

    host = PluginHost(default_plugins=(), entry_points=lambda: [])
    host.load_all()
    ctx = build_context(paths, host=host, engine=FakeEngine().enqueue("One.", "Two.", "Three."))
    ctx.models.add(default_model_path(), name="Precise")
    yield ctx
    ctx.close()


def test_the_models_own_setting_beats_the_global_one_which_beats_the_files_recommendation(settings):
    recommended = {"temperature": 0.6, "top_k": 20, "top_p": 0.8}
    settings.set("generation.top_k", 50)
    settings.set("generation.top_p", 0.9)
    resolved = resolve_model_settings(settings, {"top_p": 0.5}, recommended)
    assert (resolved["top_p"].value, resolved["top_p"].source) == (0.5, "model")
    assert (resolved["top_k"].value, resolved["top_k"].source) == (50, "global")
    assert (resolved["temperature"].value, resolved["temperature"].source) == (0.6, "file")
    assert (resolved["min_p"].value, resolved["min_p"].source) == (0.05, "default")
    assert (resolved["context_length"].value, resolved["gpu_layers"].value) == (AUTO_CONTEXT, AUTO_GPU_LAYERS)
    assert resolved["temperature"].source_text == "recommended by the model's file"


def test_the_built_in_models_preset_and_prompt_are_its_defaults(settings):
    resolved = resolve_model_settings(settings, {}, {"temperature": 0.0}, builtin=True,
                                      system_prompt=DEFAULT_MODEL_SYSTEM_PROMPT)
    assert (resolved["temperature"].value, resolved["temperature"].source) == (0.0, "builtin")
    assert resolved["system_prompt"].value == DEFAULT_MODEL_SYSTEM_PROMPT
    settings.set("chat.system_prompt", "Be brief.")
    assert resolve_model_settings(settings, {}, builtin=True, system_prompt="x")["system_prompt"].value == "Be brief."


def test_values_are_checked_with_the_global_rules_and_named_by_the_models_key(settings):
    assert validate_model_settings(settings, {"temperature": "0.3", "generation.top_k": "7", "context_length": "auto",
                                              "system_prompt": "  "}) == \
        {"temperature": 0.3, "top_k": 7, "context_length": AUTO_CONTEXT}
    with pytest.raises(SettingsError, match=r"^top_p must be at most 1\.0$"):
        validate_model_settings(settings, {"top_p": 1.5})
    with pytest.raises(SettingsError, match=r"context_length must be at least 256 \(or auto\)"):
        validate_model_settings(settings, {"context_length": 100})
    with pytest.raises(SettingsError, match="no setting called 'colour'.*temperature"):
        validate_model_settings(settings, {"colour": 1})
    assert stored_settings(settings, {"gpu_layers": -1, "context_length": 0, "top_k": 7}) == \
        {"gpu_layers": "all", "context_length": "auto", "top_k": 7}


def test_a_hand_edited_bad_value_is_skipped_and_the_others_still_apply(settings, caplog):
    own = read_model_settings(settings, {"temperature": "hot", "top_k": 9, "gpu_layers": "all"}, "Precise")
    assert own == {"top_k": 9, "gpu_layers": -1}
    assert "temperature" in caplog.text


def test_the_library_keeps_each_models_settings_and_the_built_in_ones(paths):
    library = ModelLibrary(paths)
    library.add(default_model_path(), name="Precise")
    library.set_settings("Precise", {"temperature": 0.2})
    library.set_settings(DEFAULT_MODEL_NAME, {"top_k": 5})
    again = ModelLibrary(paths)
    assert again.find("Precise").settings == {"temperature": 0.2}
    assert again.find(DEFAULT_MODEL_NAME).settings == {"top_k": 5}
    # A file is found as its first library entry: the built-in one here.
    assert again.find(str(default_model_path())).builtin
    again.set_settings("Precise", None)
    assert ModelLibrary(paths).find("Precise").settings is None
    with pytest.raises(ModelFileError, match="nowhere to keep settings.*add it first"):
        again.set_settings("Elsewhere", {"top_k": 1})


def test_turns_use_the_loaded_models_own_sampling_and_system_prompt(paths):
    engine = FakeEngine().enqueue("One.", "Two.", "Three.")
    engine.recommended_sampling = lambda: {"temperature": 0.0, "repeat_penalty": 1.1}
    store = Store(paths.database_file)
    chat = ChatService(store, engine, Settings.load(paths.settings_file))
    own = {"top_k": 7, "max_tokens": 12, "system_prompt": "Answer in one word."}
    chat.model_settings = lambda: dict(own)
    conversation = store.create_conversation()
    chat.send(conversation.id, "Hi")
    asked = engine.history[-1]
    assert (asked.options.top_k, asked.options.max_tokens, asked.options.temperature) == (7, 12, 0.0)
    assert asked.messages[0].content == "Answer in one word."
    # The model's own greedy choice is the user's: regenerate keeps it.
    own["temperature"] = 0.0
    chat.regenerate(conversation.id)
    assert engine.history[-1].options.temperature == 0.0 and engine.history[-1].options.top_k == 7
    # A conversation's own system prompt still comes first.
    other = store.create_conversation(system_prompt="Speak French.")
    chat.send(other.id, "Hi")
    assert engine.history[-1].messages[0].content == "Speak French."
    store.close()


def test_loading_uses_the_models_own_context_and_gpu_layers_and_remembers_which_entry(context):
    context.models.set_settings("Precise", {"context_length": 1024, "gpu_layers": 0, "top_k": 3})
    assert (context.load_config("Precise").context_length, context.load_config("Precise").gpu_layers) == (1024, 0)
    assert context.load_config(None).context_length == AUTO_CONTEXT  # the built-in model: auto
    context.settings.set("model.context_length", 2048)
    assert context.load_config(None).context_length == 2048 and context.load_config("Precise").context_length == 1024
    # Both entries are the same file: the one picked is the one whose settings apply.
    context.load_model("Precise")
    assert context.loaded_model_name == "Precise" and context.chat.default_options().top_k == 3
    context.load_model(DEFAULT_MODEL_NAME)
    assert context.loaded_model_name == DEFAULT_MODEL_NAME and context.chat.default_options().top_k == 40
    assert [e["name"] for e in context.library() if e["loaded"]] == [DEFAULT_MODEL_NAME]


def test_a_file_outside_the_library_has_no_settings_of_its_own(context, tmp_path):
    import shutil

    outside = tmp_path / "elsewhere.gguf"
    shutil.copyfile(default_model_path(), outside)
    entry = context.model_entry(str(outside))
    assert not context.in_library(entry) and context.model_settings(entry) == {}
    context.load_model(str(outside))
    assert context.loaded_model_name is None and context.loaded_model_settings() == {}


def test_cli_models_set_info_and_reset(capsys, paths):
    assert main(["models", "add", str(default_model_path()), "--name", "Precise"]) == 0
    assert main(["models", "set", "Precise", "temperature", "0.3"]) == 0
    assert main(["models", "set", "Precise", "context_length", "2048"]) == 0
    assert main(["models", "set", "Precise", "gpu_layers", "all"]) == 0
    out = capsys.readouterr().out
    assert "Precise: temperature = 0.3 (used from its next answer)." in out
    assert "Precise: context_length = 2048 (used the next time it is loaded)." in out
    stored = json.loads(paths.models_file.read_text())["models"][0]["settings"]
    assert stored == {"temperature": 0.3, "context_length": 2048, "gpu_layers": "all"}

    assert main(["models", "info", "Precise"]) == 0
    out = capsys.readouterr().out
    assert "When loaded: Context 2,048 tokens (your setting)" in out
    assert "temperature     0.3  (this model's setting)" in out
    assert "top_k           40  (the default)" in out
    assert "repeat_penalty  1.1  (the built-in model's preset)" in out

    assert main(["models", "set", "Precise", "top_p", "2"]) == 1
    assert "parley: top_p must be at most 1.0" in capsys.readouterr().err
    assert main(["models", "set", "Precise", "colour", "red"]) == 1
    assert "no setting called 'colour'" in capsys.readouterr().err
    assert json.loads(paths.models_file.read_text())["models"][0]["settings"] == stored  # nothing lost

    assert main(["models", "reset", "Precise", "temperature"]) == 0
    assert "temperature" not in json.loads(paths.models_file.read_text())["models"][0]["settings"]
    assert main(["models", "reset", "Precise"]) == 0
    assert json.loads(paths.models_file.read_text())["models"][0]["settings"] is None


def test_cli_refuses_settings_for_a_file_outside_the_library(capsys, tmp_path):
    import shutil

    outside = tmp_path / "elsewhere.gguf"
    shutil.copyfile(default_model_path(), outside)
    assert main(["models", "set", str(outside), "top_k", "3"]) == 1
    assert "not in the library" in capsys.readouterr().err
    assert main(["models", "info", str(outside)]) == 0
    out = capsys.readouterr().out
    assert "When loaded: Context" in out and "cannot keep settings of its own" in out
    if "gpu offload supported  False" in out:
        assert "CPU only: this build of llama.cpp has no GPU support." in out


def test_the_adapters_on_the_current_model_count_in_the_next_loads_fit(context, tmp_path):
    adapter = tmp_path / "style.gguf"
    context.engine.active_adapters = [(adapter, 0.8)]  # what the engine reports once the LoRA plugin applied one
    assert context.load_config("Precise").adapters == (str(adapter),)
