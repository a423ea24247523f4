"""The ``convert_units`` tool: exact conversions between units of one quantity (length,
mass, volume, temperature, data size, ...), with the unit table and how spellings resolve.

Like every module of this package it avoids ``from __future__ import annotations``:
see the package docstring.
"""

import decimal
import difflib
import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from desktop_app_tools.builtin._numbers import format_number

__all__ = ["convert_units"]

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
        raise ValueError(f"{format_number(_to_decimal(amount), 10)} {source.symbol} is below "
                         f"absolute zero.")
    result = (base - target.offset) / target.factor
    return (f"{format_number(_to_decimal(amount), 10)} {source.symbol} = "
            f"{format_number(_to_decimal(result), 10)} {target.symbol}")
