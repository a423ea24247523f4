"""Tools the model may call: schemas from Python functions, checks, and running one call safely.

A tool is a :class:`~desktop_app.core.turn.Tool`. Plugins either give its JSON schema
explicitly or let :func:`tool_from_function` build it from type hints and the docstring.
Everything the model sends is checked against the schema before the function runs; every
problem becomes a message the model can read and act on, never an exception in the chat.
"""

from __future__ import annotations

import contextvars
import enum
import inspect
import json
import math
import re
import threading
import time
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union

from desktop_app.core.errors import ParleyError
from desktop_app.core.turn import Tool

__all__ = [
    "ToolCall",
    "ToolError",
    "ToolOutcome",
    "ToolRegistry",
    "check_tool",
    "public_schema",
    "run_tool",
    "simple_pattern",
    "tool_from_function",
    "tool_summary",
    "validate_arguments",
]

#: Tool names: what OpenAI-style APIs and chat templates accept, plus "." for "server.tool".
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
#: Results longer than this are cut: a tiny context window must still fit the answer.
MAX_RESULT_CHARS = 4000
_JSON_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}


#: The regular-expression patterns the grammar can enforce: one character class, repeated.
_SIMPLE_PATTERN = re.compile(r"^\^(\[[^\]\\\"]+\])(\+|\*|\{\d+,\d+\})\$$")
#: What such a class may contain to be safe inside a JSON string: plain characters and ranges
#: of letters or digits; never a quote, a backslash, a control character or a negation.
_SAFE_CLASS = re.compile(r"^\[(?!\^)(?:[a-z]-[a-z]|[A-Z]-[A-Z]|[0-9]-[0-9]|[^\-\[\]\\\"\x00-\x1f\x7f]|-(?=\]))+\]$")


def simple_pattern(pattern: Any) -> tuple[str, str] | None:
    """(character class, repetition) when ``pattern`` is ``^[chars]+$``-like and safe, else None."""
    match = _SIMPLE_PATTERN.match(pattern) if isinstance(pattern, str) else None
    if match and _SAFE_CLASS.match(match.group(1)):
        return match.group(1), match.group(2)
    return None



class ToolError(ParleyError):
    """A tool or a call to it is not usable; the message says why."""


@dataclass
class ToolCall:
    """One call the model asked for: the tool's name and its (unchecked) arguments."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class ToolOutcome:
    """What became of one call: the decision, the result or error, and how long it ran."""

    call: ToolCall
    decision: str  # "allowed", "approved", "denied", "invalid"
    decided_by: str = ""  # "policy", "you", a plugin's name, or "" when no one had to decide
    result: str = ""
    error: str = ""
    duration_ms: float = 0.0
    source: str = ""
    round: int = 1

    @property
    def ok(self) -> bool:
        """True when the tool ran and returned a result."""
        return not self.error

    def text_for_model(self) -> str:
        """The result as the model reads it (errors included, so it can try again or explain)."""
        return self.result if self.ok else f"Error: {self.error}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data for the turn's trace."""
        return {
            "tool": self.call.name,
            "arguments": self.call.arguments,
            "decision": self.decision,
            "decided_by": self.decided_by,
            "result": self.result,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 2),
            "source": self.source,
            "round": self.round,
        }


# -- schemas from Python functions -------------------------------------------------------------

def _doc_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """Split a docstring into its description and per-parameter descriptions.

    Understands Google style (``Args:`` then ``name: text``) and Sphinx style
    (``:param name: text``).
    """
    doc = inspect.getdoc(fn) or ""
    params: dict[str, str] = {}
    for name, text in re.findall(r":param\s+(?:\w+\s+)?(\w+):\s*(.+)", doc):
        params[name] = text.strip()
    lines = doc.splitlines()
    description: list[str] = []
    in_args = False
    current = ""
    for line in lines:
        stripped = line.strip()
        if re.match(r"^(Args|Arguments|Parameters):\s*$", stripped):
            in_args = True
            continue
        if in_args:
            if re.match(r"^(Returns|Raises|Yields|Examples?|Notes?):\s*$", stripped):
                in_args = False
                continue
            match = re.match(r"^(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", stripped)
            if match and line.startswith((" ", "\t")) and len(line) - len(line.lstrip()) <= 8:
                current = match.group(1)
                params[current] = match.group(2).strip()
            elif stripped and current:
                params[current] = f"{params[current]} {stripped}".strip()
            continue
        if stripped.startswith(":param") or re.match(r"^(Returns|Raises):", stripped):
            continue
        description.append(line)
    text = "\n".join(description).strip()
    # The first paragraph describes the tool; the rest is for programmers.
    return text.split("\n\n")[0].replace("\n", " ").strip(), params


def _schema_for(annotation: Any) -> dict[str, Any]:
    """The JSON schema of one Python type annotation."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        values = list(args)
        kinds = {type(v) for v in values}
        schema: dict[str, Any] = {"enum": values}
        if kinds == {str}:
            schema["type"] = "string"
        elif kinds <= {int}:
            schema["type"] = "integer"
        return schema
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _schema_for(options[0])
        return {"anyOf": [_schema_for(a) for a in options]}
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set):
        item = _schema_for(args[0]) if args else {}
        return {"type": "array", "items": item} if item else {"type": "array"}
    if origin is dict or annotation is dict:
        return {"type": "object"}
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return {"enum": [m.value for m in annotation]}
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if annotation in simple:
        return {"type": simple[annotation]}
    raise ToolError(f"Parameter type {annotation!r} cannot be described to the model; use str, int, "
                    "float, bool, Literal, list or dict.")


def tool_from_function(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = True,
    timeout: float = 30.0,
    always_offered: bool = False,
) -> Tool:
    """Build a :class:`Tool` from a function's type hints and docstring.

    The docstring's first paragraph becomes the description; parameters are described from
    an ``Args:`` section or ``:param name:`` lines. Parameters without a default are required.
    """
    target = function
    try:
        hints = typing.get_type_hints(target)
    except Exception as exc:
        raise ToolError(f"The type hints of {getattr(function, '__name__', function)!r} cannot be read: {exc}") from exc
    summary, param_docs = _doc_parts(target)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(target).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name.startswith("_"):
            continue
        if param.kind is param.KEYWORD_ONLY and param.default is not param.empty and param.name.startswith("_"):
            continue
        schema = _schema_for(hints.get(param.name, param.annotation))
        if param.name in param_docs:
            schema["description"] = param_docs[param.name]
        if param.default is param.empty:
            required.append(param.name)
        elif param.default is not None and isinstance(param.default, (str, int, float, bool)):
            schema["default"] = param.default
        properties[param.name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties, "required": required,
                                  "additionalProperties": False}
    tool = Tool(
        name=name or function.__name__,
        description=description or summary or (name or function.__name__).replace("_", " "),
        parameters=parameters,
        function=function,
        requires_approval=requires_approval,
        timeout=timeout,
        always_offered=always_offered,
    )
    check_tool(tool)
    return tool


def check_tool(tool: Any) -> None:
    """Raise :class:`ToolError` unless ``tool`` is a usable Tool (name, description, schema)."""
    if not isinstance(tool, Tool):
        raise ToolError(f"Expected a desktop_app.api.Tool, got {type(tool).__name__}.")
    if not isinstance(tool.name, str) or not NAME_PATTERN.match(tool.name):
        raise ToolError(f"Tool name {tool.name!r} is not valid: use letters, digits, '_', '-' or '.', "
                        "starting with a letter, at most 64 characters.")
    if not callable(tool.function):
        raise ToolError(f"Tool {tool.name!r} has no callable function.")
    if not isinstance(tool.description, str) or not tool.description.strip():
        raise ToolError(f"Tool {tool.name!r} needs a description: the model chooses tools by it.")
    schema = tool.parameters
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise ToolError(f"The parameters of tool {tool.name!r} must be a JSON schema of type 'object'.")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise ToolError(f"The 'properties' of tool {tool.name!r} must be an object.")
    for key, sub in properties.items():
        if sub is True:
            continue  # JSON schema's "anything"
        if not isinstance(sub, dict):
            raise ToolError(f"Parameter {key!r} of tool {tool.name!r} must be described by a schema object.")
        kind = sub.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind else []
        if any(k not in _JSON_TYPES for k in kinds):
            raise ToolError(f"Parameter {key!r} of tool {tool.name!r} has an unknown type {kind!r}.")
        if "enum" in sub and (not isinstance(sub["enum"], list) or not sub["enum"]):
            raise ToolError(f"Parameter {key!r} of tool {tool.name!r} has an empty list of allowed values.")
    required = schema.get("required", [])
    if not isinstance(required, list) or any(r not in properties for r in required):
        raise ToolError(f"Tool {tool.name!r} requires parameters it does not describe: {required!r}.")
    if not isinstance(tool.timeout, (int, float)) or tool.timeout <= 0:
        raise ToolError(f"Tool {tool.name!r} needs a positive timeout.")


# -- checking arguments ------------------------------------------------------------------------

def _type_ok(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "null":
        return value is None
    return True


def _check_value(value: Any, schema: Any, where: str) -> Any:
    """Check one value against a (subset of) JSON schema; return it, lightly normalised."""
    if not isinstance(schema, dict):
        if schema is False:
            raise ToolError(f"{where} is not allowed.")
        return value  # a boolean schema "true": anything goes
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError(f"{where} must be a finite number.")
    if "const" in schema and value != schema["const"]:
        raise ToolError(f"{where} must be {json.dumps(schema['const'])}.")
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        raise ToolError(f"{where} must be one of {allowed}, not {json.dumps(value)}.")
    for key in ("anyOf", "oneOf"):
        if key in schema:
            errors = []
            for option in schema[key]:
                try:
                    return _check_value(value, option, where)
                except ToolError as exc:
                    errors.append(str(exc))
            raise ToolError(errors[0] if len(errors) == 1 else f"{where} does not match any allowed form.")
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_type_ok(value, k) for k in kinds):
        # Small models often quote numbers: accept "12.5" for a number, as a person would.
        if isinstance(value, str) and set(kinds) & {"number", "integer"}:
            try:
                number = float(value.replace(",", ""))
            except ValueError:
                number = None
            if number is not None and math.isfinite(number) and ("number" in kinds or number.is_integer()):
                value = int(number) if "integer" in kinds and number.is_integer() else number
                return _check_value(value, schema, where)
        raise ToolError(f"{where} must be of type {' or '.join(kinds)}, not {json.dumps(value)}.")
    if "integer" in kinds and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ToolError(f"{where} must be at least {schema['minimum']}.")
        if "maximum" in schema and value > schema["maximum"]:
            raise ToolError(f"{where} must be at most {schema['maximum']}.")
    if isinstance(value, str):
        # Only patterns of one character class are checked here: they cannot backtrack
        # for ages (other patterns are the tool's own business).
        simple = simple_pattern(schema.get("pattern"))
        if simple and re.fullmatch(simple[0] + simple[1], value) is None:
            raise ToolError(f"{where} has characters or a form it cannot have ({json.dumps(value)}).")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ToolError(f"{where} must be at most {schema['maxLength']} characters long.")
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise ToolError(f"{where} must be at least {schema['minLength']} characters long.")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [_check_value(v, schema["items"], f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and ("properties" in schema or "required" in schema):
        value = _check_object(value, schema, where)
    return value


def _check_object(value: dict[str, Any], schema: dict[str, Any], where: str) -> dict[str, Any]:
    properties = schema.get("properties", {})
    missing = [r for r in schema.get("required", []) if r not in value]
    if missing:
        raise ToolError(f"{where} is missing {', '.join(repr(m) for m in missing)}.")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in properties:
            out[key] = _check_value(item, properties[key], f"{where}.{key}" if where != "arguments" else repr(key))
        elif schema.get("additionalProperties", True) is False:
            known = ", ".join(repr(k) for k in properties) or "none"
            raise ToolError(f"Unknown argument {key!r}; the arguments are {known}.")
        else:
            out[key] = item
    return out


def validate_arguments(tool: Tool, arguments: Any) -> dict[str, Any]:
    """Check ``arguments`` against ``tool``'s schema and return them, or raise ToolError.

    The message names the argument and what was expected, so the model can correct the call.
    """
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ToolError(f"The arguments of {tool.name} must be a JSON object.")
    try:
        return _check_object(arguments, tool.parameters, "arguments")
    except ToolError:
        raise
    except Exception as exc:  # an odd schema (e.g. from an MCP server) must not end the turn
        raise ToolError(f"The arguments of {tool.name} could not be checked: {exc}.") from exc


# -- running -----------------------------------------------------------------------------------

def _as_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = str(value)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"… [cut: {len(text) - MAX_RESULT_CHARS} more characters]"
    return text


def run_tool(tool: Tool, arguments: dict[str, Any], cancelled: threading.Event | None = None) -> tuple[str, str, float]:
    """Run ``tool`` with checked ``arguments`` within its timeout.

    Returns ``(result, error, milliseconds)``; exactly one of result and error is meaningful.
    The call runs on its own daemon thread so a tool that hangs cannot hold up the chat: the
    answer goes on with a timeout error (Python cannot kill the thread; it ends on its own).
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = tool.function(**arguments)
        except BaseException as exc:  # noqa: BLE001 - any failure is reported to the model
            box["error"] = exc
        finally:
            done.set()

    started = time.perf_counter()
    # Pure fast tools are common; a thread costs ~0.1 ms, which keeps one code path. The tool
    # sees the caller's context variables (e.g. that it runs for a turn on the engine's thread).
    worker = threading.Thread(target=contextvars.copy_context().run, args=(target,), name=f"tool-{tool.name}",
                              daemon=True)
    worker.start()
    deadline = started + tool.timeout
    while not done.wait(min(0.05, max(0.0, deadline - time.perf_counter()))):
        if time.perf_counter() >= deadline:
            return "", f"{tool.name} did not finish within {tool.timeout:g} s.", (time.perf_counter() - started) * 1000
        if cancelled is not None and cancelled.is_set():
            return "", f"{tool.name} was stopped.", (time.perf_counter() - started) * 1000
    elapsed = (time.perf_counter() - started) * 1000
    if "error" in box:
        exc = box["error"]
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, ParleyError, PermissionError, FileNotFoundError, LookupError)):
            message = f"{type(exc).__name__}: {message}"
        return "", message, elapsed
    return _as_text(box.get("value")), "", elapsed


def public_schema(schema: Any) -> Any:
    """The schema without ``x-`` keys: Parley's grammar hints are not for the model's eyes, and
    only plugins (never e.g. an MCP server) may give them."""
    if isinstance(schema, dict):
        return {k: public_schema(v) for k, v in schema.items() if not str(k).startswith("x-")}
    if isinstance(schema, list):
        return [public_schema(v) for v in schema]
    return schema


def tool_summary(tools: list[Tool]) -> list[dict[str, Any]]:
    """The tools as chat templates and OpenAI-style APIs expect them (``{"type": "function", ...}``)."""
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description,
                                          "parameters": public_schema(t.parameters)}}
        for t in tools
    ]


@dataclass
class ToolRegistry:
    """Tools by name, each checked once, with the source that gave it (used by the plugin host)."""

    tools: dict[str, Tool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, tool: Any, source: str) -> bool:
        """Check and keep ``tool`` from ``source``; record a problem and return False otherwise."""
        try:
            check_tool(tool)
        except ToolError as exc:
            self.problems.append(f"{source}: {exc}")
            return False
        if tool.name in self.tools:
            self.problems.append(f"{source}: a tool named {tool.name!r} already comes from "
                                 f"{self.tools[tool.name].source}; this one is ignored.")
            return False
        tool.source = tool.source or source
        self.tools[tool.name] = tool
        return True
