"""How a rendered prompt goes to llama-server: without a BOS the server adds itself, and with the
lazy tool grammar's trigger escaped for llama.cpp's regular expressions."""

from __future__ import annotations

import re

from desktop_app.api import ChatTemplate, GenerationOptions


def loaded(server_bos: str):
    from desktop_app_remote.backend import _Loaded
    from desktop_app_remote.engines import EngineConfig

    return _Loaded("remote:box/m", EngineConfig("box", "http://box:8080", kind="llama-server"), "m",
                   ChatTemplate(None), 4096, {}, server_bos)


def test_a_bos_the_server_adds_itself_is_not_sent_twice():
    from desktop_app_remote.backend import RemoteBackend

    prompt = "<s>[INST] Hi [/INST]"
    assert RemoteBackend._as_sent(loaded("<s>"), prompt) == "[INST] Hi [/INST]"
    assert RemoteBackend._as_sent(loaded(""), prompt) == prompt  # a server that adds none gets it whole
    assert RemoteBackend._as_sent(loaded("<s>"), "[INST] Hi") == "[INST] Hi"


def test_the_tool_trigger_is_a_literal_in_the_lazy_grammar_pattern():
    from desktop_app_remote.backend import RemoteBackend

    backend = RemoteBackend(lambda: None)
    body = backend._raw_body("p", GenerationOptions(grammar='root ::= "x"', grammar_trigger='{"tool"'))
    assert body["grammar_lazy"] is True
    pattern = body["grammar_triggers"][0]["value"]
    assert body["grammar_triggers"][0]["type"] == 3  # the whole output so far must match
    assert re.fullmatch(pattern, '  {"tool": "calculator"') and not re.fullmatch(pattern, "Hello {\"tool\"")
    assert "grammar_lazy" not in backend._raw_body("p", GenerationOptions(grammar='root ::= "x"'))
