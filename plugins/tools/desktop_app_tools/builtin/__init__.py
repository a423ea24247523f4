"""Built-in tools the chat model may call: arithmetic, the current time, unit conversion,
and read-only access to folders the user granted.

One module per tool family: :mod:`.arithmetic` (``calculator``), :mod:`.clock`
(``current_time``), :mod:`.units` (``convert_units``) and :mod:`.files` (:class:`FileAccess`);
:mod:`._numbers` formats the numbers the calculator and the unit converter show.

Each tool is a plain function (or a bound method of :class:`FileAccess`) with type hints
and a Google-style docstring; the plugin turns those into the JSON schema the model sees,
so the first paragraph of every tool's docstring is written for the model. Tools return
short plain text and raise :class:`ValueError` with a message the model, or the person
reading the trace, can act on.

The modules deliberately avoid ``from __future__ import annotations`` so that parameter
annotations stay real types (``str``, ``int``, ...) for whatever builds the schema.
"""

from desktop_app_tools.builtin.arithmetic import calculator
from desktop_app_tools.builtin.clock import current_time
from desktop_app_tools.builtin.files import FileAccess
from desktop_app_tools.builtin.units import convert_units

__all__ = ["calculator", "current_time", "convert_units", "FileAccess", "PURE_TOOLS"]

PURE_TOOLS = (calculator, current_time, convert_units)
