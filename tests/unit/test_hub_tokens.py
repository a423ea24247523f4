"""The hub's address (setting, HF_ENDPOINT, default) and the token kept for it in the keyring."""

import pytest

from desktop_app.core.hub import DEFAULT_ENDPOINT, Hub, HubError, hub_endpoint
from desktop_app.core.hub_tokens import KEYRING_SERVICE, forget_hub_token, hub_token, save_hub_token
from tests.memory_keyring import memory_keyring


@pytest.fixture(autouse=True)
def ring(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with memory_keyring() as ring:
        yield ring


def test_the_setting_wins_then_hf_endpoint_read_at_call_time_then_huggingface(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub_endpoint("") == DEFAULT_ENDPOINT
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example/")
    assert hub_endpoint("") == "https://hf-mirror.example"
    assert hub_endpoint("  http://127.0.0.1:8080/ ") == "http://127.0.0.1:8080"


def test_an_endpoint_that_is_not_a_web_address_is_refused_naming_where_it_came_from(monkeypatch):
    with pytest.raises(HubError, match="hub.endpoint setting must be an http:// or https:// address"):
        hub_endpoint("hf-mirror.example")
    monkeypatch.setenv("HF_ENDPOINT", "ftp://mirror")
    with pytest.raises(HubError, match="HF_ENDPOINT must be an http"):
        hub_endpoint("")


def test_a_token_is_kept_per_hub_in_the_keyring_and_forgotten(ring):
    save_hub_token("https://huggingface.co", " hf_abc \n")
    save_hub_token("http://127.0.0.1:8080", "hf_mirror")
    assert ring.secrets == {(KEYRING_SERVICE, "huggingface.co"): "hf_abc",
                            (KEYRING_SERVICE, "127.0.0.1:8080"): "hf_mirror"}
    assert hub_token("https://huggingface.co/") == "hf_abc"
    assert Hub("http://127.0.0.1:8080").token == "hf_mirror"
    assert Hub("http://127.0.0.1:9090").token is None  # another server never gets it
    assert forget_hub_token("https://huggingface.co") is True
    assert forget_hub_token("https://huggingface.co") is False
    assert hub_token("https://huggingface.co") is None


def test_hf_token_is_used_when_the_keyring_has_none(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert Hub("https://huggingface.co").token == "hf_env"
    save_hub_token("https://huggingface.co", "hf_ring")
    assert Hub("https://huggingface.co").token == "hf_ring"


@pytest.mark.parametrize("bad, message", [("", "empty"), ("hf abc", "without spaces")])
def test_a_bad_token_is_refused_and_nothing_saved(ring, bad, message):
    with pytest.raises(HubError, match=message):
        save_hub_token("https://huggingface.co", bad)
    assert ring.secrets == {}


def test_without_a_safe_keyring_the_token_is_refused_and_never_written_to_a_file(monkeypatch):
    import keyring
    from keyring.backends import null

    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(null.Keyring())
    try:
        with pytest.raises(HubError, match="no system keyring .* never writes tokens into files"):
            save_hub_token("https://huggingface.co", "hf_abc")
        assert hub_token("https://huggingface.co") is None
    finally:
        keyring.set_keyring(previous)
