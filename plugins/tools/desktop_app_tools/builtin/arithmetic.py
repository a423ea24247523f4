"""The ``calculator`` tool: a safe evaluator for arithmetic expressions in exact Decimal
arithmetic, with percentages, thousands separators and a fixed set of functions.

It tokenizes and parses the expression itself and never evaluates Python code.

Like every module of this package it avoids ``from __future__ import annotations``:
see the package docstring.
"""

import decimal
import difflib
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import NamedTuple

from desktop_app_tools.builtin._numbers import format_number

__all__ = ["calculator"]

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
    return format_number(value, _SHOWN_DIGITS)


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
