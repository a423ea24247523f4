"""Render chat messages with a model's own Jinja chat template.

GGUF files carry the template their makers trained with (``tokenizer.chat_template``).
It runs in Jinja's sandbox, so a hostile model file cannot reach Python internals. When a
model has no template, or its template fails to render, ChatML is used: most instruction
models understand it, and it is far better than plain concatenation.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

__all__ = ["ChatTemplate", "CHATML_TEMPLATE", "bounded_sandbox"]

#: Longest text a template may build with * or ** (far beyond any real prompt).
MAX_TEMPLATE_TEXT = 1_000_000
#: Largest range() a template may loop over.
MAX_TEMPLATE_RANGE = 10_000
#: Loop iterations plus calls one render may make in all. A real chat template spends about
#: ten per message and tool; nested loops that would run for minutes hit this in milliseconds.
MAX_TEMPLATE_STEPS = 200_000
#: Longest text one render may produce (its output, or any text it joins on the way).
MAX_RENDER_TEXT = 4 * MAX_TEMPLATE_TEXT

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The budget of the render running on this thread (renders do not share a budget, and a
# template may be rendered on several threads at once).
_current = threading.local()


class _Budget:
    """What one render may still spend."""

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = MAX_TEMPLATE_STEPS

    def spend(self, steps: int) -> None:
        self.steps -= steps
        if self.steps < 0:
            from jinja2.sandbox import SecurityError

            raise SecurityError(f"the template does too much work (more than {MAX_TEMPLATE_STEPS:,} "
                                "loop steps and calls in one prompt); check its loops")


def _spend(steps: int) -> None:
    budget = getattr(_current, "budget", None)
    if budget is not None:
        budget.spend(steps)


def _counted(iterable: Any) -> Any:
    """``iterable`` with each of its items charged to the render's budget."""
    try:
        size = len(iterable)
    except TypeError:  # a generator (e.g. from a filter): charge item by item
        return _charge_each(iterable)
    _spend(max(size, 1))
    return iterable


def _charge_each(iterable: Any) -> Any:
    _spend(1)
    for item in iterable:
        _spend(1)
        yield item


def _bounded_text(text: Any) -> Any:
    """Refuse a joined text (``a ~ b``) longer than a render may produce."""
    if isinstance(text, str) and len(text) > MAX_RENDER_TEXT:
        from jinja2.sandbox import SecurityError

        raise SecurityError("a template tried to build a huge text")
    return text


def _bounded_join(chunks: Any) -> str:
    """Join a render's output, refusing one that grows past MAX_RENDER_TEXT."""
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_RENDER_TEXT:
            from jinja2.sandbox import SecurityError

            raise SecurityError("a template tried to build a huge text")
        parts.append(chunk)
    return "".join(parts)


def bounded_sandbox(**options: Any):
    """A Jinja sandbox that also bounds the work and the size of a render.

    Jinja's own sandbox stops attribute tricks but not ``{{ "x" * 10**10 }}`` or a loop inside
    a loop over ``range(9999)``, which would freeze the app or exhaust memory; templates come
    from model files and shared template files, so they are not trusted. Each render gets a
    budget of MAX_TEMPLATE_STEPS: every loop step and every call (macros included) spends one,
    and the render stops with a SecurityError when it runs out. Texts are bounded too.
    """
    from jinja2 import nodes
    from jinja2.environment import Template
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
    from jinja2.visitor import NodeTransformer

    class BoundedTemplate(Template):
        def render(self, *args: Any, **kwargs: Any) -> str:
            outer = getattr(_current, "budget", None)
            _current.budget = _Budget()
            try:
                return super().render(*args, **kwargs)
            finally:
                _current.budget = outer

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+"})
        template_class = BoundedTemplate

        def call_binop(self, context, operator, left, right):
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("exponent too large in a template")
            if operator == "*":
                for seq, count in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(count, int) \
                            and len(seq) * count > MAX_TEMPLATE_TEXT:
                        raise SecurityError("a template tried to build a huge text")
            if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)) \
                    and len(left) + len(right) > MAX_RENDER_TEXT:
                raise SecurityError("a template tried to build a huge text")
            return super().call_binop(context, operator, left, right)

        def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
            _spend(1)
            return super().call(__context, __obj, *args, **kwargs)

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

    def bounded_range(*args: int):
        r = range(*args)
        if len(r) > MAX_TEMPLATE_RANGE:
            raise SecurityError(f"range() longer than {MAX_TEMPLATE_RANGE} in a template")
        return r

    env.globals["range"] = bounded_range
    return env


class ChatTemplate:
    """A compiled chat template. ``source`` None or empty means the ChatML fallback."""

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = ""):
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.is_fallback = not source
        #: The model's own template text ("" when it has none).
        self.source = source or ""
        env = bounded_sandbox(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
        self._fallback = env.from_string(CHATML_TEMPLATE)
        self._template = self._fallback
        if source:
            try:
                self._template = env.from_string(source)
            except Exception as exc:
                log.warning("the model's chat template does not compile (%s); using ChatML", exc)
                self.is_fallback = True
        self.source = source if not self.is_fallback else CHATML_TEMPLATE

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
               tools: list[dict[str, Any]] | None = None) -> str:
        """Return the prompt text for ``messages``, ending where the assistant's answer starts.

        ``tools`` (OpenAI-style function descriptions) reach templates that support tools.
        """
        kwargs: dict[str, Any] = dict(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        if tools:
            kwargs["tools"] = tools
        try:
            return self._template.render(**kwargs)
        except Exception as exc:
            # Some templates reject e.g. a system message; ChatML accepts every conversation.
            if self._template is self._fallback:
                raise
            log.warning("the model's chat template failed (%s); using ChatML for this prompt", exc)
            return self._fallback.render(**kwargs)


class TemplateError(Exception):
    """Raised by a chat template's ``raise_exception``."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)
