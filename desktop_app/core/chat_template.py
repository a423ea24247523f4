"""Render chat messages with a model's own Jinja chat template.

GGUF files carry the template their makers trained with (``tokenizer.chat_template``).
It runs in Jinja's sandbox, so a hostile model file cannot reach Python internals. When a
model has no template, or its template fails to render, ChatML is used: most instruction
models understand it, and it is far better than plain concatenation.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from desktop_app.core.template_sandbox import bounded_sandbox

__all__ = ["ChatTemplate", "CHATML_TEMPLATE", "bounded_sandbox"]

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


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
            from jinja2.sandbox import SecurityError

            if isinstance(exc, SecurityError):
                # A template the sandbox had to stop is not run again: each prompt is rendered
                # several times while it is fitted to the context.
                log.warning("the model's chat template was stopped (%s); using ChatML from now on", exc)
                self._template, self.is_fallback, self.source = self._fallback, True, CHATML_TEMPLATE
            else:
                log.warning("the model's chat template failed (%s); using ChatML for this prompt", exc)
            return self._fallback.render(**kwargs)


class TemplateError(Exception):
    """Raised by a chat template's ``raise_exception``."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)
