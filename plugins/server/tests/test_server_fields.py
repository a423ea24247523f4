"""OpenAI fields that change the answer are honoured or refused, never silently ignored:
``parallel_tool_calls``, ``logit_bias``, the penalties, and the fields this server cannot do."""

from __future__ import annotations

import json

import openai
import pytest

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def hermes_call(name, **arguments):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def test_parallel_tool_calls_false_gives_at_most_one_call(scripted):
    """A model whose template writes several calls per reply (scripted: two cities at once)."""
    server = scripted(native_tools=True)
    two = hermes_call("get_weather", city="Paris") + "\n" + hermes_call("get_weather", city="Oslo")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "Weather in Paris and Oslo?"}]

    server.engine.enqueue(two)
    both = client.chat.completions.create(model="scripted-model", messages=messages, tools=[WEATHER])
    assert [json.loads(c.function.arguments)["city"] for c in both.choices[0].message.tool_calls] == ["Paris", "Oslo"]
    assert 'block ("\\n" block){0,7}' in server.engine.history[-1].options.grammar

    server.engine.enqueue(two, "Let me look. " + two)  # the second: calls after text, which no grammar binds
    for stream in (False, True):
        reply = client.chat.completions.create(model="scripted-model", messages=messages, tools=[WEATHER],
                                               parallel_tool_calls=False, stream=stream)
        if stream:
            calls = {d.index: d for c in reply if c.choices for d in c.choices[0].delta.tool_calls or []}
            assert list(calls) == [0]
        else:
            calls = reply.choices[0].message.tool_calls
            assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}]
            assert reply.choices[0].finish_reason == "tool_calls"
        grammar = server.engine.history[-1].options.grammar
        assert "{0,7}" not in grammar and "root ::= [ \\t\\n]* (block | text)" in grammar  # one block at most


@pytest.fixture
def tokens(app_context):
    """(text -> token ids, token id -> its text) of the loaded model."""
    llm = app_context.engine._loaded.llm
    return (lambda text: llm.tokenize(text.encode(), add_bos=False, special=False),
            lambda token: llm.detokenize([token]).decode("utf-8", "replace"))


@pytest.mark.model
def test_logit_bias_bans_and_forces_tokens(client, model_name, tokens):
    tokenize, piece = tokens
    messages = [{"role": "user", "content": "Say something about the sea."}]
    plain = client.chat.completions.create(model=model_name, messages=messages, temperature=0, max_tokens=4)
    first = tokenize(plain.choices[0].message.content)[0]
    banned = client.chat.completions.create(model=model_name, messages=messages, temperature=0, max_tokens=4,
                                            logit_bias={str(first): -100})
    assert tokenize(banned.choices[0].message.content)[0] != first  # greedy took the next best
    forced = tokenize(" banana")[0]
    reply = client.chat.completions.create(model=model_name, messages=messages, temperature=0, max_tokens=3,
                                           logit_bias={str(forced): 100})
    assert reply.choices[0].message.content == piece(forced) * 3
    streamed = client.chat.completions.create(model=model_name, messages=messages, temperature=0.7, seed=3,
                                              max_tokens=3, logit_bias={str(forced): 100}, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == piece(forced) * 3


@pytest.mark.model
def test_a_logit_bias_that_cannot_apply_is_a_400_naming_it(client, model_name, server_context):
    messages = [{"role": "user", "content": "Hi"}]
    size = server_context.model.vocab_size
    for bias, wanted in (({"abc": 1}, "keys are token ids"), ({"5": 150}, "from -100 to 100"),
                         ({str(size): 1}, f"0 to {size - 1}")):
        with pytest.raises(openai.BadRequestError, match=wanted) as raised:
            client.chat.completions.create(model=model_name, messages=messages, max_tokens=2, logit_bias=bias)
        assert raised.value.param == "logit_bias"


@pytest.mark.model
def test_presence_and_frequency_penalties_change_the_answer(client, model_name):
    messages = [{"role": "user", "content": "Write a short poem about rain and more rain."}]

    def answer(**penalties):
        return client.chat.completions.create(model=model_name, messages=messages, temperature=0, max_tokens=32,
                                              **penalties).choices[0].message.content

    plain = answer()
    assert answer(frequency_penalty=2.0) != plain
    assert answer(presence_penalty=2.0) != plain
    assert answer(presence_penalty=0.0, frequency_penalty=0.0) == plain  # their defaults change nothing


@pytest.mark.model
@pytest.mark.parametrize("field, value, wanted", [
    ("functions", [{"name": "f", "parameters": {"type": "object"}}], "send them as tools"),
    ("function_call", "auto", "send them as tools"),
    ("modalities", ["text", "audio"], 'Only the "text" modality'),
    ("audio", {"voice": "alloy", "format": "wav"}, "text only"),
    ("reasoning_effort", "high", "no reasoning setting"),
    ("web_search_options", {}, "Web search is not supported"),
    ("logprobs", True, "token probabilities"),
])
def test_fields_that_would_change_the_answer_are_refused_not_ignored(client, model_name, field, value, wanted):
    with pytest.raises(openai.BadRequestError, match=wanted) as raised:
        client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "Hi"}],
                                       extra_body={field: value})
    assert raised.value.param == field and raised.value.code == "unsupported_parameter"


@pytest.mark.model
def test_fields_that_change_nothing_are_accepted(client, model_name):
    reply = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, user="me",
        extra_body={"store": False, "metadata": {"run": "1"}, "service_tier": "auto", "modalities": ["text"]})
    assert reply.choices[0].finish_reason in ("stop", "length")
