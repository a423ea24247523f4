"""Number formatting shared by the calculator and the unit converter."""

import decimal
from decimal import Decimal

__all__ = ["format_number"]

# Integers up to this many digits are shown in full (2^64, factorial(20)); beyond it,
# and for fractions, results are rounded to a fixed number of significant digits.
_EXACT_INTEGER_DIGITS = 21


def format_number(value: Decimal, digits: int) -> str:
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
