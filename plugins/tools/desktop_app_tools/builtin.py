"""Built-in tools the chat model may call: arithmetic, the current time, unit conversion,
and read-only access to folders the user granted.

Each tool is a plain function (or a bound method of :class:`FileAccess`) with type hints
and a Google-style docstring; the plugin turns those into the JSON schema the model sees,
so the first paragraph of every tool's docstring is written for the model. Tools return
short plain text and raise :class:`ValueError` with a message the model, or the person
reading the trace, can act on.

The module deliberately avoids ``from __future__ import annotations`` so that parameter
annotations stay real types (``str``, ``int``, ...) for whatever builds the schema.
"""

import codecs
import datetime as _dt
import decimal
import difflib
import functools
import math
import os
import re
import stat
import unicodedata
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

__all__ = ["calculator", "current_time", "convert_units", "FileAccess", "PURE_TOOLS"]


# --------------------------------------------------------------------------------------
# Number formatting (shared by the calculator and the unit converter)
# --------------------------------------------------------------------------------------

# Integers up to this many digits are shown in full (2^64, factorial(20)); beyond it,
# and for fractions, results are rounded to a fixed number of significant digits.
_EXACT_INTEGER_DIGITS = 21


def _format_number(value: Decimal, digits: int) -> str:
    """Plain text for ``value``: at most ``digits`` significant digits, no trailing zeros.

    Positional notation for ordinary magnitudes (1e-9 up to 1e21), ``1.5e+25`` style
    beyond, so the text can be pasted back into the calculator.
    """
    if value.is_zero():
        return "0"  # also turns -0 into 0
    if value == value.to_integral_value() and value.adjusted() < _EXACT_INTEGER_DIGITS:
        return str(int(value))
    rounded = decimal.Context(prec=digits, rounding=decimal.ROUND_HALF_EVEN).plus(value)
    rounded = rounded.normalize(decimal.Context(prec=digits))
    if -9 <= rounded.adjusted() < _EXACT_INTEGER_DIGITS:
        return format(rounded, "f")
    return format(rounded, "e")


# --------------------------------------------------------------------------------------
# calculator
# --------------------------------------------------------------------------------------

_MAX_EXPRESSION_CHARS = 1000
_MAX_DEPTH = 64
_MAX_NUMBER_DIGITS = 100
_MAX_EXPONENT_DIGITS = 5  # in a literal like 1e12345
# Every value stays between 10^-_MAX_MAGNITUDE and 10^_MAX_MAGNITUDE; beyond that the
# Decimal context overflows and powers are refused before they are computed.
_MAX_MAGNITUDE = 10_000
_MAX_FACTORIAL = 1000
_WORK_PRECISION = 60  # digits carried while computing
_SHOWN_DIGITS = 15  # significant digits in the answer

_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459230781640629")

# Operators people paste from documents or phones, mapped to the ASCII ones.
_UNICODE_OPERATORS = str.maketrans({
    "×": "*", "⋅": "*", "·": "*", "÷": "/", "∕": "/",
    "−": "-", "–": "-", "＋": "+", "π": "pi",
})

_NUMBER_PLAIN = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Outside function calls a comma between digits is a thousands separator.
_NUMBER_GROUPED = re.compile(r"(?:[0-9]+(?:,[0-9]+)*(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_THOUSANDS = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Token(NamedTuple):
    kind: str  # num, name, op, (, ), ",", pct, mod, of, end
    text: str
    pos: int  # 1-based column, for error messages
    value: Decimal | None = None


def _calc_context() -> decimal.Context:
    """The Decimal context every calculation runs in: wide precision, bounded exponents."""
    return decimal.Context(
        prec=_WORK_PRECISION, rounding=decimal.ROUND_HALF_EVEN,
        Emax=_MAX_MAGNITUDE, Emin=-_MAX_MAGNITUDE,
        traps=[decimal.Overflow, decimal.InvalidOperation, decimal.DivisionByZero],
    )


def _number_token(text: str, pos: int) -> _Token:
    """Check and convert one numeric literal (separators already validated by the caller)."""
    mantissa, _, exponent = text.lower().partition("e")
    digit_count = sum(ch.isdigit() for ch in mantissa)
    if digit_count > _MAX_NUMBER_DIGITS:
        raise ValueError(f"The number at position {pos} is too long "
                         f"(more than {_MAX_NUMBER_DIGITS} digits).")
    if len(exponent.lstrip("+-")) > _MAX_EXPONENT_DIGITS:
        raise ValueError(f"The exponent of the number at position {pos} is too large.")
    # Unary plus applies the context: rounds to the working precision, traps overflow.
    return _Token("num", text, pos, +Decimal(text.replace(",", "")))


def _tokenize(text: str) -> list[_Token]:
    """Split an expression into tokens, ending with an ``end`` token.

    Commas are context dependent: inside the parentheses of a function call they separate
    arguments, elsewhere they may only group thousands. ``%`` is resolved afterwards.
    """
    tokens: list[_Token] = []
    call_parens: list[bool] = []  # for each open "(": does it belong to a function call?
    i = 0
    while i < len(text):
        ch = text[i]
        pos = i + 1
        if ch.isspace():
            i += 1
            continue
        in_call = bool(call_parens) and call_parens[-1]
        if (ch.isascii() and ch.isdigit()) or (ch == "." and text[i + 1:i + 2].isdigit()):
            match = (_NUMBER_PLAIN if in_call else _NUMBER_GROUPED).match(text, i)
            literal = match.group()
            integer_part = literal.split(".")[0].lower().split("e")[0]
            if "," in integer_part and not _THOUSANDS.fullmatch(integer_part):
                raise ValueError(f"'{literal}' is not a valid number: commas must separate groups "
                                 f"of exactly 3 digits, like 1,234,567.")
            tokens.append(_number_token(literal, pos))
            i = match.end()
            continue
        match = _NAME.match(text, i)
        if match:
            tokens.append(_Token("name", match.group().lower(), pos))
            i = match.end()
            continue
        two = text[i:i + 2]
        if two in ("**", "//"):
            tokens.append(_Token("op", two, pos))
            i += 2
            continue
        if ch in "+-*/^":
            tokens.append(_Token("op", ch, pos))
        elif ch == "%":
            tokens.append(_Token("%", ch, pos))
        elif ch == "(":
            call_parens.append(bool(tokens) and tokens[-1].kind == "name")
            tokens.append(_Token("(", ch, pos))
        elif ch == ")":
            if call_parens:
                call_parens.pop()
            tokens.append(_Token(")", ch, pos))
        elif ch == ",":
            if not in_call:
                raise ValueError(f"Unexpected ',' at position {pos}. Commas are only allowed as "
                                 f"thousands separators (1,234,567) and between function "
                                 f"arguments, as in max(1, 2).")
            tokens.append(_Token(",", ch, pos))
        else:
            raise ValueError(f"Unexpected character {ch!r} at position {pos}. Use numbers, "
                             f"+ - * / ^ %, parentheses and functions such as sqrt(x).")
        i += 1
    tokens.append(_Token("end", "", len(text) + 1))
    return _resolve_percent(tokens)


def _resolve_percent(tokens: list[_Token]) -> list[_Token]:
    """Tell modulo from percent, and accept ``of`` only right after a percent.

    ``%`` followed by an operand (number, name, parenthesis) is modulo: ``7 % 3``.
    Otherwise it is a percent sign: ``17.5%``, ``10% + 1``, ``17.5% of 2,340``.
    """
    resolved: list[_Token] = []
    for index, tok in enumerate(tokens):
        if tok.kind == "%":
            following = tokens[index + 1]
            operand = following.kind in ("num", "(") or (
                following.kind == "name" and following.text != "of")
            tok = tok._replace(kind="mod" if operand else "pct")
        elif tok.kind == "name" and tok.text == "of":
            if not resolved or resolved[-1].kind != "pct":
                raise ValueError(f"'of' at position {tok.pos} must follow a percentage, "
                                 f"as in 15% of 80.")
            tok = tok._replace(kind="of")
        resolved.append(tok)
    return resolved


def _is_integer(value: Decimal) -> bool:
    return value == value.to_integral_value()


def _is_even(value: Decimal) -> bool:
    """Parity of an integral Decimal, without dividing (huge values cannot be divided)."""
    _, digits, exponent = value.normalize().as_tuple()
    return exponent > 0 or digits[-1] % 2 == 0


def _show(value: Decimal) -> str:
    return _format_number(value, _SHOWN_DIGITS)


def _divide(left: Decimal, right: Decimal) -> Decimal:
    if right.is_zero():
        raise ValueError("Division by zero.")
    return left / right


def _floor_divide(left: Decimal, right: Decimal) -> Decimal:
    """Python's ``//``: rounds toward minus infinity (Decimal's ``//`` truncates)."""
    if right.is_zero():
        raise ValueError("Division by zero.")
    try:
        quotient, remainder = left // right, left % right
    except decimal.InvalidOperation:  # quotient has more digits than the precision
        return (left / right).to_integral_value(rounding=decimal.ROUND_FLOOR)
    if remainder and (remainder < 0) != (right < 0):
        quotient -= 1
    return quotient


def _modulo(left: Decimal, right: Decimal) -> Decimal:
    """Python's ``%``: the result has the sign of the divisor (-7 % 3 == 2)."""
    if right.is_zero():
        raise ValueError("Division by zero (modulo by 0).")
    try:
        remainder = left % right
    except decimal.InvalidOperation:
        raise ValueError("The numbers are too far apart in size for modulo (%).") from None
    if remainder and (remainder < 0) != (right < 0):
        remainder += right
    return remainder


def _power(base: Decimal, exponent: Decimal) -> Decimal:
    """``base ^ exponent``, refusing results beyond 10^±_MAX_MAGNITUDE before computing."""
    if exponent.is_zero():
        return Decimal(1)
    if base.is_zero():
        if exponent < 0:
            raise ValueError("Division by zero: 0 cannot be raised to a negative power.")
        return Decimal(0)
    integral = _is_integer(exponent)
    if base < 0 and not integral:
        raise ValueError(f"({_show(base)})^{_show(exponent)} is not a real number "
                         f"(a negative base needs a whole-number exponent).")
    if abs(base) == 1:
        return Decimal(1) if base > 0 or _is_even(exponent) else Decimal(-1)
    # log10 of the result, estimated with floats; a huge exponent becomes inf, which is
    # refused like any other out-of-range result.
    magnitude = float(abs(exponent)) * abs(float(abs(base).log10()))
    if magnitude > _MAX_MAGNITUDE:
        size = f"{math.ceil(magnitude):,}" if magnitude < 1e15 else "more than 10^15"
        if (abs(base) > 1) == (exponent > 0):
            raise ValueError(f"The result of this power is too large: it would have about {size} "
                             f"digits (the limit is {_MAX_MAGNITUDE:,}).")
        raise ValueError(f"The result of this power is too small: about 10^-{size} "
                         f"(the limit is 10^-{_MAX_MAGNITUDE:,}).")
    return base ** exponent


# ---- functions ------------------------------------------------------------------------

def _as_float(value: Decimal, name: str) -> float:
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name}() cannot take a number this large ({_show(value)}).")
    return result


def _from_float(value: float, name: str) -> Decimal:
    if not math.isfinite(value):
        raise ValueError(f"The result of {name}() is too large.")
    return +Decimal(repr(value))


def _whole(value: Decimal, what: str, low: int, high: int) -> int:
    """An integral Decimal within [low, high] as int; checked before converting."""
    if not _is_integer(value) or not low <= value <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high} (got {_show(value)}).")
    return int(value)


def _sqrt(x: Decimal) -> Decimal:
    if x < 0:
        raise ValueError(f"sqrt() of a negative number ({_show(x)}) is not a real number.")
    return x.sqrt()


def _round(x: Decimal, places: Decimal = Decimal(0)) -> Decimal:
    """Round half away from zero (what people expect: round(2.5) = 3)."""
    n = _whole(places, "The number of decimal places in round()", -100, 100)
    if x.is_zero() or x.as_tuple().exponent >= -n:
        return x  # already no finer than requested
    return x.quantize(Decimal(1).scaleb(-n), rounding=decimal.ROUND_HALF_UP)


def _positive(x: Decimal, name: str) -> Decimal:
    if x <= 0:
        raise ValueError(f"{name}() needs a number greater than 0 (got {_show(x)}).")
    return x


def _ln(x: Decimal) -> Decimal:
    return _positive(x, "ln").ln()


def _log(x: Decimal, base: Decimal | None = None) -> Decimal:
    _positive(x, "log")
    if base is None:
        return x.log10()
    if base <= 0 or base == 1:
        raise ValueError(f"The base of log() must be greater than 0 and not 1 (got {_show(base)}).")
    return x.ln() / base.ln()


def _log2(x: Decimal) -> Decimal:
    return _positive(x, "log2").ln() / Decimal(2).ln()


def _trig(name: str, function: Callable[[float], float]) -> Callable[[Decimal], Decimal]:
    """sin/cos/tan in radians, with float noise near zero cleaned up (sin(pi) is 0)."""
    def apply(x: Decimal) -> Decimal:
        angle = _as_float(x, name)
        if name == "tan" and abs(math.cos(angle)) < 1e-15:
            raise ValueError(f"tan() is undefined at {_show(x)} (an odd multiple of pi/2).")
        result = function(angle)
        return Decimal(0) if abs(result) < 1e-15 else _from_float(result, name)
    return apply


def _inverse_trig(name: str, function: Callable[[float], float],
                  bounded: bool) -> Callable[[Decimal], Decimal]:
    def apply(x: Decimal) -> Decimal:
        if bounded and not -1 <= x <= 1:
            raise ValueError(f"{name}() needs a number from -1 to 1 (got {_show(x)}).")
        return _from_float(function(_as_float(x, name)), name)
    return apply


def _factorial(x: Decimal) -> Decimal:
    n = _whole(x, "The argument of factorial()", 0, _MAX_FACTORIAL)
    return +Decimal(math.factorial(n))


# name -> (fewest arguments, most arguments or None for any number, implementation)
_FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., Decimal]]] = {
    "sqrt": (1, 1, _sqrt),
    "abs": (1, 1, abs),
    "round": (1, 2, _round),
    "floor": (1, 1, lambda x: x.to_integral_value(rounding=decimal.ROUND_FLOOR)),
    "ceil": (1, 1, lambda x: x.to_integral_value(rounding=decimal.ROUND_CEILING)),
    "exp": (1, 1, lambda x: x.exp()),
    "ln": (1, 1, _ln),
    "log": (1, 2, _log),
    "log2": (1, 1, _log2),
    "sin": (1, 1, _trig("sin", math.sin)),
    "cos": (1, 1, _trig("cos", math.cos)),
    "tan": (1, 1, _trig("tan", math.tan)),
    "asin": (1, 1, _inverse_trig("asin", math.asin, bounded=True)),
    "acos": (1, 1, _inverse_trig("acos", math.acos, bounded=True)),
    "atan": (1, 1, _inverse_trig("atan", math.atan, bounded=False)),
    "min": (1, None, lambda *xs: min(xs)),
    "max": (1, None, lambda *xs: max(xs)),
    "factorial": (1, 1, _factorial),
}
_CONSTANTS = ("pi", "e")


def _constant(name: str) -> Decimal:
    return +_PI if name == "pi" else Decimal(1).exp()


def _arity_text(name: str, low: int, high: int | None) -> str:
    if high is None:
        return f"{name}() takes at least {low} argument{'s' if low != 1 else ''}"
    if low == high:
        return f"{name}() takes {low} argument{'s' if low != 1 else ''}"
    return f"{name}() takes {low} or {high} arguments"


def _unknown_name(name: str) -> ValueError:
    known = [*_FUNCTIONS, *_CONSTANTS]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return ValueError(f"Unknown name '{name}'.{hint} Known functions: {', '.join(sorted(_FUNCTIONS))}; "
                      f"constants: pi, e.")


class _Parser:
    """Recursive descent over the tokens, evaluating as it goes.

    Grammar, loosest binding first::

        sum     := product (("+" | "-") product)*
        product := signed (("*" | "/" | "//" | mod | of) signed)*
        signed  := ("+" | "-") signed | power
        power   := postfix (("^" | "**") signed)?      right-associative, 2^-1 allowed
        postfix := primary pct*
        primary := number | constant | function "(" args ")" | "(" sum ")"
    """

    def __init__(self, tokens: list[_Token]):
        self._tokens = tokens
        self._index = 0
        self._depth = 0

    def parse(self) -> Decimal:
        value = self._sum()
        if self._peek().kind != "end":
            raise self._unexpected(self._peek())
        return value

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        tok = self._tokens[self._index]
        if tok.kind != "end":
            self._index += 1
        return tok

    def _at_op(self, *ops: str) -> bool:
        tok = self._peek()
        return tok.kind == "op" and tok.text in ops

    @contextmanager
    def _nested(self) -> Iterator[None]:
        # Bounds recursion: each level is a few Python frames, and hostile input like
        # "((((..." or "------1" must fail cleanly rather than hit RecursionError.
        self._depth += 1
        if self._depth > _MAX_DEPTH:
            raise ValueError(f"The expression is nested too deeply (more than {_MAX_DEPTH} levels).")
        try:
            yield
        finally:
            self._depth -= 1

    def _unexpected(self, tok: _Token) -> ValueError:
        if tok.kind == "end":
            return ValueError("The expression is incomplete: something is missing at the end.")
        previous = self._tokens[self._index - 1] if self._index else None
        hint = ""
        if previous is not None and previous.kind in ("num", "name", ")", "pct") \
                and tok.kind in ("num", "name", "("):
            hint = " An operator is missing: write 2*pi, not 2pi or 2 pi."
        return ValueError(f"Unexpected '{tok.text}' at position {tok.pos}.{hint}")

    def _expect(self, kind: str) -> None:
        if self._peek().kind != kind:
            raise self._unexpected(self._peek())
        self._advance()

    def _sum(self) -> Decimal:
        value = self._product()
        while self._at_op("+", "-"):
            op = self._advance().text
            right = self._product()
            value = value + right if op == "+" else value - right
        return value

    def _product(self) -> Decimal:
        value = self._signed()
        while True:
            tok = self._peek()
            if tok.kind == "op" and tok.text in ("*", "/", "//"):
                self._advance()
                right = self._signed()
                if tok.text == "*":
                    value = value * right
                elif tok.text == "/":
                    value = _divide(value, right)
                else:
                    value = _floor_divide(value, right)
            elif tok.kind in ("mod", "of"):
                self._advance()
                right = self._signed()
                value = _modulo(value, right) if tok.kind == "mod" else value * right
            else:
                return value

    def _signed(self) -> Decimal:
        if self._at_op("+", "-"):
            op = self._advance().text
            with self._nested():
                operand = self._signed()
            return -operand if op == "-" else +operand
        return self._power()

    def _power(self) -> Decimal:
        base = self._postfix()
        if self._at_op("^", "**"):
            self._advance()
            with self._nested():
                exponent = self._signed()  # recursion makes ^ right-associative
            return _power(base, exponent)
        return base

    def _postfix(self) -> Decimal:
        value = self._primary()
        while self._peek().kind == "pct":
            self._advance()
            value = value / 100
        return value

    def _primary(self) -> Decimal:
        tok = self._peek()
        if tok.kind not in ("num", "(", "name"):
            raise self._unexpected(tok)
        self._advance()
        if tok.kind == "num":
            return tok.value
        if tok.kind == "(":
            with self._nested():
                value = self._sum()
                self._expect(")")
            return value
        if self._peek().kind == "(":
            return self._call(tok)
        if tok.text in _CONSTANTS:
            return _constant(tok.text)
        if tok.text in _FUNCTIONS:
            raise ValueError(f"{tok.text} is a function: write {tok.text}(x).")
        raise _unknown_name(tok.text)

    def _call(self, name_tok: _Token) -> Decimal:
        name = name_tok.text
        if name in _CONSTANTS:
            raise ValueError(f"{name} is a constant, not a function.")
        if name not in _FUNCTIONS:
            raise _unknown_name(name)
        low, high, function = _FUNCTIONS[name]
        self._advance()  # "("
        args: list[Decimal] = []
        with self._nested():
            if self._peek().kind != ")":
                args.append(self._sum())
                while self._peek().kind == ",":
                    self._advance()
                    args.append(self._sum())
            self._expect(")")
        if len(args) < low or (high is not None and len(args) > high):
            raise ValueError(f"{_arity_text(name, low, high)} (got {len(args)}).")
        return function(*args)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the result; use it for any
    arithmetic instead of calculating in your head. Supports + - * / // (floor division)
    % (modulo) ^ or ** (power), parentheses, percentages ("17.5% of 2,340", "200 * 15%"),
    thousands separators (1,234,567.5), scientific notation (2.5e-3), the functions sqrt,
    abs, round(x) or round(x, places), floor, ceil, exp, ln, log(x) (base 10) or
    log(x, base), log2, sin, cos, tan, asin, acos, atan (radians), min, max, factorial,
    and the constants pi and e.

    Decimal arithmetic keeps + - * / exact (0.1 + 0.2 is 0.3); results show up to 15
    significant digits. There is no implicit multiplication: write 2*pi, not 2pi. A % sign
    followed by a number, name or "(" is modulo; otherwise it is a percent, so a negative
    divisor needs parentheses: 7 % (-3).

    Args:
        expression: The arithmetic to evaluate, e.g. "17.5% of 2,340" or "sqrt(2) * (3 + 4)^2".
    """
    if not isinstance(expression, str):
        raise ValueError('The expression must be text, like "2 + 2".')
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ValueError(f"The expression is too long ({len(expression):,} characters; "
                         f"the limit is {_MAX_EXPRESSION_CHARS}).")
    text = expression.translate(_UNICODE_OPERATORS)
    if not text.strip():
        raise ValueError("The expression is empty. Write something like 2 + 2.")
    with decimal.localcontext(_calc_context()):
        try:
            value = _Parser(_tokenize(text)).parse()
            return _show(value)
        except ZeroDivisionError:  # Decimal's DivisionByZero and DivisionUndefined (0/0)
            raise ValueError("Division by zero.") from None
        except (decimal.Overflow, OverflowError):
            raise ValueError(f"The result is too large (the limit is 10^{_MAX_MAGNITUDE:,}).") from None
        except decimal.InvalidOperation:
            raise ValueError("This calculation has no defined result.") from None
        except RecursionError:
            raise ValueError("The expression is nested too deeply.") from None


# --------------------------------------------------------------------------------------
# current_time
# --------------------------------------------------------------------------------------

def _clock() -> _dt.datetime:
    """The current moment as an aware UTC datetime. Tests replace this module attribute."""
    return _dt.datetime.now(_dt.timezone.utc)


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_CONTINENTS = ("Africa/", "America/", "Antarctica/", "Arctic/", "Asia/", "Atlantic/",
               "Australia/", "Europe/", "Indian/", "Pacific/")
# Abbreviations that name one zone without doubt. Ambiguous ones (CST, IST, BST) are
# left out on purpose: the error message then asks for an IANA name or a city.
_ZONE_ABBREVIATIONS = {
    "z": "UTC", "utc": "UTC", "gmt": "GMT",
    "pst": "America/Los_Angeles", "pdt": "America/Los_Angeles",
    "mdt": "America/Denver", "cdt": "America/Chicago", "edt": "America/New_York",
    "akst": "America/Anchorage", "akdt": "America/Anchorage",
    "cest": "Europe/Paris", "jst": "Asia/Tokyo", "kst": "Asia/Seoul",
    "aest": "Australia/Sydney", "aedt": "Australia/Sydney",
}
# Where a city is listed under two regions, the canonical one.
_PLACE_OVERRIDES = {"istanbul": "Europe/Istanbul", "nicosia": "Asia/Nicosia"}
_OFFSET = re.compile(r"(?:utc|gmt)?\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?")
_MAX_ZONE_CHARS = 100


def _zone_norm(text: str) -> str:
    """Case, accents, and the spelling of spaces do not matter: "são paulo" = "Sao_Paulo"."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"[\s_-]+", " ", plain.casefold()).strip()


@functools.lru_cache(maxsize=1)
def _zone_index() -> tuple[dict[str, str], dict[str, str]]:
    """Normalised full IANA names, and last components ("new york"), to IANA keys."""
    keys = [k for k in zoneinfo.available_timezones() if k not in ("localtime", "Factory")]

    def preference(key: str) -> tuple[bool, int, str]:
        # Continental names first; among those the deeper (canonical) one, e.g.
        # America/Argentina/Buenos_Aires over the link America/Buenos_Aires.
        return (not key.startswith(_CONTINENTS), -key.count("/"), key)

    by_name: dict[str, str] = {}
    by_place: dict[str, str] = {}
    for key in sorted(keys, key=preference):
        by_name.setdefault(_zone_norm(key), key)
        # Etc/GMT+5 means UTC-5 (POSIX sign); "GMT+5" is handled as an offset instead.
        if not key.startswith("Etc/"):
            by_place.setdefault(_zone_norm(key.rsplit("/", 1)[-1]), key)
    for place, key in _PLACE_OVERRIDES.items():
        if key in keys:
            by_place[place] = key
    return by_name, by_place


def _fixed_offset(text: str) -> tuple[_dt.tzinfo, str] | None:
    """"UTC+5", "GMT-03:30", "+09:00" as a fixed-offset zone, or None."""
    match = _OFFSET.fullmatch(text.strip().casefold())
    if not match:
        return None
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
    if hours > 14 or minutes >= 60:
        raise ValueError(f"'{text}' is not a valid UTC offset (from UTC-14:00 to UTC+14:00).")
    delta = _dt.timedelta(hours=hours, minutes=minutes) * (-1 if sign == "-" else 1)
    return _dt.timezone(delta), f"UTC{sign}{hours:02d}:{minutes:02d}"


def _find_zone(text: str) -> tuple[_dt.tzinfo, str]:
    """The zone and its display name for a name, city, abbreviation or offset."""
    if len(text) > _MAX_ZONE_CHARS or "\0" in text:
        raise ValueError("That is not a time zone name. Give an IANA name like Europe/Paris, "
                         "a city like Tokyo, or UTC.")
    offset = _fixed_offset(text)
    if offset:
        return offset
    by_name, by_place = _zone_index()
    norm = _zone_norm(text)
    key = _ZONE_ABBREVIATIONS.get(norm) or by_name.get(norm) or by_place.get(norm)
    if key is None:
        candidates = {**by_place, **by_name}
        close = difflib.get_close_matches(norm, list(candidates), n=3, cutoff=0.7)
        suggestions = list(dict.fromkeys(candidates[c] for c in close))
        hint = f" Did you mean {' or '.join(suggestions)}?" if suggestions else ""
        raise ValueError(f"Unknown time zone '{text}'.{hint} Give an IANA name like Europe/Paris, "
                         f"a city like Tokyo, UTC, or an offset like UTC+05:30; leave it empty "
                         f"for this computer's time zone.")
    try:
        return zoneinfo.ZoneInfo(key), key
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"The time zone data for {key} is missing on this computer.") from None


def _local_zone_key() -> str | None:
    """The IANA name of this computer's zone, when the system reveals it."""
    keys = zoneinfo.available_timezones()
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz in keys:
        return tz
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return None
    marker = "/zoneinfo/"
    if marker in target:
        name = target.split(marker, 1)[1]
        if name in keys:
            return name
    return None


def _local_zone() -> tuple[_dt.tzinfo, str]:
    """This computer's zone and its display name. Tests replace this module attribute."""
    key = _local_zone_key()
    if key:
        try:
            return zoneinfo.ZoneInfo(key), key
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    # No IANA name (e.g. on Windows): the current fixed offset and its abbreviation.
    zone = _dt.datetime.now().astimezone().tzinfo
    return zone, zone.tzname(None) or "local time"


def _offset_text(moment: _dt.datetime) -> str:
    seconds = int(moment.utcoffset().total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    return f"UTC{sign}{hours:02d}:{rest // 60:02d}"


def _find_zone_leniently(text: str) -> tuple[_dt.tzinfo, str]:
    """Like _find_zone, but also tries the parts of a decorated answer.

    Small models write things like "US/Eastern (New York)": the place in parentheses, or the
    text around them, is often a name that resolves when the whole does not.
    """
    try:
        return _find_zone(text)
    except ValueError as first:
        inside = re.findall(r"\(([^()]*)\)", text)
        outside = re.sub(r"\([^()]*\)", " ", text).strip()
        for candidate in [*inside, outside, *re.split(r"[,;]", outside)]:
            candidate = candidate.strip()
            if candidate and candidate != text:
                try:
                    return _find_zone(candidate)
                except ValueError:
                    continue
        raise first


def current_time(timezone: str = "") -> str:
    """Get the current date, time, weekday and UTC offset, in a given time zone or in the
    user's own. Use it whenever the answer depends on today's date or the time of day.

    Args:
        timezone: The city ("Tokyo") or IANA time zone the user asked about; empty for the user's own.
    """
    if not isinstance(timezone, str):
        raise ValueError('timezone must be text, like "Europe/Paris" or "Tokyo".')
    local = not timezone.strip()
    zone, label = _local_zone() if local else _find_zone_leniently(timezone)
    now = _clock().astimezone(zone)
    offset = _offset_text(now)
    text = f"{now:%Y-%m-%d %H:%M:%S} {_WEEKDAYS[now.weekday()]}, "
    text += offset if label == offset else f"{label} ({offset})"
    return text + (", the user's local time zone" if local else "")


# --------------------------------------------------------------------------------------
# convert_units
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Unit:
    symbol: str  # shown in results
    name: str  # shown when a name is ambiguous
    quantity: str
    factor: Fraction  # base units per unit
    offset: Fraction = Fraction(0)  # base = value * factor + offset (temperatures only)


_PSI = Fraction("0.45359237") * Fraction("9.80665") / Fraction("0.0254") ** 2

# quantity -> rows of (symbol, base units per unit, aliases separated by "|"[, offset]).
# Symbols and aliases match exactly first, then ignoring case when that is unambiguous;
# plurals ("miles", "inches") are found by dropping "s" / "es". metre/litre also match
# the American spelling.
_UNIT_TABLE: dict[str, list[tuple]] = {
    "length": [
        ("m", "1", "metre"),
        ("km", "1000", "kilometre"),
        ("cm", "0.01", "centimetre"),
        ("mm", "0.001", "millimetre"),
        ("µm", "1e-6", "micrometre|micron|um"),
        ("nm", "1e-9", "nanometre"),
        ("in", "0.0254", "inch"),
        ("ft", "0.3048", "foot|feet"),
        ("yd", "0.9144", "yard"),
        ("mi", "1609.344", "mile|statute mile"),
        ("nmi", "1852", "nautical mile|NM"),
        ("furlong", "201.168", "furlong|fur"),
        ("au", "149597870700", "astronomical unit|AU"),
        ("ly", "9460730472580800", "light year|lightyear"),
    ],
    "mass": [
        ("kg", "1", "kilogram|kilogramme|kilo"),
        ("g", "0.001", "gram|gramme"),
        ("mg", "1e-6", "milligram|milligramme"),
        ("µg", "1e-9", "microgram|ug|mcg"),
        ("t", "1000", "tonne|metric ton|metric tonne"),
        ("lb", "0.45359237", "pound|lbs|lbm"),
        ("oz", "0.028349523125", "ounce"),
        ("st", "6.35029318", "stone"),
        ("short ton", "907.18474", "US ton"),
        ("long ton", "1016.0469088", "UK ton|imperial ton"),
    ],
    "volume": [
        ("m³", "1", "cubic metre|cu m"),
        ("L", "0.001", "litre|l|ltr"),
        ("mL", "1e-6", "millilitre|ml|cm³|cc|cubic centimetre"),
        ("cL", "1e-5", "centilitre|cl"),
        ("dL", "1e-4", "decilitre|dl"),
        ("gal", "0.003785411784", "gallon|US gallon|US gal"),
        ("imp gal", "0.00454609", "imperial gallon|UK gallon|imp gallon"),
        ("qt", "0.000946352946", "quart|US quart"),
        ("pt", "0.000473176473", "pint|US pint"),
        ("cup", "0.0002365882365", "US cup"),
        ("fl oz", "0.0000295735295625", "fluid ounce|US fl oz|floz"),
        ("tbsp", "0.00001478676478125", "tablespoon|tbs"),
        ("tsp", "0.00000492892159375", "teaspoon"),
        ("ft³", "0.028316846592", "cubic foot|cubic feet|cu ft"),
        ("in³", "0.000016387064", "cubic inch|cu in"),
    ],
    "area": [
        ("m²", "1", "square metre|sq m|sqm"),
        ("km²", "1e6", "square kilometre|sq km"),
        ("cm²", "1e-4", "square centimetre|sq cm"),
        ("mm²", "1e-6", "square millimetre|sq mm"),
        ("ha", "10000", "hectare"),
        ("acre", "4046.8564224", "acre|ac"),
        ("ft²", "0.09290304", "square foot|square feet|sq ft|sqft"),
        ("in²", "0.00064516", "square inch|sq in"),
        ("yd²", "0.83612736", "square yard|sq yd"),
        ("mi²", "2589988.110336", "square mile|sq mi"),
    ],
    "speed": [
        ("m/s", "1", "metre per second"),
        ("km/h", Fraction(5, 18), "kilometre per hour|kilometres per hour|kph|kmh|kmph|km/hr"),
        ("mph", "0.44704", "mi/h|mile per hour|miles per hour"),
        ("kn", Fraction(1852, 3600), "knot|kt|kts"),
        ("ft/s", "0.3048", "foot per second|feet per second"),
    ],
    "time": [
        ("s", "1", "second|sec"),
        ("ms", "0.001", "millisecond|msec"),
        ("µs", "1e-6", "microsecond|us"),
        ("ns", "1e-9", "nanosecond"),
        ("min", "60", "minute"),
        ("h", "3600", "hour|hr"),
        ("d", "86400", "day"),
        ("wk", "604800", "week"),
        ("mo", "2629800", "month"),  # a twelfth of the year below
        ("yr", "31557600", "year|y"),  # Julian year: 365.25 days
    ],
    "data size": [
        ("bit", Fraction(1, 8), "bit|b"),
        ("B", "1", "byte|octet"),
        ("kB", "1e3", "kilobyte|KB"),
        ("MB", "1e6", "megabyte"),
        ("GB", "1e9", "gigabyte"),
        ("TB", "1e12", "terabyte"),
        ("PB", "1e15", "petabyte"),
        ("KiB", 2 ** 10, "kibibyte"),
        ("MiB", 2 ** 20, "mebibyte"),
        ("GiB", 2 ** 30, "gibibyte"),
        ("TiB", 2 ** 40, "tebibyte"),
        ("PiB", 2 ** 50, "pebibyte"),
        ("kbit", "125", "kilobit|Kb"),
        ("Mbit", "125e3", "megabit|Mb"),
        ("Gbit", "125e6", "gigabit|Gb"),
        ("Tbit", "125e9", "terabit|Tb"),
    ],
    "temperature": [
        ("°C", "1", "celsius|C|degC|deg C|centigrade|degree celsius|degrees celsius|degrees C",
         "273.15"),
        ("°F", Fraction(5, 9), "fahrenheit|F|degF|deg F|degree fahrenheit|degrees fahrenheit"
                               "|degrees F", Fraction("459.67") * Fraction(5, 9)),
        ("K", "1", "kelvin|°K|degK"),
    ],
    "energy": [
        ("J", "1", "joule"),
        ("kJ", "1e3", "kilojoule"),
        ("MJ", "1e6", "megajoule"),
        ("cal", "4.184", "calorie|small calorie"),
        ("kcal", "4184", "kilocalorie|Cal|food calorie|large calorie"),
        ("Wh", "3600", "watt hour"),
        ("kWh", "3.6e6", "kilowatt hour"),
        ("MWh", "3.6e9", "megawatt hour"),
        ("eV", "1.602176634e-19", "electronvolt|electron volt"),
        ("BTU", "1055.05585262", "british thermal unit|Btu"),
    ],
    "pressure": [
        ("Pa", "1", "pascal"),
        ("hPa", "100", "hectopascal"),
        ("kPa", "1e3", "kilopascal"),
        ("MPa", "1e6", "megapascal"),
        ("bar", "1e5", "bar"),
        ("mbar", "100", "millibar"),
        ("atm", "101325", "atmosphere|standard atmosphere"),
        ("psi", _PSI, "pound per square inch|pounds per square inch|lbf/in²"),
        ("mmHg", "133.322387415", "millimetre of mercury"),
        ("inHg", "3386.389", "inch of mercury|inches of mercury"),
        ("torr", Fraction(101325, 760), "torr|Torr"),
    ],
}
# Names that mean different units to different people: refuse rather than guess.
_AMBIGUOUS_UNITS = {
    "ton": "'ton' is ambiguous: use t (metric tonne, 1000 kg), short ton (US, 2000 lb) "
           "or long ton (UK, 2240 lb).",
}
_MAX_UNIT_CHARS = 60


def _unit_norm(text: str) -> str:
    """Spelling that does not matter: ² vs 2, µ vs u, "per" vs "/", dots, spacing."""
    text = unicodedata.normalize("NFKC", text).replace("μ", "u")  # NFKC maps µ to μ
    text = text.replace("^", "").replace(".", " ").replace("_", " ").replace("-", " ")
    text = re.sub(r"\s+per\s+", "/", f" {text} ").strip()
    text = re.sub(r"\s*/\s*", "/", text)
    text = re.sub(r"°\s+", "°", text)
    return re.sub(r"\s+", " ", text)


def _spellings(alias: str) -> list[str]:
    variants = [alias]
    for british, american in (("metre", "meter"), ("litre", "liter")):
        if british in alias:
            variants.append(alias.replace(british, american))
    return variants


@functools.lru_cache(maxsize=1)
def _unit_index() -> tuple[dict[str, _Unit], dict[str, list[_Unit]]]:
    """Exact spellings to units, and case-folded spellings to all units they could mean."""
    exact: dict[str, _Unit] = {}
    folded: dict[str, list[_Unit]] = {}
    for quantity, rows in _UNIT_TABLE.items():
        for symbol, factor, aliases, *offset in rows:
            names = aliases.split("|")
            unit = _Unit(symbol, names[0], quantity, Fraction(factor),
                         Fraction(offset[0]) if offset else Fraction(0))
            for alias in (symbol, *names):
                for spelling in _spellings(alias):
                    key = _unit_norm(spelling)
                    if exact.get(key, unit) is not unit:
                        raise RuntimeError(f"Unit spelling {key!r} is defined twice.")
                    exact[key] = unit
                    same = folded.setdefault(key.casefold(), [])
                    if unit not in same:
                        same.append(unit)
    return exact, folded


def _units_of(quantity: str) -> str:
    return ", ".join(symbol for symbol, *_ in _UNIT_TABLE[quantity])


def _lookup_unit(text: str) -> _Unit | None:
    """The unit a spelling names, None when unknown; ValueError when ambiguous."""
    exact, folded = _unit_index()
    key = _unit_norm(text)
    if key in exact:
        return exact[key]
    lowered = key.casefold()
    # Plurals only after the name itself failed: "ms" is a millisecond, not an "m".
    candidates = [lowered]
    if lowered.endswith("s") and len(lowered) > 2:
        candidates.append(lowered[:-1])  # miles -> mile, lbs -> lb
    if lowered.endswith("es") and len(lowered) > 3:
        candidates.append(lowered[:-2])  # inches -> inch
    for candidate in candidates:
        if candidate in _AMBIGUOUS_UNITS:
            raise ValueError(_AMBIGUOUS_UNITS[candidate])
        units = folded.get(candidate, [])
        if len(units) == 1:
            return units[0]
        if len(units) > 1:
            options = " or ".join(f"{u.symbol} ({u.name})" for u in units)
            raise ValueError(f"'{text}' is ambiguous: {options}? Unit symbols are case-sensitive "
                             f"here: B is byte and b is bit, M is mega and m is milli.")
    return None


def _unknown_unit(text: str, other: _Unit | None) -> ValueError:
    _, folded = _unit_index()
    close = difflib.get_close_matches(_unit_norm(text).casefold(), list(folded), n=3, cutoff=0.75)
    suggestions = list(dict.fromkeys(folded[c][0].symbol for c in close))
    message = f"Unknown unit '{text}'."
    if suggestions:
        message += f" Did you mean {' or '.join(suggestions)}?"
    if other is not None:
        message += f" Known {other.quantity} units: {_units_of(other.quantity)}."
    else:
        message += f" Supported quantities: {', '.join(_UNIT_TABLE)}."
    return ValueError(message)


def _resolve_unit(text: str, name: str) -> _Unit | None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name} must name a unit, like km, lb, °C or MB.")
    if len(text) > _MAX_UNIT_CHARS:
        raise ValueError(f"{name} is too long to be a unit name.")
    return _lookup_unit(text)


def _to_decimal(value: Fraction) -> Decimal:
    context = decimal.Context(prec=40)
    return context.divide(Decimal(value.numerator), Decimal(value.denominator))


def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a value between units of length, mass, volume, area, speed, time, data size,
    temperature, energy or pressure, for example 5 mi to km, 350 °F to °C, 2 GiB to MB,
    60 mph to km/h.

    Units are symbols or names, singular or plural ("km", "kilometres", "lb", "pounds",
    "°C", "celsius", "gal" = US gallon). Symbols are case-sensitive where case changes
    the meaning: MB is megabyte, Mb megabit; kB = 1000 bytes, KiB = 1024 bytes.

    Args:
        value: The number to convert.
        from_unit: The unit the value is in, e.g. "mi", "kg", "°F", "GiB".
        to_unit: The unit to convert to, e.g. "km", "lb", "°C", "MB".
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("value must be a finite number.")
    source = _resolve_unit(from_unit, "from_unit")
    target = _resolve_unit(to_unit, "to_unit")
    if source is None:
        raise _unknown_unit(from_unit, target)
    if target is None:
        raise _unknown_unit(to_unit, source)
    if source.quantity != target.quantity:
        raise ValueError(f"Cannot convert {source.symbol} ({source.quantity}) to {target.symbol} "
                         f"({target.quantity}): they measure different things.")
    # Through Fraction so that 5 mi = 8.04672 km exactly; repr() keeps the decimal
    # digits the caller wrote (0.1, not 0.1000000000000000055...).
    amount = Fraction(Decimal(repr(value))) if isinstance(value, float) else Fraction(value)
    base = amount * source.factor + source.offset
    if source.quantity == "temperature" and base < 0:
        raise ValueError(f"{_format_number(_to_decimal(amount), 10)} {source.symbol} is below "
                         f"absolute zero.")
    result = (base - target.offset) / target.factor
    return (f"{_format_number(_to_decimal(amount), 10)} {source.symbol} = "
            f"{_format_number(_to_decimal(result), 10)} {target.symbol}")


# --------------------------------------------------------------------------------------
# File access
# --------------------------------------------------------------------------------------

_NO_GRANT = ("No folder is shared with the assistant yet. Ask the user to grant a folder "
             "in the Tools panel.")
_MAX_PATH_CHARS = 4096
_MAX_LINES = 2000


def _printable(text: str, limit: int = 200) -> str:
    """Text safe to show in one line: undecodable bytes and control characters escaped.

    A file name containing a newline must not be able to fake entries in a listing.
    """
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return text if len(text) <= limit else text[:limit] + "…"


def _shown(path: Path) -> str:
    return _printable(str(path), limit=1000)


def _human_size(size: int) -> str:
    if size < 1000:
        return f"{size} byte{'s' if size != 1 else ''}"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}"
    return f"{size:.1f} TB"  # pragma: no cover - the loop always returns


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _split_lines(text: str) -> list[str]:
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start another
    return lines


def _looks_binary(data: bytes) -> bool:
    """NUL bytes, or many control characters, mean this is not text (UTF-16 aside)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\0" in data:
        return True
    sample = data[:8192]
    controls = sum(1 for byte in sample if byte < 32 and byte not in b"\t\n\r\f\v\x1b")
    return controls > len(sample) // 10


def _decode(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


@dataclass
class _Grant:
    given: Path  # as the user granted it (its name is offered as a path prefix)
    real: Path  # resolved: what containment is checked against


class FileAccess:
    """Read-only tools over the folders the user granted, and nothing else.

    Every path is resolved (following symbolic links) and must land inside a resolved
    granted folder; only regular files and folders are touched. Messages about a refused
    path repeat only what the caller wrote, never anything found outside the grant.
    ``granted`` is called on every use, so grants changed in the Tools panel apply at once.
    """

    def __init__(self, granted: Callable[[], list[Path]], *, max_entries: int = 500,
                 max_file_bytes: int = 2_000_000, max_chars: int = 40_000) -> None:
        """``granted`` returns the granted folders. The caps bound one answer: entries in a
        listing, the size of a readable file, and the characters of text returned."""
        self._granted = granted
        self._max_entries = max_entries
        self._max_file_bytes = max_file_bytes
        self._max_chars = max_chars

    # ---- the tools ---------------------------------------------------------------------

    def list_folder(self, path: str = "") -> str:
        """List the files and subfolders of a folder the user shared, with their sizes.
        Leave the path empty to see which folders are shared.

        Args:
            path: Folder to list: absolute, or relative to a shared folder (start with its name). Empty: the shared folders.
        """
        grants = self._grants()
        if not self._clean(path):
            return self._describe_grants(grants)
        real, info, shown = self._locate(path, grants)
        if not stat.S_ISDIR(info.st_mode):
            raise ValueError(f"'{shown}' is a file, not a folder; use read_file to read it.")
        roots = [g.real for g in grants]
        try:
            with os.scandir(real) as entries:
                described = [self._describe_entry(entry, roots) for entry in entries]
        except PermissionError:
            raise ValueError(f"Permission denied: cannot list '{shown}'.") from None
        if not described:
            return f"Folder {_shown(real)} is empty."
        described.sort(key=lambda item: (item[0], item[1].casefold()))
        folders = sum(1 for group, *_ in described if group == 0)
        files = sum(1 for group, *_ in described if group == 1)
        others = len(described) - folders - files
        summary = f"{folders} folder{'s' if folders != 1 else ''}, {files} file{'s' if files != 1 else ''}"
        if others:
            summary += f", {others} other"
        lines = [f"Folder {_shown(real)} ({summary}):"]
        lines += [text for _, _, text in described[:self._max_entries]]
        if len(described) > self._max_entries:
            lines.append(f"… and {len(described) - self._max_entries} more")
        return "\n".join(lines)

    def read_file(self, path: str, start_line: int = 1, max_lines: int = 400) -> str:
        """Read a text file from a folder the user shared, optionally a range of its lines.

        Args:
            path: The file: absolute, or relative to a shared folder (start with its name if several are shared).
            start_line: The first line to read, counting from 1.
            max_lines: How many lines to read at most (up to 2000).
        """
        if isinstance(start_line, bool) or not isinstance(start_line, int) or start_line < 1:
            raise ValueError("start_line must be a whole number, 1 or more.")
        if isinstance(max_lines, bool) or not isinstance(max_lines, int) \
                or not 1 <= max_lines <= _MAX_LINES:
            raise ValueError(f"max_lines must be a whole number from 1 to {_MAX_LINES}.")
        grants = self._grants()
        if not self._clean(path):
            raise ValueError("Give the path of a file to read; list_folder shows what is there.")
        real, info, shown = self._locate(path, grants)
        if stat.S_ISDIR(info.st_mode):
            raise ValueError(f"'{shown}' is a folder; use list_folder to see what it contains.")
        data = self._read_bytes(real, info, shown)
        if _looks_binary(data):
            raise ValueError(f"{_shown(real)} looks like a binary file (not text), so it cannot "
                             f"be read.")
        lines = _split_lines(_decode(data))
        if not lines:
            return f"File {_shown(real)} is empty."
        if start_line > len(lines):
            raise ValueError(f"start_line {start_line} is past the end: {_shown(real)} has "
                             f"{len(lines)} line{'s' if len(lines) != 1 else ''}.")
        return self._excerpt(real, lines, start_line, max_lines)

    # ---- paths -------------------------------------------------------------------------

    def _grants(self) -> list[_Grant]:
        """The granted folders that exist now, resolved; refuses when there are none."""
        given = list(self._granted() or [])
        if not given:
            raise ValueError(_NO_GRANT)
        grants: list[_Grant] = []
        for folder in given:
            try:
                real = Path(folder).expanduser().resolve(strict=True)
            except (OSError, RuntimeError):
                continue  # a folder that vanished or cannot be reached grants nothing
            if real.is_dir() and all(g.real != real for g in grants):
                grants.append(_Grant(Path(folder), real))
        if not grants:
            raise ValueError("None of the granted folders exists any more. Ask the user to grant "
                             "a folder in the Tools panel.")
        return grants

    @staticmethod
    def _clean(path: str) -> str:
        if not isinstance(path, str):
            raise ValueError("path must be text.")
        if "\0" in path:
            raise ValueError("The path contains a NUL character.")
        if len(path) > _MAX_PATH_CHARS:
            raise ValueError("The path is too long.")
        return path.strip()

    @staticmethod
    def _describe_grants(grants: list[_Grant]) -> str:
        lines = ["Shared folders (use a name below as the start of a relative path, or an "
                 "absolute path):"]
        lines += [f"{_printable(g.given.name or str(g.real))}/ ({_shown(g.real)})" for g in grants]
        return "\n".join(lines)

    def _candidates(self, text: str, grants: list[_Grant]) -> list[Path]:
        """Where a path may point, in order of preference."""
        given = Path(text)
        if given.is_absolute():
            return [given]
        if given.drive or given.root:  # Windows "C:foo" or "\\foo": neither relative nor absolute
            raise ValueError(f"'{_printable(text)}' is not a usable path; give an absolute path or "
                             f"one relative to a shared folder.")
        if text.startswith("~"):
            raise ValueError(f"'~' is not expanded; give an absolute path or one relative to a "
                             f"shared folder ({self._grant_names(grants)}).")
        candidates: list[Path] = []
        if len(grants) == 1:
            candidates.append(grants[0].real / given)
        if given.parts:
            first, rest = given.parts[0], given.parts[1:]
            for grant in grants:
                if first in (grant.given.name, grant.real.name):
                    candidates.append(grant.real.joinpath(*rest))
        if not candidates:
            raise ValueError(f"'{_printable(text)}' does not start with the name of a shared folder. "
                             f"Start it with one of: {self._grant_names(grants)}, or give an "
                             f"absolute path.")
        return candidates

    @staticmethod
    def _grant_names(grants: list[_Grant]) -> str:
        return ", ".join(_printable(g.given.name or str(g.real)) for g in grants)

    def _locate(self, path: str, grants: list[_Grant]) -> tuple[Path, os.stat_result, str]:
        """The real path inside a grant, its stat, and the path as the caller wrote it.

        Containment is decided before existence, so the answer for a path outside the grant
        is the same whether or not something exists there.
        """
        text = self._clean(path)
        shown = _printable(text)
        roots = [g.real for g in grants]
        inside: list[Path] = []
        unresolvable = False
        for candidate in self._candidates(text, grants):
            try:
                real = candidate.resolve(strict=False)
            except (OSError, RuntimeError):  # symbolic link loop, unreadable component
                unresolvable = True
                continue
            if _inside(real, roots):
                inside.append(real)
        if not inside and unresolvable:
            raise ValueError(f"Cannot follow the symbolic links in '{shown}' (a loop?).")
        if not inside:
            raise ValueError(f"'{shown}' is outside the folders the user shared "
                             f"({', '.join(_shown(r) for r in roots)}); only those can be read.")
        for real in inside:
            try:
                info = os.stat(real)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                raise ValueError(f"Cannot open '{shown}' (permission denied or a broken link).") from None
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                raise ValueError(f"'{shown}' is not a regular file or folder (a device, pipe or "
                                 f"socket), so it cannot be read.")
            return real, info, shown
        raise ValueError(f"There is no file or folder '{shown}' in the shared folders.")

    # ---- reading -----------------------------------------------------------------------

    def _read_bytes(self, real: Path, info: os.stat_result, shown: str) -> bytes:
        limit = self._max_file_bytes
        if info.st_size > limit:
            raise ValueError(f"{_shown(real)} is {_human_size(info.st_size)}, larger than the "
                             f"{_human_size(limit)} that can be read.")
        # O_NOFOLLOW and O_NONBLOCK: if the file was swapped for a link or a pipe since the
        # checks above, fail instead of escaping or waiting forever.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
            | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(real, flags)
        except OSError:
            raise ValueError(f"Cannot open '{shown}' (permission denied or it changed).") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ValueError(f"'{shown}' is not a regular file, so it cannot be read.")
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"{_shown(real)} is larger than the {_human_size(limit)} that can "
                             f"be read.")
        return data

    def _excerpt(self, real: Path, lines: list[str], start_line: int, max_lines: int) -> str:
        chosen: list[str] = []
        used = 0
        for line in lines[start_line - 1:start_line - 1 + max_lines]:
            if used + len(line) > self._max_chars:
                if not chosen:  # one enormous line: show its beginning rather than nothing
                    chosen.append(line[:self._max_chars] + " [line cut short]")
                break
            chosen.append(line)
            used += len(line) + 1
        last = start_line + len(chosen) - 1
        header = f"File {_shown(real)}, lines {start_line}-{last} of {len(lines)}"
        if last < len(lines):
            header += f" (more from start_line={last + 1})"
        return header + ":\n" + "\n".join(chosen)

    # ---- listing -----------------------------------------------------------------------

    @staticmethod
    def _describe_entry(entry: os.DirEntry, roots: list[Path]) -> tuple[int, str, str]:
        """(group, sort name, line): folders are group 0, files 1, anything else 2."""
        name = _printable(entry.name)
        try:
            if entry.is_symlink():
                return FileAccess._describe_link(entry, name, roots)
            if entry.is_dir(follow_symlinks=False):
                return 0, name, f"{name}/ (folder)"
            if entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                return 1, name, f"{name} (file, {_human_size(size)})"
            return 2, name, f"{name} (not a regular file; cannot be read)"
        except OSError:
            return 2, name, f"{name} (unreadable)"

    @staticmethod
    def _describe_link(entry: os.DirEntry, name: str, roots: list[Path]) -> tuple[int, str, str]:
        try:
            target = Path(entry.path).resolve(strict=False)
        except (OSError, RuntimeError):
            return 2, name, f"{name} (broken link)"
        if not _inside(target, roots):
            # Say nothing about the target: not its type, size, or whether it exists.
            return 2, name, f"{name} (link to outside the shared folders; cannot be read)"
        try:
            info = os.stat(target)
        except OSError:
            return 2, name, f"{name} (broken link)"
        if stat.S_ISDIR(info.st_mode):
            return 0, name, f"{name}/ (folder, link)"
        if stat.S_ISREG(info.st_mode):
            return 1, name, f"{name} (file, {_human_size(info.st_size)}, link)"
        return 2, name, f"{name} (link to something that is not a regular file)"


PURE_TOOLS = (calculator, current_time, convert_units)
