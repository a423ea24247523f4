"""The server driven by the official openai client over real HTTP, with the real built-in model.

Greedy decoding, grammars and tool_choice="required" keep every assertion about structure,
never about what the model happens to say.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.model

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def test_models_lists_the_loaded_model_first(client, model_name):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids[0] == model_name
    assert all(m.object == "model" and m.owned_by == "parley" for m in models.data)
    assert client.models.retrieve(model_name).id == model_name


def test_a_chat_completion_has_openais_shape(client, model_name):
    reply = client.chat.completions.create(
        model=model_name, messages=[SYSTEM, {"role": "user", "content": "Say hello."}],
        temperature=0, max_tokens=12, seed=1)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion" and reply.model == model_name
    assert reply.created > 0
    choice = reply.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_max_tokens_ends_the_answer_with_finish_reason_length(client, model_name):
    reply = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=3, extra_body={"grammar": 'root ::= "word " root'})
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_a_streamed_chat_arrives_in_chunks_that_add_up_to_the_answer(client, model_name):
    messages = [SYSTEM, {"role": "user", "content": "Name three colours."}]
    whole = client.chat.completions.create(model=model_name, messages=messages, temperature=0, max_tokens=20)
    stream = client.chat.completions.create(model=model_name, messages=messages, temperature=0, max_tokens=20,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: the same answer either way
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_n_gives_that_many_choices(client, model_name):
    reply = client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "Hi"}],
                                           n=2, max_tokens=4, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content == reply.choices[1].message.content  # greedy


def test_json_schema_is_enforced(client, model_name):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=model_name, temperature=0, max_tokens=60,
        messages=[SYSTEM, {"role": "user", "content": "Make up a person: their name and age."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    data = json.loads(reply.choices[0].message.content)
    assert set(data) == {"name", "age"} and isinstance(data["name"], str) and isinstance(data["age"], int)


def test_json_object_gives_a_json_object(client, model_name):
    reply = client.chat.completions.create(
        model=model_name, temperature=0, max_tokens=120, response_format={"type": "json_object"},
        messages=[SYSTEM, {"role": "user", "content": "Describe a cat as JSON."}])
    content = reply.choices[0].message.content
    assert content.lstrip().startswith("{")
    if reply.choices[0].finish_reason == "stop":  # a cut-off answer cannot be whole JSON
        assert isinstance(json.loads(content), dict)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_a_tool_call_round_trip(client, model_name):
    messages = [SYSTEM, {"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model_name, messages=messages, tools=[WEATHER],
                                           tool_choice="required", temperature=0, max_tokens=80)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments.get("city"), str)
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 °C."}]
    second = client.chat.completions.create(model=model_name, messages=messages, tools=[WEATHER],
                                            tool_choice="none", temperature=0, max_tokens=40)
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


def test_a_streamed_tool_call_comes_as_deltas(client, model_name):
    stream = client.chat.completions.create(
        model=model_name, messages=[SYSTEM, {"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, temperature=0, max_tokens=80,
        stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert isinstance(json.loads(calls[0]["arguments"]), dict)


def test_text_completions(client, model_name):
    reply = client.completions.create(model=model_name, prompt="Say hi.", max_tokens=5, temperature=0)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.choices[0].text and reply.choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model_name, prompt="Say hi.", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == reply.choices[0].text


def test_embeddings(client):
    reply = client.embeddings.create(model="all-MiniLM-L6-v2", input=["a cat", "a kitten", "a tax form"])
    assert reply.object == "list" and [d.index for d in reply.data] == [0, 1, 2]
    vectors = [d.embedding for d in reply.data]
    assert all(len(v) == 384 for v in vectors)

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b)) / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    as_floats = client.embeddings.create(model="all-MiniLM-L6-v2", input="a cat", encoding_format="float")
    assert as_floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-5)


def test_anthropic_messages(http, model_name):
    reply = http.post("/v1/messages", json={"model": model_name, "max_tokens": 8,
                                            "messages": [{"role": "user", "content": "Hi"}]})
    assert reply.status_code == 200
    body = reply.json()
    assert body["type"] == "message" and body["role"] == "assistant" and body["id"].startswith("msg_")
    assert body["content"][0]["type"] == "text" and body["stop_reason"] in ("end_turn", "max_tokens")
    assert body["usage"]["output_tokens"] > 0


def test_a_streamed_n_gives_each_choice_its_own_deltas(client, model_name):
    chunks = list(client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Hi"}], n=2, max_tokens=3, stream=True,
        extra_body={"grammar": 'root ::= "la " root'}))
    texts, finishes = {0: "", 1: ""}, {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "length", 1: "length"}
    assert texts[0] == texts[1] and texts[0].startswith("la")
