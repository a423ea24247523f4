"""Anthropic's Messages API (``/v1/messages``) with tools, over raw HTTP (the ``anthropic``
package is not installed): ``tool_use`` and ``tool_result`` blocks, ``tool_choice``,
``stop_reason: "tool_use"`` and the streamed ``input_json_delta`` events, in Anthropic's format.

The real model is held to a call by ``tool_choice`` (the call grammar); what a model cannot be
made to write on demand (text before a call, two calls at once) comes from a scripted one.
"""

from __future__ import annotations

import json

import httpx
import pytest

WEATHER = {"name": "get_weather", "description": "The current weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SYSTEM = "You are a helpful assistant."


def events_of(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event name, data) of each Server-Sent Event; each event's name must be its data's type."""
    events = []
    for chunk in response.text.split("\n\n"):
        if not chunk.strip():
            continue
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        events.append((lines["event"], data))
    return events


def blocks_of(events: list[tuple[str, dict]]) -> list[dict]:
    """The content blocks a client rebuilds from a stream (as Anthropic's SDK does)."""
    blocks: list[dict] = []
    for name, data in events:
        if name == "content_block_start":
            assert data["index"] == len(blocks)
            blocks.append(dict(data["content_block"], partial=""))
        elif name == "content_block_delta":
            block, delta = blocks[data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta" and block["type"] == "tool_use"
                block["partial"] += delta["partial_json"]
        elif name == "content_block_stop":
            block = blocks[data["index"]]
            if block["type"] == "tool_use":
                block["input"] = json.loads(block["partial"])
            del block["partial"]
    return blocks


@pytest.mark.model
def test_a_tool_use_round_trip(http, model_name):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = http.post("/v1/messages", json={
        "model": model_name, "max_tokens": 80, "system": SYSTEM, "temperature": 0, "messages": question,
        "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}})
    assert first.status_code == 200
    body = first.json()
    assert body["type"] == "message" and body["stop_reason"] == "tool_use" and body["stop_sequence"] is None
    assert [b["type"] for b in body["content"]] == ["tool_use"]  # a forced call: nothing but the call
    call = body["content"][0]
    assert call["id"].startswith("toolu_") and call["name"] == "get_weather"
    assert isinstance(call["input"], dict) and isinstance(call["input"].get("city"), str)
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0

    history = question + [{"role": "assistant", "content": body["content"]},
                          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                                        "content": "Sunny, 21 °C."}]}]
    second = http.post("/v1/messages", json={
        "model": model_name, "max_tokens": 40, "system": SYSTEM, "temperature": 0, "messages": history,
        "tools": [WEATHER], "tool_choice": {"type": "none"}})
    assert second.status_code == 200, second.text
    answer = second.json()
    assert answer["stop_reason"] in ("end_turn", "max_tokens")
    assert [b["type"] for b in answer["content"]] == ["text"] and answer["content"][0]["text"]


@pytest.mark.model
def test_a_streamed_tool_use_comes_as_input_json_deltas(http, model_name):
    response = http.post("/v1/messages", json={
        "model": model_name, "max_tokens": 80, "system": SYSTEM, "temperature": 0, "stream": True,
        "messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [WEATHER],
        "tool_choice": {"type": "any"}})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "error" not in names
    start = next(data for name, data in events if name == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    assert start["content_block"]["id"].startswith("toolu_") and start["content_block"]["name"] == "get_weather"
    blocks = blocks_of(events)
    assert [b["type"] for b in blocks] == ["tool_use"] and isinstance(blocks[0]["input"]["city"], str)
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0
    assert events[0][1]["message"]["usage"]["input_tokens"] > 0  # counted before the answer


def hermes_call(name, **arguments):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def test_text_before_calls_and_tool_results_in_the_history(scripted):
    """A model that says something, then calls twice (scripted): a text block, then one
    tool_use block per call, numbered in order; the results sent back reach the model as tool
    messages in its own protocol, an error marked as one."""
    server = scripted(native_tools=True)
    server.engine.enqueue("Let me check both. " + hermes_call("get_weather", city="Paris") + "\n"
                          + hermes_call("get_weather", city="Oslo"))
    messages = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
    with httpx.Client(base_url=server.url, timeout=60) as http:
        response = http.post("/v1/messages", json={"model": "scripted-model", "max_tokens": 100, "stream": True,
                                                   "messages": messages, "tools": [WEATHER]})
        blocks = blocks_of(events_of(response))
        assert [b["type"] for b in blocks] == ["text", "tool_use", "tool_use"]
        assert blocks[0]["text"].strip() == "Let me check both."
        assert [b["input"] for b in blocks[1:]] == [{"city": "Paris"}, {"city": "Oslo"}]
        assert blocks[1]["id"] != blocks[2]["id"]

        server.engine.enqueue("Paris is sunny; Oslo could not be read.")
        history = messages + [
            {"role": "assistant", "content": [{"type": "text", "text": blocks[0]["text"]}] + [
                {"type": "tool_use", "id": b["id"], "name": b["name"], "input": b["input"]} for b in blocks[1:]]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": blocks[1]["id"], "content": "Sunny, 21 °C."},
                {"type": "tool_result", "tool_use_id": blocks[2]["id"], "is_error": True,
                 "content": [{"type": "text", "text": "The weather service is down."}]},
                {"type": "text", "text": "Thanks!"}]}]
        reply = http.post("/v1/messages", json={"model": "scripted-model", "max_tokens": 100, "messages": history,
                                                "tools": [WEATHER]}).json()
    assert reply["content"] == [{"type": "text", "text": "Paris is sunny; Oslo could not be read."}]
    assert reply["stop_reason"] == "end_turn"
    asked = server.engine.history[-1].messages
    calls = next(m for m in asked if m.tool_calls)
    assert [c["function"]["arguments"] for c in calls.tool_calls] == [{"city": "Paris"}, {"city": "Oslo"}]
    results = [m for m in asked if m.role == "tool"]
    assert [m.content for m in results] == ["Sunny, 21 °C.", "Error: The weather service is down."]
    assert [m.tool_call_id for m in results] == [blocks[1]["id"], blocks[2]["id"]]
    assert asked[-1].role == "user" and asked[-1].content == "Thanks!"


def test_disable_parallel_tool_use_gives_one_call(scripted):
    server = scripted(native_tools=True)
    two = hermes_call("get_weather", city="Paris") + "\n" + hermes_call("get_weather", city="Oslo")
    server.engine.enqueue(two)
    reply = httpx.post(server.url + "/v1/messages", timeout=60, json={
        "model": "scripted-model", "max_tokens": 100, "tools": [WEATHER],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [{"role": "user", "content": "Weather in Paris and Oslo?"}]}).json()
    assert [b["input"] for b in reply["content"]] == [{"city": "Paris"}] and reply["stop_reason"] == "tool_use"


def test_a_text_answer_to_a_request_with_tools_is_one_text_block(scripted):
    server = scripted()
    server.engine.enqueue("No tool is needed: hello!")
    response = httpx.post(server.url + "/v1/messages", timeout=60, json={
        "model": "scripted-model", "max_tokens": 100, "stream": True, "tools": [WEATHER],
        "messages": [{"role": "user", "content": "Say hello."}]})
    events = events_of(response)
    assert blocks_of(events) == [{"type": "text", "text": "No tool is needed: hello!"}]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"


def anthropic_error(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return body["error"]["message"]


@pytest.mark.parametrize("change, wanted", [
    ({"tool_choice": {"type": "tool", "name": "nope"}}, "names the tool 'nope'"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search", "input_schema": {}}]}, "server tools"),
    ({"tools": [{"name": "f", "description": "no schema"}]}, "input_schema"),
    ({"tools": None, "tool_choice": {"type": "any"}}, "tool_choice needs tools"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "'image' are not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]}, "tool_use_id"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking is not supported"),
    ({"model": "profile:nope"}, "no profile called"),
])
def test_bad_tool_requests_are_400_in_anthropics_shape(scripted, change, wanted):
    server = scripted()
    body = {"model": "scripted-model", "max_tokens": 10, "tools": [WEATHER],
            "messages": [{"role": "user", "content": "Hi"}], **change}
    body = {k: v for k, v in body.items() if v is not None}
    message = anthropic_error(httpx.post(server.url + "/v1/messages", timeout=60, json=body),
                              404 if "profile" in body["model"] else 400)
    assert wanted in message


def test_profiles_are_refused_on_the_messages_api(scripted):
    from desktop_app_server.profiles import Profile

    server = scripted()
    server.controller.gateway.profiles.save(Profile("docs"))
    message = anthropic_error(httpx.post(server.url + "/v1/messages", timeout=60, json={
        "model": "profile:docs", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}))
    assert "/v1/chat/completions" in message
