"""Prompt templates: what they hold, how they are read from TOML, and how they render.

A template may set a system prompt, wrap the user's message (``{{ message }}`` is what the
user typed), add few-shot examples as real chat turns, carry a generation preset, force
JSON output through a schema, and pick a strategy such as self-consistency. Every text is
a Jinja template rendered in a sandbox with strict variables: a template cannot reach Python
internals, and a variable that has no value is an error naming it, never silently empty.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PromptTemplate", "TemplateError", "load_template", "dump_template", "RESERVED"]

#: Variable names the plugin fills in itself.
RESERVED = frozenset({"message"})
_PRESET_KEYS = {"temperature": float, "top_p": float, "top_k": int, "min_p": float,
                "repeat_penalty": float, "max_tokens": int, "stop": list, "seed": int}


class TemplateError(ValueError):
    """A template cannot be read or rendered; the message names the file, field and line."""


@dataclass
class PromptTemplate:
    """One prompt template. ``origin`` says where it came from (built-in, user, a plugin)."""

    name: str
    description: str = ""
    system: str = ""
    user: str = ""
    examples: list[tuple[str, str]] = field(default_factory=list)
    preset: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    json_schema: dict[str, Any] | None = None
    answer_pattern: str = ""
    strategy: dict[str, Any] = field(default_factory=dict)
    origin: str = "user"
    path: Path | None = None

    def __post_init__(self) -> None:
        self._check()

    # -- checking --------------------------------------------------------------------------
    def _texts(self) -> list[tuple[str, str]]:
        texts = [("system", self.system), ("user", self.user)]
        for i, (question, answer) in enumerate(self.examples, 1):
            texts += [(f"example {i} user", question), (f"example {i} assistant", answer)]
        return [(label, text) for label, text in texts if text]

    def _check(self) -> None:
        if not self.name.strip():
            raise TemplateError("A template needs a name.")
        for key, value in self.preset.items():
            if key not in _PRESET_KEYS:
                raise TemplateError(f"{self._where()}: unknown preset option {key!r} "
                                    f"(known: {', '.join(sorted(_PRESET_KEYS))}).")
            if not isinstance(value, _PRESET_KEYS[key]) and not (_PRESET_KEYS[key] is float and isinstance(value, int)):
                raise TemplateError(f"{self._where()}: preset {key} must be a {_PRESET_KEYS[key].__name__}.")
        if self.answer_pattern:
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                raise TemplateError(f"{self._where()}: answer_pattern is not a valid pattern ({exc}).") from None
        env = _environment()
        for label, text in self._texts():
            try:
                env.parse(text)
            except Exception as exc:  # jinja2.TemplateSyntaxError
                line = getattr(exc, "lineno", None)
                where = f", line {line}" if line else ""
                raise TemplateError(f"{self._where()}: {label}{where}: {getattr(exc, 'message', exc)}") from None

    def _where(self) -> str:
        return str(self.path) if self.path else f"template {self.name!r}"

    @property
    def variable_names(self) -> list[str]:
        """The variables the template's texts use (besides ``message``), in first-use order."""
        from jinja2 import meta

        env = _environment()
        names: list[str] = []
        for _, text in self._texts():
            found = meta.find_undeclared_variables(env.parse(text))
            # find_undeclared_variables returns a set; keep the order of appearance.
            for match in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*", text):
                word = match.group(0)
                if word in found and word not in RESERVED and word not in names:
                    names.append(word)
        for name in self.variables:
            if name not in names:
                names.append(name)
        return names

    # -- rendering -------------------------------------------------------------------------
    def render_text(self, text: str, values: dict[str, Any], label: str = "text") -> str:
        """Render one of the template's texts with ``values``."""
        from jinja2 import StrictUndefined, UndefinedError
        from jinja2.sandbox import SecurityError

        env = _environment(StrictUndefined)
        try:
            return env.from_string(text).render(**values)
        except UndefinedError as exc:
            raise TemplateError(f"{self._where()}: {label}: {exc}. Give it a value.") from None
        except SecurityError as exc:
            # The sandbox's messages say what was refused (a huge text, too much work, an attribute).
            raise TemplateError(f"{self._where()}: {label}: stopped: {exc}.") from None
        except Exception as exc:
            raise TemplateError(f"{self._where()}: {label}: {type(exc).__name__}: {exc}") from None

    def values_with_defaults(self, values: dict[str, Any] | None) -> dict[str, Any]:
        """The template's default variable values, overridden by ``values``."""
        merged = dict(self.variables)
        merged.update({k: v for k, v in (values or {}).items() if v is not None})
        return merged

    def render(self, message: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Render everything for ``message``: system, user message, examples."""
        merged = self.values_with_defaults(values)
        merged["message"] = message
        return {
            "system": self.render_text(self.system, merged, "system") if self.system else "",
            "user": self.render_text(self.user, merged, "user") if self.user else message,
            "examples": [
                (self.render_text(q, merged, f"example {i} user"),
                 self.render_text(a, merged, f"example {i} assistant"))
                for i, (q, a) in enumerate(self.examples, 1)
            ],
        }

    def extract_answer(self, text: str) -> str:
        """The final answer of a completion, normalised for voting.

        With an ``answer_pattern`` (e.g. the chain-of-thought template's "Final answer:" line)
        its first group on the last match; otherwise the whole answer.
        """
        candidate = text
        if self.answer_pattern:
            matches = list(re.finditer(self.answer_pattern, text))
            if matches:
                last = matches[-1]
                candidate = last.group(1) if last.groups() else last.group(0)
        return normalise_answer(candidate)


def normalise_answer(text: str) -> str:
    """Lower-case, trim, drop surrounding punctuation and repeated spaces, so equal answers vote together."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    text = text.strip(" .!?;:,\"'`*")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    return text


def _environment(undefined=None):
    from jinja2 import Undefined

    from desktop_app.api import bounded_sandbox

    return bounded_sandbox(undefined=undefined or Undefined, autoescape=False, keep_trailing_newline=False)


def load_template(path: Path, origin: str = "user") -> PromptTemplate:
    """Read a template from a TOML file; raise TemplateError with the file and line on any problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{path}: not valid TOML ({exc}).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{path}: cannot be read ({exc}).") from None
    return template_from_dict(data, origin=origin, path=path)


def template_from_dict(data: dict[str, Any], *, origin: str = "user", path: Path | None = None) -> PromptTemplate:
    """Build a template from parsed TOML data."""
    where = str(path) if path else "template"
    for key in ("preset", "variables", "strategy", "output"):
        if key in data and not isinstance(data[key], dict):
            raise TemplateError(f"{where}: {key} must be a table, like [{key}].")
    if "examples" in data and not isinstance(data["examples"], list):
        raise TemplateError(f"{where}: examples must be a list of [[examples]] tables.")
    try:
        examples = [(str(e["user"]), str(e["assistant"])) for e in data.get("examples", [])]
    except (KeyError, TypeError):
        raise TemplateError(f"{where}: every example needs a user and an assistant text.") from None
    output = data.get("output", {}) or {}
    schema = output.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise TemplateError(f"{where}: output.json_schema must be a table (a JSON schema).")
    name = data.get("name")
    if not isinstance(name, str):
        raise TemplateError(f"{where}: the template has no name.")
    return PromptTemplate(
        name=name,
        description=str(data.get("description", "")),
        system=str(data.get("system", "")),
        user=str(data.get("user", "")),
        examples=examples,
        preset=dict(data.get("preset", {}) or {}),
        variables={str(k): str(v) for k, v in (data.get("variables", {}) or {}).items()},
        json_schema=schema,
        answer_pattern=str(data.get("answer_pattern", "")),
        strategy=dict(data.get("strategy", {}) or {}),
        origin=origin,
        path=path,
    )


def dump_template(template: PromptTemplate) -> str:
    """Return the template as TOML text (what ``load_template`` reads back)."""
    import tomli_w

    data: dict[str, Any] = {"name": template.name}
    for key in ("description", "system", "user", "answer_pattern"):
        value = getattr(template, key)
        if value:
            data[key] = value
    if template.variables:
        data["variables"] = dict(template.variables)
    if template.preset:
        data["preset"] = dict(template.preset)
    if template.strategy:
        data["strategy"] = dict(template.strategy)
    if template.json_schema:
        data["output"] = {"json_schema": template.json_schema}
    if template.examples:
        data["examples"] = [{"user": q, "assistant": a} for q, a in template.examples]
    return tomli_w.dumps(data, multiline_strings=True)
