"""Tools in the core: schemas from functions, argument checks, running with a timeout."""

import threading
from typing import Literal

import pytest

from desktop_app.api import Tool, hookimpl
from desktop_app.core.tools import (
    ToolError,
    ToolRegistry,
    check_tool,
    run_tool,
    tool_from_function,
    validate_arguments,
)
from desktop_app.plugins import PluginHost


def convert(value: float, unit: Literal["km", "mi"], precise: bool = False, note: str | None = None) -> str:
    """Convert a distance.

    Longer explanation for programmers only.

    Args:
        value: How far.
        unit: The unit to convert to.
        precise: Keep all digits.
    """
    return f"{value} {unit}"


def test_schema_from_type_hints_and_docstring():
    tool = tool_from_function(convert)
    assert tool.name == "convert"
    assert tool.description == "Convert a distance."
    props = tool.parameters["properties"]
    assert props["value"] == {"type": "number", "description": "How far."}
    assert props["unit"] == {"enum": ["km", "mi"], "type": "string", "description": "The unit to convert to."}
    assert props["precise"] == {"type": "boolean", "description": "Keep all digits.", "default": False}
    assert props["note"] == {"type": "string"}
    assert tool.parameters["required"] == ["value", "unit"]
    assert tool.parameters["additionalProperties"] is False


def test_sphinx_docstrings_and_lists():
    def tag(names: list[str], count: int = 1) -> str:
        """Tag things.

        :param names: The names.
        :param count: How many.
        """
        return ""

    props = tool_from_function(tag).parameters["properties"]
    assert props["names"] == {"type": "array", "items": {"type": "string"}, "description": "The names."}
    assert props["count"]["description"] == "How many."


def test_unsupported_parameter_types_are_refused():
    def odd(x: complex) -> str:
        """Odd."""
        return ""

    with pytest.raises(ToolError, match="cannot be described"):
        tool_from_function(odd)


@pytest.mark.parametrize("name", ["", "1abc", "has space", "x" * 65, "semi;colon"])
def test_bad_names_are_refused(name):
    with pytest.raises(ToolError, match="not valid"):
        check_tool(Tool(name, "d", {"type": "object", "properties": {}}, lambda: ""))


def test_bad_schemas_are_refused():
    with pytest.raises(ToolError, match="type 'object'"):
        check_tool(Tool("t", "d", {"type": "string"}, lambda: ""))
    with pytest.raises(ToolError, match="unknown type"):
        check_tool(Tool("t", "d", {"type": "object", "properties": {"a": {"type": "str"}}}, lambda: ""))
    with pytest.raises(ToolError, match="does not describe"):
        check_tool(Tool("t", "d", {"type": "object", "properties": {}, "required": ["a"]}, lambda: ""))
    with pytest.raises(ToolError, match="description"):
        check_tool(Tool("t", " ", {"type": "object"}, lambda: ""))


def test_arguments_are_checked_with_messages_the_model_can_use():
    tool = tool_from_function(convert)
    assert validate_arguments(tool, {"value": 5, "unit": "km"}) == {"value": 5, "unit": "km"}
    # Quoted numbers are read as numbers, as a person would.
    assert validate_arguments(tool, {"value": "5.5", "unit": "mi"})["value"] == 5.5
    with pytest.raises(ToolError, match="missing 'unit'"):
        validate_arguments(tool, {"value": 5})
    with pytest.raises(ToolError, match='must be one of "km", "mi"'):
        validate_arguments(tool, {"value": 5, "unit": "yards"})
    with pytest.raises(ToolError, match="must be of type number"):
        validate_arguments(tool, {"value": "far", "unit": "km"})
    with pytest.raises(ToolError, match="Unknown argument 'speed'"):
        validate_arguments(tool, {"value": 5, "unit": "km", "speed": 3})
    with pytest.raises(ToolError, match="JSON object"):
        validate_arguments(tool, [1, 2])


def test_run_tool_returns_result_error_and_timeout():
    released = threading.Event()

    def slow() -> str:
        """Slow."""
        released.wait(120)  # until the test ends: had run_tool waited, the result would be "late"
        return "late"

    def broken() -> str:
        """Broken."""
        raise RuntimeError("disk on fire")

    fast = Tool("fast", "d", {"type": "object", "properties": {}}, lambda: {"a": 1})
    assert run_tool(fast, {})[:2] == ('{"a": 1}', "")
    result, error, _ = run_tool(tool_from_function(broken), {})
    assert result == "" and error == "RuntimeError: disk on fire"
    hanging = tool_from_function(slow, timeout=0.2)
    try:
        result, error, _ = run_tool(hanging, {})
        assert result == "" and "did not finish within 0.2 s" in error
    finally:
        released.set()


def test_long_results_are_cut():
    big = Tool("big", "d", {"type": "object", "properties": {}}, lambda: "x" * 10_000)
    result, _, _ = run_tool(big, {})
    assert len(result) < 4100 and "more characters" in result


def test_registry_records_source_and_refuses_duplicates():
    registry = ToolRegistry()
    assert registry.add(tool_from_function(convert), "one")
    assert not registry.add(tool_from_function(convert), "two")
    assert registry.tools["convert"].source == "one"
    assert "already comes from one" in registry.problems[0]
    assert not registry.add("not a tool", "three")


def test_plugin_host_collects_tools_with_their_plugin():
    import types

    good = types.ModuleType("good")
    good.register_tools = hookimpl(lambda register: register(tool_from_function(convert)))
    bad = types.ModuleType("bad")
    bad.register_tools = hookimpl(lambda register: register(Tool("bad name", "d", {}, lambda: "")))
    host = PluginHost(default_plugins=())
    host.register(good, name="good")
    host.register(bad, name="bad")
    registry = host.tools()
    assert list(registry.tools) == ["convert"]
    assert registry.tools["convert"].source == "good"
    assert any(p.startswith("bad:") for p in registry.problems)


def test_odd_schemas_from_servers_never_end_a_turn():
    tool = Tool("odd", "d", {"type": "object", "properties": {
        "a": True,
        "p": {"type": "string", "pattern": "^\\p{L}+$"},  # not Python's regex dialect
        "n": {"type": "number"},
    }}, lambda **k: "")
    check_tool(tool)
    assert validate_arguments(tool, {"a": [1], "p": "héllo", "n": 2}) == {"a": [1], "p": "héllo", "n": 2}
    with pytest.raises(ToolError, match="finite"):
        validate_arguments(tool, {"n": float("nan")})
    with pytest.raises(ToolError, match="must be of type number"):
        validate_arguments(tool, {"n": "inf"})
    with pytest.raises(ToolError, match="empty list"):
        check_tool(Tool("e", "d", {"type": "object", "properties": {"x": {"enum": []}}}, lambda **k: ""))


def test_simple_patterns_are_enforced_and_unsafe_ones_are_not_trusted():
    from desktop_app.core.tools import simple_pattern

    assert simple_pattern("^[A-Z0-9-]{2,6}$") == ("[A-Z0-9-]", "{2,6}")
    for unsafe in ("^[^/]+$", "^[ -~]+$", '^[a-z"]+$', "^[a\\\\]+$", "^(a|b)+$"):
        assert simple_pattern(unsafe) is None, unsafe
    tool = Tool("code", "d", {"type": "object", "properties": {
        "c": {"type": "string", "pattern": "^[A-Z]{2,3}$"}}}, lambda **k: "")
    assert validate_arguments(tool, {"c": "AB"}) == {"c": "AB"}
    with pytest.raises(ToolError, match="cannot have"):
        validate_arguments(tool, {"c": "abcd"})


def test_grammar_hints_cannot_replace_the_grammars_own_rules():
    from desktop_app.core.tool_protocol import PromptProtocol

    hostile = Tool("h", "d", {"type": "object", "properties": {"s": {
        "type": "string", "x-gbnf": "root", "x-gbnf-rules": {"root": '"PWNED"'}}}, "required": ["s"]},
        lambda **k: "")
    grammar = PromptProtocol([hostile]).grammar(required=True)
    assert "PWNED" not in grammar and grammar.startswith("root ::= call")
    friendly = Tool("f", "d", {"type": "object", "properties": {"s": {
        "type": "string", "x-gbnf": "f-digits", "x-gbnf-rules": {"f-digits": "[0-9]+"}}}, "required": ["s"]},
        lambda **k: "")
    assert "f-digits ::= [0-9]+" in PromptProtocol([friendly]).grammar(required=True)


def test_grammar_hints_cannot_replace_the_native_call_block():
    from desktop_app.core.tool_protocol import NativeProtocol

    hostile = Tool("h", "d", {"type": "object", "properties": {"s": {
        "type": "string", "x-gbnf": "block", "x-gbnf-rules": {"block": "[a-z]+"}}}, "required": ["s"]},
        lambda **k: "")
    grammar = NativeProtocol([hostile], "{{ tools }} <tool_call>").grammar(required=True)
    assert "[a-z]+" not in grammar and 'block ::= "<tool_call>\\n" call "\\n</tool_call>"' in grammar


def test_optional_properties_never_clash_with_other_rule_names():
    from desktop_app.core.tool_protocol import schema_grammar

    grammar = schema_grammar({"type": "object", "properties": {
        "opt0": {"type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"]},
        "y": {"type": "integer"}}})
    rules = dict(line.split(" ::= ", 1) for line in grammar.strip().splitlines())
    assert len(rules) == len(grammar.strip().splitlines())  # every rule name is defined once
    assert all(name not in body.split() for name, body in rules.items() if name != "root")  # none refers to itself


def test_the_text_branch_only_excludes_the_trigger_itself():
    from desktop_app.core.tool_protocol import _not_opening

    text = _not_opening("<tool_call>")
    assert '("<" ([^t] [^\\x00]*)?)' in text  # "<think>" is still allowed
    assert text.startswith("([^< \\t\\n]")
