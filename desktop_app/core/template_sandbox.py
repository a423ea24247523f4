"""A Jinja sandbox that bounds the work and the memory of every render.

Templates come from model files (their chat template) and from shared template files, so
they are not trusted. Jinja's own sandbox stops attribute tricks, but not a loop inside a
loop over ``range(9999)``, ``{{ "x" * 10**10 }}`` or ``'x'.center(2000000000)``, which would
freeze the app for minutes or exhaust its memory.

Each render gets a budget (:class:`_Budget`), kept per thread:

- steps: every loop item, every call and every filter spends one, plus one per thousand
  characters or items it handles, so that neither many small steps nor a few huge ones can
  run for long; past MAX_TEMPLATE_STEPS the render stops with a SecurityError;
- text: no text, list or output may grow past MAX_RENDER_TEXT plus four times the size of
  what the render was given (a long conversation is not a hostile template);
- numbers: a number argument larger than MAX_TEMPLATE_TEXT (a width, a count) is refused
  before the call that would allocate it, and so is an integer of more than MAX_INT_BITS.

Loops are reached by rewriting the template's syntax tree: every loop's sequence, and every
``~`` join, passes through a check before use.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

__all__ = ["MAX_RENDER_TEXT", "MAX_TEMPLATE_RANGE", "MAX_TEMPLATE_STEPS", "MAX_TEMPLATE_TEXT", "bounded_sandbox"]

#: Largest size (a width, a count, a repetition) a template may ask for in one go.
MAX_TEMPLATE_TEXT = 1_000_000
#: Largest range() a template may loop over.
MAX_TEMPLATE_RANGE = 10_000
#: Steps one render may take in all. A real chat template spends about ten per message and
#: tool; nested loops that would run for minutes hit this in well under a second.
MAX_TEMPLATE_STEPS = 200_000
#: Longest text one render may produce beyond the size of its input.
MAX_RENDER_TEXT = 4 * MAX_TEMPLATE_TEXT
#: Largest integer, in bits, a template may compute.
MAX_INT_BITS = 4096
#: Characters or items handled that cost one step.
_PER_STEP = 1000
#: A format width or precision of seven digits or more (e.g. '%500000000s', '{:>9999999}').
_HUGE_FORMAT = re.compile(r"\d{7,}")

_current = threading.local()


def _refuse(why: str) -> None:
    from jinja2.sandbox import SecurityError

    raise SecurityError(why)


class _Budget:
    """What one render may still spend."""

    __slots__ = ("steps", "max_text")

    def __init__(self, input_size: int = 0) -> None:
        self.steps = MAX_TEMPLATE_STEPS
        self.max_text = MAX_RENDER_TEXT + 4 * input_size

    def spend(self, steps: int) -> None:
        self.steps -= steps
        if self.steps < 0:
            _refuse(f"the template does too much work (more than {MAX_TEMPLATE_STEPS:,} steps in one "
                    "render); check its loops")


def _budget() -> _Budget:
    """The running render's budget (a fresh one when rendering outside :class:`BoundedTemplate`)."""
    budget = getattr(_current, "budget", None)
    if budget is None:
        budget = _current.budget = _Budget()
    return budget


def _size(value: Any) -> int:
    """The length of a text or collection, 0 for anything else."""
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) else 0


def _input_size(value: Any, depth: int = 0) -> int:
    """The total length of the texts in a render's arguments (messages, tools ...)."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if depth > 6:
        return 0
    if isinstance(value, dict):
        return sum(_input_size(k, depth + 1) + _input_size(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(_input_size(v, depth + 1) for v in value)
    return 0


#: Items of a collection, and characters of a text, that cost one step.
_ITEMS_PER_STEP = 10
_SAMPLE = 16


def _work(value: Any, depth: int = 0) -> int:
    """The steps that reading ``value`` costs: its characters, and its items, nested ones too.

    A long collection is judged by its first few items (a list of a thousand copies of a
    million-item list is read in no time this way, and costs what reading it all would).
    """
    if isinstance(value, (str, bytes)):
        return len(value) // _PER_STEP
    if depth > 4 or not isinstance(value, (list, tuple, dict, set, frozenset)):
        return 0
    items = list(value.values()) if isinstance(value, dict) else value
    n = len(items)
    if not n:
        return 0
    sample = items[:_SAMPLE] if isinstance(items, (list, tuple)) else list(items)[:_SAMPLE]
    inner = sum(_work(v, depth + 1) for v in sample) * n // len(sample)
    return n // _ITEMS_PER_STEP + inner


def _charge(*values: Any) -> None:
    _budget().spend(1 + sum(_work(v) for v in values))


def _check_result(value: Any) -> Any:
    if _size(value) > _budget().max_text:
        _refuse("a template tried to build a huge text")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        _refuse("a template tried to compute a huge number")
    return value


def _check_arguments(args: tuple, kwargs: dict) -> None:
    """Refuse huge numbers (a width, a count) and huge format widths before the call runs."""
    for value in (*args, *kwargs.values()):
        items = value if isinstance(value, (tuple, list)) and len(value) <= 64 else (value,)
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_TEMPLATE_TEXT:
                _refuse("a template asked for a size that is too large")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _HUGE_FORMAT.search(text):
        _refuse("a template asked for a format width that is too large")


def _counted(iterable: Any) -> Any:
    """``iterable`` with each of its items charged to the render's budget."""
    try:
        size = len(iterable)
    except TypeError:  # a generator (e.g. from a filter): charge item by item
        return _charge_each(iterable)
    _budget().spend(max(size, 1))
    return iterable


def _charge_each(iterable: Any) -> Any:
    budget = _budget()
    budget.spend(1)
    for item in iterable:
        budget.spend(1)
        yield item


def _bounded_text(text: Any) -> Any:
    """Charge and check a joined text (``a ~ b``)."""
    _charge(text)
    return _check_result(text)


def _bounded_join(chunks: Any) -> str:
    """Join a render's output, refusing one that grows past the render's text limit."""
    limit = _budget().max_text
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            _refuse("a template tried to build a huge text")
        parts.append(chunk)
    return "".join(parts)


#: Filters whose arguments after the value are sizes (a width, a count of items or slices).
_SIZED_FILTERS = frozenset({"center", "indent", "batch", "slice", "format", "wordwrap", "truncate"})


def _bounded_filter(name: str, function: Any) -> Any:
    """``function`` (a Jinja filter) with its arguments checked and its work charged."""
    skip = 2 if getattr(function, "jinja_pass_arg", None) else 1  # the context (if passed), then the value

    @functools.wraps(function)  # keeps jinja_pass_arg, so Jinja passes the context as before
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if name in _SIZED_FILTERS:
            _check_arguments(args[skip:], kwargs)
            if name == "format" and len(args) >= skip:
                _check_format(args[skip - 1])
        # By everything the filter reads (tojson of a list of long texts reads all of them),
        # so that a refusal comes before the work.
        _charge(*args[skip - 1:])
        result = function(*args, **kwargs)
        _charge(result)
        return _check_result(result)

    return bounded


def bounded_sandbox(**options: Any):
    """A Jinja sandbox whose every render is bounded in work and size (see the module's text)."""
    from jinja2 import nodes
    from jinja2.environment import Template
    from jinja2.runtime import LoopContext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.visitor import NodeTransformer

    class BoundedTemplate(Template):
        def render(self, *args: Any, **kwargs: Any) -> str:
            outer = getattr(_current, "budget", None)
            _current.budget = _Budget(_input_size([args, kwargs]))
            try:
                return super().render(*args, **kwargs)
            finally:
                _current.budget = outer

        def generate(self, *args: Any, **kwargs: Any) -> Any:
            outer = getattr(_current, "budget", None)
            _current.budget = _Budget(_input_size([args, kwargs]))
            try:
                size, limit = 0, _current.budget.max_text
                for chunk in super().generate(*args, **kwargs):
                    size += len(chunk)
                    if size > limit:
                        _refuse("a template tried to build a huge text")
                    yield chunk
            finally:
                _current.budget = outer

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+", "%"})
        template_class = BoundedTemplate

        def call_binop(self, context, operator, left, right):
            ints = isinstance(left, int) and isinstance(right, int)
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                _refuse("exponent too large in a template")
            if operator == "**" and ints and abs(left).bit_length() * max(right, 0) > MAX_INT_BITS:
                _refuse("a template tried to compute a huge number")
            if operator == "*":
                if ints and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
                    _refuse("a template tried to compute a huge number")
                for seq, count in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(count, int) \
                            and len(seq) * count > MAX_TEMPLATE_TEXT:
                        _refuse("a template tried to build a huge text")
            if operator == "%" and isinstance(left, str):
                _check_format(left)
                _check_arguments((right,), {})
            if operator == "+" and _size(left) + _size(right) > _budget().max_text:
                _refuse("a template tried to build a huge text")
            _charge(left, right)
            return _check_result(super().call_binop(context, operator, left, right))

        def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
            if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive loop
                args = (_counted(args[0]), *args[1:])
            receiver = getattr(__obj, "__self__", None)
            name = getattr(__obj, "__name__", "")
            if isinstance(receiver, (str, bytes, list, tuple)):  # e.g. 'x'.center(2000000000)
                _check_arguments(args, kwargs)
            if isinstance(receiver, str):
                if name in ("format", "format_map"):
                    _check_format(receiver)
                elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
                    grows = receiver.count(args[0]) * (len(args[1]) - len(args[0])) if args[0] else len(receiver)
                    if len(receiver) + grows > _budget().max_text:
                        _refuse("a template tried to build a huge text")
                elif name == "expandtabs" and receiver.count("\t") * (int(args[0]) if args else 8) > MAX_TEMPLATE_TEXT:
                    _refuse("a template tried to build a huge text")
            _charge(receiver, *args)
            result = super().call(__context, __obj, *args, **kwargs)
            _charge(result)
            return _check_result(result)

        def _parse(self, source, name, filename):
            return _Checked().visit(super()._parse(source, name, filename))

    class _Checked(NodeTransformer):
        """Makes every loop's sequence and every ``~`` join pass through a check first."""

        def visit_For(self, node: Any) -> Any:
            node = self.generic_visit(node)
            node.iter = _call("bounded_iter", node.iter)
            return node

        def visit_Concat(self, node: Any) -> Any:
            return _call("bounded_text", self.generic_visit(node))

    def _call(check: str, node: Any) -> Any:
        return nodes.Call(nodes.EnvironmentAttribute(check), [node], [], None, None, lineno=node.lineno)

    env = BoundedSandbox(**options)
    env.bounded_iter = _counted
    env.bounded_text = _bounded_text
    env.concat = _bounded_join
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.globals.pop("lipsum", None)  # builds paragraphs of filler at the cost of one call

    def bounded_range(*args: int):
        r = range(*args)
        if len(r) > MAX_TEMPLATE_RANGE:
            _refuse(f"range() longer than {MAX_TEMPLATE_RANGE} in a template")
        return r

    env.globals["range"] = bounded_range
    return env
