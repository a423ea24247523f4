"""How tool calls are written by the model and read back: the model's own format or ours.

Two protocols:

* **Native**: the model's chat template knows about tools (it uses a ``tools`` variable).
  The tools go to the template; calls are read in the two common forms, Hermes-style
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` and a bare JSON object;
  results go back as ``tool`` messages. A Hermes reply may hold several calls (one block
  each, run in order) and may start with a sentence before them.
* **Prompt protocol** (every other model): the system prompt lists the tools and asks the
  model to reply either with text or with exactly one JSON object
  ``{"tool": "<name>", "arguments": {...}}``. A llama.cpp grammar built from the tools'
  schemas makes that object well-formed, with a known tool name and arguments of the right
  shape, so even a very small model writes valid calls. A reply that starts with anything
  but ``{`` is a text answer, and the grammar is dropped for it (full speed). Results go
  back as a user message that starts with "Tool result".

With ``tool_choice = "required"`` the first reply must be a call (the grammar has no text
branch); small models rarely decide to call a tool on their own, so the user can ask for it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from desktop_app.core.tools import ToolCall, ToolError, ToolOutcome, simple_pattern, tool_summary
from desktop_app.core.turn import ChatMessage, Tool

__all__ = ["NativeProtocol", "PromptProtocol", "ToolProtocol", "protocol_for", "schema_grammar"]


# -- a compact JSON-schema to GBNF converter ---------------------------------------------------
# llama.cpp ships a converter too, but it allows free whitespace and newlines in strings;
# small models then wander off inside a string. This one writes one fixed, compact layout.

_CHAR = r'[^"\\\x00-\x1F\x7F]'
_BASE_RULES = {
    "str-char": rf'{_CHAR} | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{{4}})',
    "string": '"\\"" str-char* "\\""',
    # JSON allows no leading zeros: "0", or a digit 1-9 and more digits.
    "number": '"-"? ("0" | [1-9] [0-9]{0,14}) ("." [0-9]{1,10})? ([eE] [-+]? [0-9]{1,2})?',
    "integer": '"-"? ("0" | [1-9] [0-9]{0,14})',
    "boolean": '"true" | "false"',
    "null": '"null"',
    "value": "string | number | boolean | null | any-array | any-object",
    "any-array": '"[" (value (", " value){0,50})? "]"',
    "any-object": '"{" (string ": " value (", " string ": " value){0,50})? "}"',
}


def _literal(text: str) -> str:
    """A GBNF literal for ``text``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass
class _Grammar:
    rules: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)

    def add(self, name: str, body: str) -> str:
        base, n = name, 1
        while name in self.rules:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        return name

    def base(self, name: str) -> str:
        """Use one of the shared base rules; returns its name."""
        self.used.add(name)
        return name

    def text(self) -> str:
        """The grammar as GBNF text, with the base rules the others use."""
        if self.used & {"value", "any-array", "any-object"}:
            self.used.update(("value", "any-array", "any-object", "string", "number", "boolean", "null"))
        if "string" in self.used:
            self.used.add("str-char")
        lines = [f"{name} ::= {body}" for name, body in self.rules.items()]
        lines += [f"{name} ::= {_BASE_RULES[name]}" for name in _BASE_RULES if name in self.used]
        return "\n".join(lines) + "\n"


def _value_rule(g: _Grammar, schema: Any, hint: str) -> str:
    """Return a GBNF expression admitting JSON values of ``schema`` (a practical subset)."""
    if not isinstance(schema, dict):
        schema = {}  # a boolean schema ("true"): any value
    if "const" in schema:
        return _literal(json.dumps(schema["const"], ensure_ascii=False))
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return "(" + " | ".join(_literal(json.dumps(v, ensure_ascii=False)) for v in schema["enum"]) + ")"
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return "(" + " | ".join(_value_rule(g, s, hint) for s in schema[key]) + ")"
    kind = schema.get("type")
    if isinstance(kind, list):
        return "(" + " | ".join(_value_rule(g, dict(schema, type=k), hint) for k in kind) + ")"
    if kind == "string":
        return _string_rule(g, schema, hint)
    if kind in ("number", "integer", "boolean", "null"):
        return g.base(kind)
    if kind == "array":
        items = schema.get("items")
        item = _value_rule(g, items, hint + "-item") if isinstance(items, dict) and items else g.base("value")
        return g.add(f"{hint}-array", f'"[" ({item} (", " {item}){{0,50}})? "]"')
    if kind == "object" or "properties" in schema:
        if not schema.get("properties"):
            return g.base("any-object")
        return _object_rule(g, schema, hint)
    return g.base("value")


#: Rule names the converter uses itself; a tool's own rules may not take them.
_RESERVED = {"root", "call", "text", "block", *_BASE_RULES}


def _string_rule(g: _Grammar, schema: dict[str, Any], hint: str) -> str:
    """A JSON string; a simple ``pattern`` (``^[chars]+$``) or ``maxLength`` is enforced too.

    A tool may shape a string's content exactly with ``"x-gbnf"`` (a GBNF expression for what
    goes between the quotes) and ``"x-gbnf-rules"`` (the named rules it uses; give them
    names unlikely to clash, e.g. prefixed with the tool's name).
    """
    own = schema.get("x-gbnf-rules") or {}
    if isinstance(schema.get("x-gbnf"), str) and isinstance(own, dict) and all(
            isinstance(k, str) and isinstance(v, str) and k not in _RESERVED
            and g.rules.get(k, v) == v and re.fullmatch(r"[a-z][a-z0-9-]*", k) for k, v in own.items()):
        g.rules.update(own)
        return g.add(f"{hint}-str", f'"\\"" ({schema["x-gbnf"]}) "\\""')
    simple = simple_pattern(schema.get("pattern"))
    if simple:
        chars, repeat = simple
        if "maxLength" in schema and repeat in ("+", "*"):
            repeat = f"{{{1 if repeat == '+' else 0},{int(schema['maxLength'])}}}"
        return g.add(f"{hint}-str", f'"\\"" {chars}{repeat} "\\""')
    if "maxLength" in schema:
        return g.add(f"{hint}-str", f'"\\"" {g.base("str-char")}{{0,{int(schema["maxLength"])}}} "\\""')
    return g.base("string")


def _object_rule(g: _Grammar, schema: dict[str, Any], hint: str) -> str:
    """An object with its properties in a fixed order: required ones always, optional ones maybe."""
    properties: dict[str, Any] = schema.get("properties", {})
    required = [k for k in properties if k in schema.get("required", [])]
    optional = [k for k in properties if k not in required]

    def pair(key: str) -> str:
        return f'{_literal(json.dumps(key) + ": ")} {_value_rule(g, properties[key], f"{hint}-{_safe(key)}")}'

    body = " \", \" ".join(pair(k) for k in required)
    if optional:
        # from-i: optional property i, then any later optional ones (any subset, in order).
        names = [g.add(f"{hint}-opt{i}", "") for i in range(len(optional))]  # reserve unique names
        for i in reversed(range(len(optional))):
            later = names[i + 1:]
            tail = f' (", " ({" | ".join(later)}))?' if later else ""
            g.rules[names[i]] = pair(optional[i]) + tail
        any_optional = "(" + " | ".join(names) + ")"
        body = f'{body} (", " {any_optional})?' if body else f"{any_optional}?"
    return g.add(hint, f'"{{" {body} "}}"' if body else '"{" "}"')


def _not_opening(trigger: str) -> str:
    """A GBNF expression for any text that does not begin with ``trigger`` (nor with a blank)."""

    def excluded(char: str, blanks: bool) -> str:
        escaped = "".join("\\" + c if c in "\\]^-" else c for c in char)
        return "[^" + escaped + (" \\t\\n" if blanks else "") + "]"

    options = [excluded(trigger[0], True) + " [^\\x00]*"]
    for i in range(1, len(trigger)):
        # The trigger's first i characters, then anything but its next one (or the end).
        options.append(f"{_literal(trigger[:i])} ({excluded(trigger[i], False)} [^\\x00]*)?")
    return " | ".join(f"({o})" for o in options)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "x"


def schema_grammar(schema: dict[str, Any], root: str = "root") -> str:
    """A GBNF grammar whose ``root`` admits compact JSON matching ``schema``."""
    g = _Grammar()
    expression = _value_rule(g, schema, "v")
    g.rules = {root: expression, **g.rules}
    return g.text()


# -- the protocols -----------------------------------------------------------------------------

class ToolProtocol:
    """Base class: how tools are offered, how calls are recognised and how results return."""

    #: Text that starts a call; the stream is held back from the user from there on.
    trigger = "{"
    #: Whether a call may also follow text in the same reply (an explicit tag such as
    #: ``<tool_call>``; a bare "{" in the middle of text is just text, e.g. code).
    calls_after_text = False

    def __init__(self, tools: list[Tool], question: str = ""):
        self.tools = {t.name: t for t in tools}
        #: The user's message, repeated after a result: small models then answer it.
        self.question = question

    def system_text(self) -> str:
        """Text added to the system prompt (nothing for native templates)."""
        return ""

    def template_tools(self) -> list[dict[str, Any]] | None:
        """The ``tools`` variable for the chat template (None: the template gets none)."""
        return None

    def grammar(self, required: bool, parallel: bool = True) -> str:
        """The GBNF grammar for one reply; without ``parallel``, at most one call in it."""
        raise NotImplementedError

    def text_grammar(self) -> str:
        """A grammar for a reply that must be text: it may not open like a call."""
        return f"root ::= [ \\t\\n]* ({_not_opening(self.trigger)})\n"

    def parse_calls(self, text: str) -> list[ToolCall]:
        """The calls in ``text``, in order; none for a text answer. Raises ToolError when a
        call is malformed."""
        raise NotImplementedError

    def exchange(self, outcomes: list[ToolOutcome], said: str = "") -> list[ChatMessage]:
        """The messages that show the model its calls (one reply, after the text ``said``
        before them) and their results."""
        raise NotImplementedError

    def error_exchange(self, written: str, outcome: ToolOutcome) -> list[ChatMessage]:
        """The messages that show the model what it wrote and why it was not a usable call."""
        return [ChatMessage("assistant", written), ChatMessage("user", f"Tool error: {outcome.error}")]

    # helpers shared by both protocols
    def _call_grammar(self, name_key: str, args_key: str) -> _Grammar:
        g = _Grammar()
        options = []
        for i, tool in enumerate(self.tools.values()):
            head = _literal(f'{{"{name_key}": {json.dumps(tool.name)}, "{args_key}": ')
            args = _object_rule(g, tool.parameters, f"t{i}-args") if tool.parameters.get("properties") else '"{}"'
            options.append(g.add(f"t{i}", f'{head} {args} "}}"'))
        g.rules = {"call": " | ".join(options) or '"{}"', **g.rules}
        return g

    def _decode(self, text: str) -> Any:
        """Parse the JSON object at the start of ``text`` (extra text after it is ignored)."""
        start = text.find("{")
        if start < 0:  # e.g. cut off by the token limit right after <tool_call>, or another layout
            raise ToolError('The tool call holds no JSON object. Write it as {"name": "<tool>", '
                            '"arguments": {...}} inside <tool_call> and </tool_call>.')
        return self._decode_at(text, start)[0]

    @staticmethod
    def _decode_at(text: str, start: int) -> tuple[Any, int]:
        """The JSON object starting at ``start`` and where it ends."""
        try:
            value, end = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise ToolError(f"The tool call is not valid JSON ({exc.msg} at character {exc.pos - start + 1}). "
                            'Write it as {"tool": "<name>", "arguments": {...}}.') from exc
        if not isinstance(value, dict):
            raise ToolError("A tool call must be a JSON object.")
        return value, end

    def _to_call(self, value: dict[str, Any]) -> ToolCall:
        wrapped = value.get("tool_call") or value.get("function")
        inner = wrapped if isinstance(wrapped, dict) else value
        name = inner.get("tool", inner.get("name"))
        arguments = inner.get("arguments", inner.get("parameters", {}))
        if isinstance(arguments, str):
            # Some models write the arguments as a JSON string, as OpenAI's API does.
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolError(f"The arguments are not valid JSON: {exc.msg}.") from exc
        if not isinstance(name, str) or not name:
            raise ToolError('The tool call names no tool; write {"tool": "<name>", "arguments": {...}}.')
        return ToolCall(name, arguments if isinstance(arguments, dict) else {"value": arguments})


class PromptProtocol(ToolProtocol):
    """Parley's own protocol for models whose chat template knows nothing of tools."""

    trigger = "{"

    def system_text(self) -> str:
        """The tool list and the calling convention, for the system prompt."""
        lines = [
            "You can use tools. To call one, reply with only a JSON object: "
            '{"tool": "<tool name>", "arguments": {...}}. The result comes back in the next '
            "message; then answer the user with it. Call a tool when the question needs exact "
            "arithmetic, the current time, a conversion or the user's files; otherwise answer "
            "directly.",
            "",
            "Tools:",
        ]
        for tool in self.tools.values():
            args = ", ".join(_describe_param(k, v, k in tool.parameters.get("required", []))
                             for k, v in tool.parameters.get("properties", {}).items())
            lines.append(f"- {tool.name}({args}): {tool.description}")
        return "\n".join(lines)

    def grammar(self, required: bool, parallel: bool = True) -> str:
        """Calls with a known tool and well-formed arguments; with ``required`` nothing else.
        (One call per reply either way: this protocol's reply is one JSON object.)"""
        g = self._call_grammar("tool", "arguments")
        if required:
            g.rules = {"root": "call", **g.rules}
        else:
            # Text is anything that does not open with "{" (leading blanks allowed either way).
            g.rules = {"root": '[ \\t\\n]* (call | text)', "text": _not_opening(self.trigger), **g.rules}
        return g.text()

    def parse_calls(self, text: str) -> list[ToolCall]:
        """The calls when the reply opens with "{" (one JSON object after another), else none."""
        stripped = text.strip()
        calls: list[ToolCall] = []
        at = 0
        while at < len(stripped) and stripped[at] == "{":
            value, at = self._decode_at(stripped, at)
            calls.append(self._to_call(value))
            while at < len(stripped) and stripped[at].isspace():
                at += 1
        return calls  # text after the calls is ignored, as the grammar never writes any

    def exchange(self, outcomes: list[ToolOutcome], said: str = "") -> list[ChatMessage]:
        """The calls as the model wrote them, then the results as the user's next message
        (a call here always opens the reply: nothing is said before it)."""
        written = "\n".join(json.dumps({"tool": o.call.name, "arguments": o.call.arguments}, ensure_ascii=False)
                            for o in outcomes)
        results = "\n".join(f"Tool result from {o.call.name}: {o.text_for_model()}" for o in outcomes)
        plural = "these results" if len(outcomes) > 1 else "this result"
        return [
            ChatMessage("assistant", written),
            ChatMessage("user", f"{results}\n\n"
                                + (f"Using {plural}, answer my question: {self.question}" if self.question
                                   else f"Now answer the question with {plural}.")),
        ]


class NativeProtocol(ToolProtocol):
    """Tools through the model's own chat template (it reads a ``tools`` variable)."""

    def __init__(self, tools: list[Tool], template_source: str, question: str = ""):
        super().__init__(tools, question)
        self.hermes = "<tool_call>" in template_source
        self.trigger = "<tool_call>" if self.hermes else "{"
        self.calls_after_text = self.hermes

    def template_tools(self) -> list[dict[str, Any]]:
        """The tools in the OpenAI-style form templates iterate over."""
        return tool_summary(list(self.tools.values()))

    def grammar(self, required: bool, parallel: bool = True) -> str:
        """The model's own call layout, constrained to known tools and well-formed arguments;
        several calls in one reply only when ``parallel``."""
        g = self._call_grammar("name", "arguments")
        call = "call"
        if self.hermes:
            # One block per call; a model may ask for several at once (e.g. two cities).
            g.rules = {"block": '"<tool_call>\\n" call "\\n</tool_call>"', **g.rules}
            call = 'block ("\\n" block){0,7}' if parallel else "block"
        if required:
            g.rules = {"root": call, **g.rules}
        else:
            g.rules = {"root": f'[ \\t\\n]* ({call} | text)', "text": _not_opening(self.trigger), **g.rules}
        return g.text()

    def parse_calls(self, text: str) -> list[ToolCall]:
        """Every Hermes ``<tool_call>`` block (after text too), or a reply that is one JSON call."""
        # A block ends at its closing tag, or where the next one opens if it was left open.
        blocks = re.findall(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|(?=<tool_call>)|$)", text, re.S)
        if blocks:
            return [self._to_call(self._decode(block)) for block in blocks]
        stripped = text.strip()
        if stripped.startswith("{") and re.match(r'\{\s*"(name|tool|function|tool_call)"', stripped):
            return [self._to_call(self._decode(stripped))]
        return []

    def exchange(self, outcomes: list[ToolOutcome], said: str = "") -> list[ChatMessage]:
        """One assistant message with what it said and its ``tool_calls``, then a ``tool``
        message per result."""
        ids = [o.call.id or f"call_{i}" for i, o in enumerate(outcomes, 1)]
        calls = [{"type": "function", "id": id_, "function": {"name": o.call.name, "arguments": o.call.arguments}}
                 for id_, o in zip(ids, outcomes)]
        return [ChatMessage("assistant", said.strip(), tool_calls=calls)] + [
            ChatMessage("tool", o.text_for_model(), name=o.call.name, tool_call_id=id_)
            for id_, o in zip(ids, outcomes)
        ]


def _describe_param(name: str, schema: Any, required: bool) -> str:
    if not isinstance(schema, dict):
        schema = {}
    kind = schema.get("type", "any")
    if "enum" in schema:
        kind = " | ".join(json.dumps(v) for v in schema["enum"])
    text = f"{name}: {kind}"
    if not required:
        text += "?"
    if schema.get("description"):
        text += f" ({schema['description']})"
    return text


def template_supports_tools(source: str | None) -> bool:
    """True when a chat template reads the ``tools`` variable."""
    return bool(source) and re.search(r"\btools\b", source or "") is not None


def protocol_for(template_source: str | None, tools: list[Tool], question: str = "") -> ToolProtocol:
    """The native protocol when the template handles tools, else Parley's prompt protocol."""
    if template_supports_tools(template_source):
        return NativeProtocol(tools, template_source or "", question)
    return PromptProtocol(tools, question)
