"""A model call with tools the caller runs (what the API server offers), on the real model."""

from __future__ import annotations

import json

import pytest

from desktop_app.api import ChatMessage, GenerationOptions, tool_from_function


def get_weather(city: str, unit: str = "celsius") -> str:
    """Get the current weather in a city.

    Args:
        city: The city's name.
        unit: celsius or fahrenheit.
    """
    raise AssertionError("the caller runs this tool, never Parley")


@pytest.fixture
def context(paths):
    from desktop_app.context import build_context

    app = build_context(paths)
    app.settings.set("model.context_length", 2048)
    app.load_model(None)
    yield app.plugin_context("prompt_templates")
    app.close()


def test_a_required_call_comes_back_well_formed_and_its_result_is_read(context):
    tool = tool_from_function(get_weather)
    tool.parameters["properties"]["unit"]["enum"] = ["celsius", "fahrenheit"]
    options = GenerationOptions(temperature=0.0, max_tokens=64, seed=1)
    first = context.complete([ChatMessage("user", "What is the weather in Paris?")], options, tools=[tool],
                             tool_choice="required")
    [call] = first.tool_calls
    assert call.name == "get_weather" and call.id.startswith("call_") and len(call.id) > 10
    assert isinstance(call.arguments["city"], str) and call.arguments["city"]  # the grammar holds it to the schema
    assert call.arguments.get("unit", "celsius") in ("celsius", "fahrenheit")
    answer = context.complete([
        ChatMessage("user", "What is the weather in Paris?"),
        ChatMessage("assistant", first.text, tool_calls=[{"id": call.id, "type": "function", "function": {
            "name": call.name, "arguments": json.dumps(call.arguments)}}]),
        ChatMessage("tool", "18 degrees and sunny", tool_call_id=call.id),
    ], options, tools=[tool], tool_choice="none")
    assert answer.tool_calls == [] and answer.text.strip()
    assert "Tool result from get_weather: 18 degrees and sunny" in answer.prompt


def test_a_json_schema_answer_parses_and_matches(context):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    result = context.complete([ChatMessage("user", "Make up a person.")],
                              GenerationOptions(temperature=0.0, max_tokens=64, json_schema=schema))
    value = json.loads(result.text)
    assert set(value) == {"name", "age"} and isinstance(value["age"], int)
