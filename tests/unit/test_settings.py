import re

import pytest

from desktop_app.core.memory_fit import ALL_GPU_LAYERS, AUTO_CONTEXT, AUTO_GPU_LAYERS
from desktop_app.core.settings import CORE_OPTIONS, Option, Settings, SettingsError


def test_every_option_is_fully_declared():
    keys = set()
    for option in CORE_OPTIONS:
        assert "." in option.key and option.key not in keys
        keys.add(option.key)
        assert option.description.strip()
        assert option.coerce(option.default) == option.default


def test_defaults_without_a_file(paths):
    s = Settings.load(paths.settings_file)
    assert s.get("model.gpu_layers") == AUTO_GPU_LAYERS and s.get("model.context_length") == AUTO_CONTEXT
    assert s.get("model.threads") == 0
    assert s.warnings == []


def test_round_trip_writes_only_changed_values(paths):
    s = Settings.load(paths.settings_file)
    s.set("generation.temperature", "0.2")
    s.set("model.flash_attention", "yes")
    s.set("plugins.disabled", "a, b")
    s.save()
    text = paths.settings_file.read_text()
    assert "temperature = 0.2" in text and "top_p" not in text
    again = Settings.load(paths.settings_file)
    assert again.get("generation.temperature") == 0.2
    assert again.get("model.flash_attention") is True
    assert again.get("plugins.disabled") == ["a", "b"]


@pytest.mark.parametrize("key,value", [
    ("generation.top_p", 1.5), ("ui.theme", "purple"), ("model.context_length", "lots"),
    ("generation.max_tokens", 2.5), ("model.mmap", "maybe"),
])
def test_bad_values_are_refused_with_the_setting_named(paths, key, value):
    s = Settings.load(paths.settings_file)
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        s.set(key, value)


def test_unknown_setting_is_a_clear_error(paths):
    with pytest.raises(SettingsError, match="no setting"):
        Settings.load(paths.settings_file).get("nope.nothing")


def test_corrupt_file_is_backed_up_and_replaced_by_defaults(paths):
    paths.settings_file.write_text("[model\nthis is = = not toml")
    s = Settings.load(paths.settings_file)
    assert s.get("model.context_length") == AUTO_CONTEXT
    assert s.warnings and "could not be read" in s.warnings[0]
    backups = list(paths.config_dir.glob("settings.toml.corrupt-*"))
    assert len(backups) == 1 and "not toml" in backups[0].read_text()
    s.save()
    assert Settings.load(paths.settings_file).warnings == []


def test_an_invalid_value_in_the_file_falls_back_to_its_default(paths):
    paths.settings_file.write_text('[generation]\ntemperature = "hot"\ntop_k = 7\n')
    s = Settings.load(paths.settings_file)
    assert s.get("generation.temperature") == 0.7
    assert s.get("generation.top_k") == 7
    assert any("generation.temperature" in w for w in s.warnings)


def test_plugin_settings_live_under_the_plugin_and_survive_when_it_is_absent(paths):
    paths.settings_file.write_text('[plugins.docs]\nchunk_size = 800\n[plugins.other]\nkeep = true\n')
    s = Settings.load(paths.settings_file)
    s.register("docs", [Option("chunk_size", int, 500, "Characters per chunk.")])
    assert s.get("plugins.docs.chunk_size") == 800
    s.set("plugins.docs.chunk_size", 500)  # back to the default
    s.save()
    text = paths.settings_file.read_text()
    assert "chunk_size" not in text
    assert "keep = true" in text


def test_a_models_recommended_sampling_is_used_unless_the_user_changed_it(paths):
    from desktop_app.core.chat import options_from_settings
    from desktop_app.core.models import recommended_sampling

    metadata = {"general.sampling.temp": 0.6, "general.sampling.top_p": "0.8", "general.sampling.top_k": 20,
                "general.sampling.min_p": 7.0, "general.sampling.penalty_repeat": "lots"}
    # Out of range or not a number: left out, not trusted.
    assert recommended_sampling(metadata) == {"temperature": 0.6, "top_p": 0.8, "top_k": 20}
    s = Settings.load(paths.settings_file)
    options = options_from_settings(s, recommended_sampling(metadata))
    assert (options.temperature, options.top_p, options.top_k, options.min_p) == (0.6, 0.8, 20, 0.05)
    s.set("generation.temperature", 1.1)
    s.set("generation.top_k", 40)  # set to its default: that is not a change
    options = options_from_settings(s, recommended_sampling(metadata))
    assert (options.temperature, options.top_k) == (1.1, 20)
    assert s.is_changed("generation.temperature") and not s.is_changed("generation.top_k")


def test_the_built_in_model_gets_its_measured_preset():
    from desktop_app.core.models import BUILTIN_MODEL_SAMPLING, default_model_path, recommended_sampling

    assert recommended_sampling({}, default_model_path()) == BUILTIN_MODEL_SAMPLING
    assert recommended_sampling({}, None) == {}


def test_context_and_gpu_layers_are_auto_by_default_and_read_as_words_in_the_file(paths):
    s = Settings.load(paths.settings_file)
    assert not s.is_changed("model.context_length") and not s.is_changed("model.gpu_layers")
    s.set("model.gpu_layers", "all")
    s.set("model.context_length", "8192")
    s.save()
    text = paths.settings_file.read_text()
    assert 'gpu_layers = "all"' in text and "context_length = 8192" in text
    again = Settings.load(paths.settings_file)
    assert again.get("model.gpu_layers") == ALL_GPU_LAYERS and again.get("model.context_length") == 8192
    again.set("model.context_length", "Auto")
    again.set("model.gpu_layers", " auto ")
    again.save()
    assert "context_length" not in paths.settings_file.read_text()  # back to the default: not written


def test_settings_files_of_earlier_versions_keep_their_numbers(paths):
    # Written by hand or by an earlier Parley: an explicit 4096 stays 4096, -1 still means all layers.
    paths.settings_file.write_text("[model]\ncontext_length = 4096\ngpu_layers = -1\n")
    s = Settings.load(paths.settings_file)
    assert (s.get("model.context_length"), s.get("model.gpu_layers")) == (4096, ALL_GPU_LAYERS)
    assert s.is_changed("model.context_length") and s.warnings == []
    paths.settings_file.write_text('[model]\ncontext_length = "auto"\ngpu_layers = "auto"\n')
    assert Settings.load(paths.settings_file).get("model.context_length") == AUTO_CONTEXT


@pytest.mark.parametrize("key,value,message", [
    ("model.context_length", 100, "at least 256 (or auto)"),
    ("model.context_length", "big", "must be an int or auto, not 'big'"),
    ("model.gpu_layers", -5, "at least 0 (or auto, all)"),
    ("model.gpu_layers", "most", "must be an int, auto or all, not 'most'"),
])
def test_a_bad_context_or_layer_count_says_what_it_may_be(paths, key, value, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.load(paths.settings_file).set(key, value)


def test_the_hub_endpoint_must_be_a_web_address(paths):
    from desktop_app.core.settings import Settings, SettingsError

    settings = Settings.load(paths.settings_file)
    settings.set("hub.endpoint", "https://hf-mirror.com")
    settings.set("hub.endpoint", "")  # empty: HF_ENDPOINT, else huggingface.co
    with pytest.raises(SettingsError, match="http:// or https:// address, or empty, not 'hf-mirror.com'"):
        settings.set("hub.endpoint", "hf-mirror.com")
    assert settings.get("hub.endpoint") == ""  # the refused value changed nothing
