"""The call grammars, checked by llama.cpp itself: whatever the model samples is valid JSON
that passes the tool's own argument checks."""

import json

from desktop_app.api import Tool
from desktop_app.core.tool_protocol import NativeProtocol, PromptProtocol
from desktop_app.core.tools import validate_arguments
from desktop_app.core.turn import ChatMessage, GenerationOptions

from .grammar_check import grammar_admits

AWKWARD = Tool(
    "awkward",
    "A tool with every kind of argument.",
    {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "mode": {"enum": ["fast", "slow"]},
            "code": {"type": "string", "pattern": "^[A-Z0-9-]{2,6}$"},
            "path": {"type": "string", "pattern": "^[^/]+$"},  # not enforceable: a plain string
            "tags": {"type": "array", "items": {"type": "string"}},
            "opt0": {"type": "object", "properties": {"x": {"type": "boolean"}}},
            "anything": True,
        },
        "required": ["count", "ratio", "mode", "code"],
    },
    lambda **kwargs: "ok",
)


def test_sampled_calls_are_always_valid_json_that_passes_the_checks(engine):
    protocol = PromptProtocol([AWKWARD])
    grammar = protocol.grammar(required=True)
    messages = [ChatMessage("system", protocol.system_text()), ChatMessage("user", "Use the tool.")]
    for seed in range(6):
        # Hot, random sampling explores the grammar far more than a model's usual choices.
        options = GenerationOptions(temperature=1.8, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                    max_tokens=160, seed=seed, grammar=grammar)
        events = list(engine.stream_chat(messages, options))
        done = events[-1]
        assert type(done).__name__ == "DoneEvent", done
        if done.finish_reason == "length":
            continue  # a call cut by the token limit is unfinished, not wrong
        (call,) = protocol.parse_calls(done.text)
        assert call.name == "awkward"
        checked = validate_arguments(AWKWARD, call.arguments)
        assert isinstance(checked["count"], int) and checked["mode"] in ("fast", "slow")
        assert 2 <= len(checked["code"]) <= 6
        json.loads(done.text)


def test_auto_mode_drops_the_grammar_for_text_and_keeps_it_for_calls(engine):
    protocol = PromptProtocol([AWKWARD])
    messages = [ChatMessage("user", "Say hello.")]
    grammar = protocol.grammar(required=False)
    text_run = list(engine.stream_chat(messages, GenerationOptions(
        temperature=0, max_tokens=24, grammar=grammar, grammar_trigger=protocol.trigger)))[-1]
    assert text_run.text and not text_run.text.lstrip().startswith("{")
    assert text_run.stats.tokens_per_second > 0


def test_native_replies_with_several_calls_are_valid_too(engine):
    protocol = NativeProtocol([AWKWARD], "{% if tools %}<tool_call>{% endif %}")
    grammar = protocol.grammar(required=True)
    messages = [ChatMessage("user", "Use the tool three times.")]
    for seed in range(3):
        options = GenerationOptions(temperature=1.8, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                    max_tokens=240, seed=seed, grammar=grammar)
        done = list(engine.stream_chat(messages, options))[-1]
        assert type(done).__name__ == "DoneEvent", done
        if done.finish_reason == "length":
            continue
        calls = protocol.parse_calls(done.text)
        assert 1 <= len(calls) <= 8 and done.text.count("<tool_call>") == len(calls)
        for call in calls:
            assert call.name == "awkward"
            validate_arguments(AWKWARD, call.arguments)


def test_the_native_grammar_allows_up_to_eight_calls_in_one_reply(engine):
    """What the grammar allows, checked by llama.cpp's grammar sampler, not left to sampling luck."""
    protocol = NativeProtocol([AWKWARD], "{% if tools %}<tool_call>{% endif %}")
    grammar = protocol.grammar(required=True)
    # One call, written as the grammar lays it out.
    arguments = {"count": 3, "ratio": 0.5, "mode": "fast", "code": "AB-12"}
    block = "<tool_call>\n" + json.dumps({"name": "awkward", "arguments": arguments}) + "\n</tool_call>"
    for n in (1, 2, 8):
        assert grammar_admits(engine, grammar, "\n".join([block] * n)), f"{n} calls refused"
        assert len(protocol.parse_calls("\n".join([block] * n))) == n
    assert not grammar_admits(engine, grammar, "\n".join([block] * 9)), "more than 8 calls allowed"
    assert not grammar_admits(engine, grammar, block + "\nand some text"), "text after the calls allowed"
    assert not grammar_admits(engine, grammar, block.replace('"awkward"', '"unknown"')), "an unknown tool allowed"
