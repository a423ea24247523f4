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
