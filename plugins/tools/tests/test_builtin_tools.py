"""The built-in tools: calculator, current_time, convert_units and FileAccess."""

import ast
import datetime as dt
import inspect
import os
import re
import sys
import time
import typing
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from desktop_app_tools import builtin
from desktop_app_tools.builtin import PURE_TOOLS, FileAccess, calculator, convert_units, current_time
from desktop_app_tools.builtin import clock as clock_module
from desktop_app_tools.builtin import units as units_module

# ======================================================================================
# Tool signatures: what the schema builder relies on
# ======================================================================================

ALLOWED_TYPES = {str, int, float, bool}


def _tools():
    access = FileAccess(lambda: [])
    return [calculator, current_time, convert_units, access.list_folder, access.read_file]


def _documented_args(doc: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    lines = doc.splitlines()
    start = lines.index("Args:") + 1
    args: dict[str, str] = {}
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break  # next section
        match = re.match(r"^ {4}(\w+): (.+)$", line)
        if match:
            args[match.group(1)] = match.group(2)
    return args


@pytest.mark.parametrize("tool", _tools(), ids=lambda t: t.__name__)
def test_tools_have_schema_friendly_signatures_and_docstrings(tool):
    signature = inspect.signature(tool)
    hints = typing.get_type_hints(tool)
    assert hints.pop("return") is str
    params = list(signature.parameters.values())
    assert params, "every tool takes at least one argument"
    for param in params:
        assert param.kind is param.POSITIONAL_OR_KEYWORD
        hint = hints[param.name]
        assert hint in ALLOWED_TYPES or typing.get_origin(hint) is typing.Literal, (param.name, hint)
        if param.default is not param.empty:
            assert isinstance(param.default, hint)
    doc = inspect.getdoc(tool)
    first_paragraph = doc.split("\n\n")[0]
    assert len(first_paragraph) > 30 and "Args:" not in first_paragraph
    documented = _documented_args(doc)
    assert list(documented) == [p.name for p in params]
    assert all(len(text) > 5 for text in documented.values())


def test_exports():
    assert PURE_TOOLS == (calculator, current_time, convert_units)
    assert set(builtin.__all__) == {"calculator", "current_time", "convert_units", "FileAccess",
                                    "PURE_TOOLS"}
    assert "FileAccess" not in [t.__name__ for t in PURE_TOOLS]


def _package_modules() -> list[Path]:
    """The source files of the builtin package: every tool family's module."""
    return sorted(Path(builtin.__file__).parent.glob("*.py"))


@pytest.mark.parametrize("module", _package_modules(), ids=lambda path: path.name)
def test_module_never_evaluates_code(module):
    tree = ast.parse(module.read_text(encoding="utf-8"))
    forbidden = {"eval", "exec", "compile", "literal_eval", "__import__"}
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
             and node.attr in {"literal_eval", "eval", "exec"}}
    assert not used & forbidden


@pytest.mark.parametrize("module", _package_modules(), ids=lambda path: path.name)
def test_module_uses_only_the_standard_library(module):
    tree = ast.parse(module.read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.module.startswith("desktop_app_tools.builtin."):
            modules.add(node.module.split(".")[0])
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)


# ======================================================================================
# calculator
# ======================================================================================

CORRECT = [
    # precedence and associativity
    ("1 + 2 * 3", "7"),
    ("(1 + 2) * 3", "9"),
    ("10 - 4 - 3", "3"),
    ("100 / 10 / 5", "2"),
    ("2 ^ 3 ^ 2", "512"),
    ("2 ** 3 ** 2", "512"),
    ("(2 ^ 3) ^ 2", "64"),
    ("-2 ^ 2", "-4"),
    ("(-2) ^ 2", "4"),
    ("2 ^ -1", "0.5"),
    ("-2 ^ -2", "-0.25"),
    ("2 * -3", "-6"),
    ("5 - -3", "8"),
    ("--3", "3"),
    ("+4", "4"),
    ("2 + 3 * 4 ^ 2 / 8", "8"),
    ("0 ^ 0", "1"),
    ("4 ^ 0.5", "2"),
    ("(-8) ^ 3", "-512"),
    ("(-1) ^ 1001", "-1"),
    # exact decimal arithmetic
    ("0.1 + 0.2", "0.3"),
    ("1 - 0.9", "0.1"),
    ("0.1 * 3", "0.3"),
    ("10 / 4", "2.5"),
    ("1 / 3", "0.333333333333333"),
    ("2 / 3", "0.666666666666667"),
    ("1 / 3 * 3", "1"),
    ("1.10 * 3", "3.3"),
    # floor division and modulo follow Python's signs
    ("7 // 2", "3"),
    ("-7 // 2", "-4"),
    ("7.5 // 2", "3"),
    ("7 % 3", "1"),
    ("-7 % 3", "2"),
    ("7 % (-3)", "-2"),
    ("7 % -3", "-2.93"),  # % before a sign is a percent: 7% - 3; a negative divisor needs ( )
    ("5.5 % 2", "1.5"),
    ("10 % (3)", "1"),
    ("10 %3", "1"),
    # percent
    ("50%", "0.5"),
    ("1.5%", "0.015"),
    ("17.5% of 2,340", "409.5"),
    ("17.5 % of 2340", "409.5"),
    ("10% + 1", "1.1"),
    ("10% - 1", "-0.9"),
    ("200 * 15%", "30"),
    ("(10)%", "0.1"),
    ("50% of 20 + 10", "20"),
    ("100 % 7 + 5%", "2.05"),
    # thousands separators vs argument commas
    ("2,340", "2340"),
    ("2,340 + 1", "2341"),
    ("1,234,567.5 * 2", "2469135"),
    ("(1,000 + 1)", "1001"),
    ("max(1,234)", "234"),
    ("max(1, 2,345)", "345"),
    ("max((1,234), 5)", "1234"),
    ("min(3, 1, 2)", "1"),
    ("max(4)", "4"),
    ("round((1,234.567), 1)", "1234.6"),
    # unicode operators
    ("3 × 4", "12"),
    ("12 ÷ 4", "3"),
    ("5 − 7", "-2"),
    ("π", "3.14159265358979"),
    # functions and constants
    ("sqrt(16)", "4"),
    ("sqrt(2)", "1.4142135623731"),
    ("sqrt(0.25)", "0.5"),
    ("abs(-3.5)", "3.5"),
    ("round(2.5)", "3"),
    ("round(-2.5)", "-3"),
    ("round(3.14159, 2)", "3.14"),
    ("round(1234, -2)", "1200"),
    ("round(2.675, 2)", "2.68"),
    ("floor(-2.5)", "-3"),
    ("ceil(2.1)", "3"),
    ("exp(0)", "1"),
    ("exp(1)", "2.71828182845905"),
    ("ln(e)", "1"),
    ("log(1000)", "3"),
    ("log(8, 2)", "3"),
    ("log(81, 3)", "4"),
    ("log2(1024)", "10"),
    ("sin(0)", "0"),
    ("sin(pi)", "0"),
    ("cos(pi)", "-1"),
    ("cos(pi / 2)", "0"),
    ("sin(pi / 6)", "0.5"),
    ("tan(pi / 4)", "1"),
    ("asin(1)", "1.5707963267949"),
    ("acos(1)", "0"),
    ("atan(1) * 4", "3.14159265358979"),
    ("pi", "3.14159265358979"),
    ("e", "2.71828182845905"),
    ("PI * SQRT(4)", "6.28318530717959"),
    ("factorial(0)", "1"),
    ("factorial(5)", "120"),
    ("factorial(20)", "2432902008176640000"),
    ("sqrt(3^2 + 4^2)", "5"),
    ("max(2 ^ 10, 1000, -5)", "1024"),
    # number formats and magnitudes
    ("2 ^ 64", "18446744073709551616"),
    ("2 ^ 100", "1.26765060022823e+30"),
    ("1e3", "1000"),
    ("2.5e-3 * 2", "0.005"),
    ("1e-12", "1e-12"),
    ("0.000001234", "0.000001234"),
    (".5 + 1.", "1.5"),
    ("123456789012345678", "123456789012345678"),
    ("  2 +\t2  ", "4"),
    ("1 - 1", "0"),
    ("-0", "0"),
    ("0.5 ^ 1000", "9.33263618503219e-302"),
]


@pytest.mark.parametrize(("expression", "expected"), CORRECT)
def test_calculator_results(expression, expected):
    assert calculator(expression) == expected


def test_calculator_large_values_use_exponent_notation():
    assert calculator("factorial(1000)") == "4.02387260077094e+2567"
    assert calculator("10 ^ 9999") == "1e+9999"
    assert calculator("-(10 ^ 25)") == "-1e+25"


def test_calculator_result_can_be_fed_back():
    big = calculator("2 ^ 100")
    assert calculator(f"{big} / 2 ^ 100") == "1"


HOSTILE = [
    # resource exhaustion
    ("9**9**9**9", "too large"),
    ("9^9^9", "too large"),
    ("2^2^2^2^2", "too large"),
    ("10 ** 10 ** 10", "too large"),
    ("2 ^ 40000", "too large"),
    ("0.5 ^ 100000", "too small"),
    ("10 ^ 10001", "too large"),
    ("1e9999 * 1e9999", "too large"),
    ("exp(100000)", "too large"),
    ("1e99999", "too large"),
    ("1e1000000", "exponent"),
    ("(" * 5000, "too long"),
    ("(" * 999, "nested too deeply"),
    ("(" * 65 + "1" + ")" * 65, "nested too deeply"),
    ("-" * 500 + "1", "nested too deeply"),
    ("sqrt(" * 100 + "4" + ")" * 100, "nested too deeply"),
    ("2" + "^2" * 400, "nested too deeply"),
    ("1" * 100000, "too long"),
    ("1" * 999, "too long"),
    ("1" + "0" * 500 + " + 1", "too long"),
    ("factorial(10**6)", "factorial"),
    ("factorial(1001)", "factorial"),
    ("factorial(1e9999)", "factorial"),
    ("factorial(-1)", "factorial"),
    ("factorial(2.5)", "factorial"),
    ("round(1, 1000)", "decimal places"),
    ("round(1,234.567)", "decimal places"),  # in a call the comma separates arguments
    # code injection
    ("__import__('os')", "character"),
    ("__import__", "Unknown name"),
    ("().__class__", "character"),
    ("open('/etc/passwd').read()", "character"),
    ("[x for x in range(10)]", "character"),
    ("lambda: 1", "character"),
    ("os.system", "character"),
    ("1; 2", "character"),
    ("1 if 1 else 2", "Unexpected"),
    ("x", "Unknown name"),
    ("foo(1)", "Unknown name"),
    ("eval(1)", "Unknown name"),
    ("1 == 1", "Unexpected"),
    ("a\x00b", "character"),
    # arithmetic errors
    ("1 / 0", "Division by zero"),
    ("1 // 0", "Division by zero"),
    ("1 % 0", "Division by zero"),
    ("0 / 0", "Division by zero"),
    ("0 ^ -1", "Division by zero"),
    ("1 / (1 - 1)", "Division by zero"),
    ("sqrt(-1)", "not a real number"),
    ("(-8) ^ (1/3)", "not a real number"),
    ("ln(0)", "greater than 0"),
    ("log(-1)", "greater than 0"),
    ("log(5, 1)", "base"),
    ("log2(0)", "greater than 0"),
    ("asin(2)", "-1 to 1"),
    ("acos(-1.5)", "-1 to 1"),
    ("tan(pi / 2)", "undefined"),
    ("sin(1e400)", "this large"),
    # syntax
    ("", "empty"),
    ("   ", "empty"),
    ("1 +", "incomplete"),
    ("(1", "incomplete"),
    ("1)", r"Unexpected '\)' at position 2"),
    ("()", r"Unexpected '\)'"),
    ("2 3", "operator is missing"),
    ("2pi", "operator is missing"),
    ("2π", "operator is missing"),
    ("2(3)", "operator is missing"),
    ("1,23", "groups of exactly 3"),
    ("1,2345", "groups of exactly 3"),
    ("12,34,567", "groups of exactly 3"),
    ("1, 2", "Commas"),
    ("2,", "Commas"),
    ("max()", "at least 1"),
    ("round(1, 2, 3)", "1 or 2 arguments"),
    ("sqrt(1, 2)", "takes 1 argument"),
    ("sqrt", "is a function"),
    ("pi(2)", "constant"),
    ("1 of 2", "percentage"),
    ("of 2", "percentage"),
    ("1..2", "Unexpected '.2'"),
    ("* 2", "Unexpected '\\*'"),
    ("1 ** ", "incomplete"),
]


@pytest.mark.parametrize(("expression", "message"), HOSTILE, ids=lambda v: repr(v)[:40])
def test_calculator_rejects_hostile_and_bad_input_quickly(expression, message):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=f"(?i){message}"):
        calculator(expression)
    # Refused before any work: computed, the worst of these would take hours (or all memory).
    # The bound is loose so a slow machine on one core never trips it.
    assert time.perf_counter() - started < 5


def test_calculator_rejects_non_text():
    with pytest.raises(ValueError, match="text"):
        calculator(None)  # type: ignore[arg-type]


def test_calculator_errors_name_known_functions():
    with pytest.raises(ValueError) as info:
        calculator("sqr(4)")
    assert "Did you mean sqrt?" in str(info.value)
    assert "sqrt" in str(info.value) and "factorial" in str(info.value)


def test_calculator_error_messages_point_at_the_position():
    with pytest.raises(ValueError, match="position 5"):
        calculator("1 + * 2")


def test_calculator_leaves_the_global_decimal_context_alone():
    import decimal

    before = decimal.getcontext().copy()
    calculator("1 / 3")
    with pytest.raises(ValueError):
        calculator("1 / 0")
    after = decimal.getcontext()
    assert (after.prec, after.Emax, after.traps) == (before.prec, before.Emax, before.traps)


# ======================================================================================
# current_time
# ======================================================================================

WINTER = dt.datetime(2026, 11, 29, 20, 20, 42, tzinfo=dt.timezone.utc)
SUMMER = dt.datetime(2026, 7, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def clock(monkeypatch):
    """Set the tool's clock: ``clock(moment)``."""
    def set_clock(moment: dt.datetime) -> None:
        monkeypatch.setattr(clock_module, "_clock", lambda: moment)
    set_clock(WINTER)
    return set_clock


@pytest.mark.parametrize(("zone", "expected"), [
    ("Tokyo", "2026-11-30 05:20:42 Monday, Asia/Tokyo (UTC+09:00)"),
    ("Asia/Tokyo", "2026-11-30 05:20:42 Monday, Asia/Tokyo (UTC+09:00)"),
    ("asia/tokyo", "2026-11-30 05:20:42 Monday, Asia/Tokyo (UTC+09:00)"),
    ("new york", "2026-11-29 15:20:42 Sunday, America/New_York (UTC-05:00)"),
    ("New_York", "2026-11-29 15:20:42 Sunday, America/New_York (UTC-05:00)"),
    ("America/New York", "2026-11-29 15:20:42 Sunday, America/New_York (UTC-05:00)"),
    ("Sao Paulo", "2026-11-29 17:20:42 Sunday, America/Sao_Paulo (UTC-03:00)"),
    ("São Paulo", "2026-11-29 17:20:42 Sunday, America/Sao_Paulo (UTC-03:00)"),
    ("  LONDON ", "2026-11-29 20:20:42 Sunday, Europe/London (UTC+00:00)"),
    ("europe/paris", "2026-11-29 21:20:42 Sunday, Europe/Paris (UTC+01:00)"),
    ("Kolkata", "2026-11-30 01:50:42 Monday, Asia/Kolkata (UTC+05:30)"),
    ("Asia/Kathmandu", "2026-11-30 02:05:42 Monday, Asia/Kathmandu (UTC+05:45)"),
    ("UTC", "2026-11-29 20:20:42 Sunday, UTC (UTC+00:00)"),
    ("utc", "2026-11-29 20:20:42 Sunday, UTC (UTC+00:00)"),
    ("GMT", "2026-11-29 20:20:42 Sunday, GMT (UTC+00:00)"),
    ("Z", "2026-11-29 20:20:42 Sunday, UTC (UTC+00:00)"),
    ("PST", "2026-11-29 12:20:42 Sunday, America/Los_Angeles (UTC-08:00)"),
    ("UTC+05:30", "2026-11-30 01:50:42 Monday, UTC+05:30"),
    ("GMT-3", "2026-11-29 17:20:42 Sunday, UTC-03:00"),
    ("+09:00", "2026-11-30 05:20:42 Monday, UTC+09:00"),
    ("Etc/GMT+5", "2026-11-29 15:20:42 Sunday, Etc/GMT+5 (UTC-05:00)"),  # POSIX sign, as named
    ("Auckland", "2026-11-30 09:20:42 Monday, Pacific/Auckland (UTC+13:00)"),
])
def test_current_time_in_named_zones(clock, zone, expected):
    assert current_time(zone) == expected


def test_current_time_follows_daylight_saving(clock):
    clock(SUMMER)
    assert current_time("new york") == "2026-07-01 08:00:00 Wednesday, America/New_York (UTC-04:00)"
    assert current_time("Europe/Berlin") == "2026-07-01 14:00:00 Wednesday, Europe/Berlin (UTC+02:00)"


def test_current_time_empty_means_local_zone(clock, monkeypatch):
    monkeypatch.setattr(clock_module, "_local_zone", lambda: (ZoneInfo("Europe/Berlin"), "Europe/Berlin"))
    assert current_time("") == ("2026-11-29 21:20:42 Sunday, Europe/Berlin (UTC+01:00), "
                                "the user's local time zone")
    assert current_time("   ").startswith("2026-11-29 21:20:42 Sunday, Europe/Berlin")


@pytest.mark.skipif(sys.platform == "win32", reason="TZ names are POSIX")
def test_local_zone_reads_tz_variable(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    zone, name = clock_module._local_zone()
    assert name == "Asia/Tokyo"
    assert WINTER.astimezone(zone).hour == 5


def test_current_time_uses_the_real_clock_by_default():
    text = current_time("UTC")
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\w+day), UTC \(UTC\+00:00\)", text)
    assert match, text
    shown = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - shown).total_seconds()) < 5
    weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    assert match.group(2) == weekdays[shown.weekday()]
    local = current_time()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+day, .+ \(UTC[+-]\d\d:\d\d\), "
                        r"the user's local time zone", local), local


def test_current_time_suggests_close_matches(clock):
    with pytest.raises(ValueError, match="Unknown time zone 'Tokio'. Did you mean Asia/Tokyo"):
        current_time("Tokio")
    with pytest.raises(ValueError, match="America/Los_Angeles"):
        current_time("Los Angelos")


@pytest.mark.parametrize("zone", [
    "Nowhere/Land", "../../etc/passwd", "/etc/localtime", "localtime", "CST", "x" * 500,
    "Europe/Paris\x00", "UTC+15", "UTC+05:75",
])
def test_current_time_rejects_unknown_zones(clock, zone):
    with pytest.raises(ValueError):
        current_time(zone)


def test_current_time_unknown_zone_explains_what_to_give(clock):
    with pytest.raises(ValueError) as info:
        current_time("Atlantis")
    message = str(info.value)
    assert "Atlantis" in message and "Europe/Paris" in message and "UTC" in message


# ======================================================================================
# convert_units
# ======================================================================================

CONVERSIONS = [
    (5, "mi", "km", "5 mi = 8.04672 km"),
    (1, "km", "miles", "1 km = 0.6213711922 mi"),
    (1, "ft", "m", "1 ft = 0.3048 m"),
    (12, "inches", "ft", "12 in = 1 ft"),
    (3, "feet", "yards", "3 ft = 1 yd"),
    (1, "nautical mile", "m", "1 nmi = 1852 m"),
    (0.1, "m", "cm", "0.1 m = 10 cm"),
    (2.5, "µm", "nm", "2.5 µm = 2500 nm"),
    (1, "kg", "lb", "1 kg = 2.204622622 lb"),
    (16, "oz", "lb", "16 oz = 1 lb"),
    (2, "pounds", "kg", "2 lb = 0.90718474 kg"),
    (1, "stone", "lbs", "1 st = 14 lb"),
    (1, "short ton", "lb", "1 short ton = 2000 lb"),
    (1, "t", "kg", "1 t = 1000 kg"),
    (1, "gal", "l", "1 gal = 3.785411784 L"),
    (1, "imperial gallon", "litres", "1 imp gal = 4.54609 L"),
    (1, "L", "mL", "1 L = 1000 mL"),
    (1, "cup", "fl oz", "1 cup = 8 fl oz"),
    (1, "tbsp", "tsp", "1 tbsp = 3 tsp"),
    (1, "m³", "L", "1 m³ = 1000 L"),
    (1, "acre", "m2", "1 acre = 4046.856422 m²"),
    (1, "ha", "m²", "1 ha = 10000 m²"),
    (1, "sq mi", "km²", "1 mi² = 2.58998811 km²"),
    (1, "square feet", "square inches", "1 ft² = 144 in²"),
    (60, "mph", "km/h", "60 mph = 96.56064 km/h"),
    (100, "kph", "m/s", "100 km/h = 27.77777778 m/s"),
    (10, "m/s", "km/h", "10 m/s = 36 km/h"),
    (1, "knot", "km/h", "1 kn = 1.852 km/h"),
    (1, "h", "s", "1 h = 3600 s"),
    (1, "day", "min", "1 d = 1440 min"),
    (90, "minutes", "hours", "90 min = 1.5 h"),
    (1, "year", "days", "1 yr = 365.25 d"),
    (1, "KiB", "B", "1 KiB = 1024 B"),
    (1, "kB", "B", "1 kB = 1000 B"),
    (1, "KB", "bytes", "1 kB = 1000 B"),
    (1, "GiB", "MB", "1 GiB = 1073.741824 MB"),
    (1, "TiB", "B", "1 TiB = 1099511627776 B"),
    (1, "MB", "Mb", "1 MB = 8 Mbit"),
    (1, "Mb", "kB", "1 Mbit = 125 kB"),
    (8, "bits", "B", "8 bit = 1 B"),
    (1, "mib", "kib", "1 MiB = 1024 KiB"),
    (100, "°C", "F", "100 °C = 212 °F"),
    (32, "fahrenheit", "celsius", "32 °F = 0 °C"),
    (0, "K", "C", "0 K = -273.15 °C"),
    (-40, "C", "F", "-40 °C = -40 °F"),
    (98.6, "°F", "°C", "98.6 °F = 37 °C"),
    (20, "degrees Celsius", "kelvin", "20 °C = 293.15 K"),
    (350, "℉", "℃", "350 °F = 176.6666667 °C"),
    (1, "kWh", "J", "1 kWh = 3600000 J"),
    (1, "Cal", "kJ", "1 kcal = 4.184 kJ"),
    (1, "cal", "J", "1 cal = 4.184 J"),
    (1, "BTU", "kJ", "1 BTU = 1.055055853 kJ"),
    (1, "atm", "Pa", "1 atm = 101325 Pa"),
    (1, "bar", "psi", "1 bar = 14.50377377 psi"),
    (1013.25, "hPa", "atm", "1013.25 hPa = 1 atm"),
    (760, "mmHg", "kPa", "760 mmHg = 101.3250144 kPa"),
    (1, "km", "km", "1 km = 1 km"),
    (-3.5, "m", "ft", "-3.5 m = -11.48293963 ft"),
    (1e-20, "m", "km", "1e-20 m = 1e-23 km"),
    (1.5e30, "kg", "t", "1.5e+30 kg = 1.5e+27 t"),
    (0, "mph", "m/s", "0 mph = 0 m/s"),
]


@pytest.mark.parametrize(("value", "source", "target", "expected"), CONVERSIONS)
def test_convert_units(value, source, target, expected):
    assert convert_units(value, source, target) == expected


@pytest.mark.parametrize("spelling", [
    "km", "KM", "Km", "kilometre", "kilometres", "kilometer", "Kilometers", "kms",
])
def test_convert_units_accepts_aliases_and_plurals(spelling):
    assert convert_units(2, spelling, "m") == "2 km = 2000 m"


@pytest.mark.parametrize(("spelling", "symbol"), [
    ("mi", "mi"), ("miles", "mi"), ("Mile", "mi"), ("lb", "lb"), ("lbs", "lb"), ("pounds", "lb"),
    ("oz", "oz"), ("ounces", "oz"), ("l", "L"), ("litres", "L"), ("liters", "L"), ("gal", "gal"),
    ("gallons", "gal"), ("mph", "mph"), ("miles per hour", "mph"), ("km/h", "km/h"),
    ("km / h", "km/h"), ("kilometers per hour", "km/h"), ("°C", "°C"), ("celsius", "°C"),
    ("degC", "°C"), ("ft^2", "ft²"), ("sq. ft.", "ft²"), ("fl. oz.", "fl oz"), ("μs", "µs"),
    ("MS", "ms"), ("Pa", "Pa"), ("kwh", "kWh"), ("btu", "BTU"), ("hrs", "h"),
])
def test_unit_spellings(spelling, symbol):
    result = convert_units(1, spelling, spelling)
    assert result == f"1 {symbol} = 1 {symbol}"


def test_convert_units_refuses_different_quantities():
    with pytest.raises(ValueError, match=r"kg \(mass\) to km \(length\)"):
        convert_units(1, "kg", "km")
    with pytest.raises(ValueError, match="temperature.*data size"):
        convert_units(1, "°C", "MB")


def test_convert_units_unknown_unit_lists_known_units_of_the_other():
    with pytest.raises(ValueError) as info:
        convert_units(1, "furlongz", "km")
    message = str(info.value)
    assert message.startswith("Unknown unit 'furlongz'. Did you mean furlong?")
    assert "Known length units: m, km," in message
    with pytest.raises(ValueError, match="Known mass units: kg, g"):
        convert_units(1, "kg", "blorp")
    with pytest.raises(ValueError, match="Supported quantities: length, mass"):
        convert_units(1, "blorp", "blarg")


@pytest.mark.parametrize(("unit", "fragment"), [
    ("mb", "MB .megabyte. or Mbit .megabit."),
    ("gb", "GB .gigabyte. or Gbit .gigabit."),
    ("kb", "kB .kilobyte. or kbit .kilobit."),
    ("CAL", "cal .calorie. or kcal .kilocalorie."),
    ("Nm", "nm .nanometre. or nmi .nautical mile."),
    ("ton", "short ton"),
    ("tons", "metric tonne"),
])
def test_convert_units_refuses_to_guess_ambiguous_units(unit, fragment):
    with pytest.raises(ValueError, match=fragment):
        convert_units(1, unit, "kg")


def test_unit_case_rules_for_bits_and_bytes():
    assert convert_units(1, "B", "b") == "1 B = 8 bit"
    assert convert_units(1, "Gb", "MB") == "1 Gbit = 125 MB"
    assert convert_units(1, "GB", "MB") == "1 GB = 1000 MB"


def test_convert_units_below_absolute_zero():
    with pytest.raises(ValueError, match="below absolute zero"):
        convert_units(-500, "C", "F")
    with pytest.raises(ValueError, match="below absolute zero"):
        convert_units(-1, "K", "C")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "5", None, True])
def test_convert_units_needs_a_finite_number(value):
    with pytest.raises(ValueError, match="finite number"):
        convert_units(value, "m", "km")


@pytest.mark.parametrize(("source", "target"), [("", "m"), ("m", "   "), ("m" * 100, "m")])
def test_convert_units_needs_unit_names(source, target):
    with pytest.raises(ValueError):
        convert_units(1, source, target)


def test_unit_table_is_consistent():
    exact, folded = units_module._unit_index()
    for unit in exact.values():
        assert unit.factor > 0
        # every unit can be named by its own symbol
        assert convert_units(1, unit.symbol, unit.symbol) == f"1 {unit.symbol} = 1 {unit.symbol}"


# ======================================================================================
# FileAccess
# ======================================================================================

SECRET = "TOP-SECRET-CONTENT"


def _can_symlink(tmp_path: Path) -> bool:
    try:
        (tmp_path / "probe-link").symlink_to(tmp_path)
    except (OSError, NotImplementedError):
        return False
    (tmp_path / "probe-link").unlink()
    return True


@pytest.fixture
def tree(tmp_path):
    """A granted folder ``grant`` and, next to it, an ``outside`` folder with a secret."""
    grant = tmp_path / "grant"
    (grant / "docs" / "deep").mkdir(parents=True)
    (grant / "empty").mkdir()
    (grant / "notes.txt").write_text("".join(f"line {n}\n" for n in range(1, 11)), encoding="utf-8")
    (grant / "docs" / "a.txt").write_text("alpha\nbeta\n", encoding="utf-8")
    (grant / "Zeta.md").write_text("# zeta\n", encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET * 10, encoding="utf-8")
    return grant, outside


@pytest.fixture
def access(tree):
    return FileAccess(lambda: [tree[0]])


@pytest.fixture
def symlinks(tmp_path):
    if not _can_symlink(tmp_path):
        pytest.skip("symbolic links are not available")


def _refused(call, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert SECRET not in message
    return message


def test_list_granted_folders(tree, access):
    grant, _ = tree
    text = access.list_folder("")
    assert text.splitlines()[1:] == [f"grant/ ({grant.resolve()})"]


def test_list_folder_folders_first_with_sizes(tree, access):
    grant, _ = tree
    text = access.list_folder(".")
    lines = text.splitlines()
    assert lines[0] == f"Folder {grant.resolve()} (2 folders, 2 files):"
    assert lines[1:] == ["docs/ (folder)", "empty/ (folder)", "notes.txt (file, 71 bytes)",
                         "Zeta.md (file, 7 bytes)"]


def test_list_folder_paths(tree, access):
    grant, _ = tree
    expected = access.list_folder(".")
    assert access.list_folder(str(grant)) == expected  # absolute
    assert access.list_folder("grant") == expected  # the grant's own name
    assert access.list_folder(str(grant) + "/") == expected
    assert "a.txt (file, 11 bytes)" in access.list_folder("docs")
    assert "a.txt" in access.list_folder("grant/docs")
    assert "a.txt" in access.list_folder("docs/deep/..")  # .. that stays inside is fine
    assert access.list_folder("empty") == f"Folder {(grant / 'empty').resolve()} is empty."


def test_list_folder_caps_entries(tmp_path):
    for n in range(12):
        (tmp_path / f"f{n:02d}.txt").write_text("x")
    text = FileAccess(lambda: [tmp_path], max_entries=5).list_folder(".")
    lines = text.splitlines()
    assert lines[1:6] == [f"f{n:02d}.txt (file, 1 byte)" for n in range(5)]
    assert lines[6:] == ["… and 7 more"]


def test_list_folder_large_sizes_are_readable(tmp_path):
    with open(tmp_path / "big.bin", "wb") as handle:
        handle.truncate(2_500_000)
    assert "big.bin (file, 2.5 MB)" in FileAccess(lambda: [tmp_path]).list_folder(".")


@pytest.mark.skipif(sys.platform == "win32", reason="file names cannot contain newlines")
def test_list_folder_escapes_control_characters_in_names(tmp_path):
    (tmp_path / "evil\nnotes.txt (file, 1 byte)").write_text("x")
    text = FileAccess(lambda: [tmp_path]).list_folder(".")
    assert len(text.splitlines()) == 2
    assert "evil\\x0anotes.txt" in text


def test_list_folder_on_a_file_is_refused(access):
    assert "use read_file" in _refused(access.list_folder, "notes.txt")


def test_list_folder_missing(access):
    assert "no file or folder 'nope'" in _refused(access.list_folder, "nope")
    assert "no file or folder" in _refused(access.list_folder, "notes.txt/inner")


def test_read_file(tree, access):
    grant, _ = tree
    text = access.read_file("docs/a.txt")
    assert text == f"File {(grant / 'docs' / 'a.txt').resolve()}, lines 1-2 of 2:\nalpha\nbeta"
    assert access.read_file(str(grant / "docs" / "a.txt")) == text
    assert access.read_file("grant/docs/a.txt") == text


def test_read_file_line_ranges(tree, access):
    grant, _ = tree
    text = access.read_file("notes.txt", start_line=3, max_lines=2)
    header, *body = text.splitlines()
    assert header == f"File {(grant / 'notes.txt').resolve()}, lines 3-4 of 10 (more from start_line=5):"
    assert body == ["line 3", "line 4"]
    assert access.read_file("notes.txt", start_line=10).splitlines()[1:] == ["line 10"]
    assert access.read_file("notes.txt", max_lines=400).count("\n") == 10
    assert "past the end" in _refused(access.read_file, "notes.txt", start_line=11)


@pytest.mark.parametrize(("start_line", "max_lines"), [(0, 10), (-1, 10), (1, 0), (1, 2001), (1.5, 10)])
def test_read_file_checks_line_arguments(access, start_line, max_lines):
    _refused(access.read_file, "notes.txt", start_line=start_line, max_lines=max_lines)


def test_read_file_character_cap_stops_at_a_line(tmp_path):
    (tmp_path / "long.txt").write_text("".join(f"{n:019d}\n" for n in range(10)))
    text = FileAccess(lambda: [tmp_path], max_chars=50).read_file("long.txt")
    header, *body = text.splitlines()
    assert header.endswith("lines 1-2 of 10 (more from start_line=3):")
    assert len(body) == 2
    (tmp_path / "one.txt").write_text("x" * 200)
    one = FileAccess(lambda: [tmp_path], max_chars=50).read_file("one.txt")
    assert one.splitlines()[1] == "x" * 50 + " [line cut short]"


def test_read_file_line_endings_and_encodings(tmp_path):
    (tmp_path / "crlf.txt").write_bytes(b"one\r\ntwo\rthree\n")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 ok\n")
    (tmp_path / "bom.txt").write_bytes("\ufeffhello\n".encode("utf-8"))
    (tmp_path / "utf16.txt").write_bytes("hé\nthere\n".encode("utf-16"))
    (tmp_path / "empty.txt").write_bytes(b"")
    access = FileAccess(lambda: [tmp_path])
    assert access.read_file("crlf.txt").splitlines()[1:] == ["one", "two", "three"]
    assert access.read_file("bad.txt").splitlines()[1] == "caf\ufffd ok"
    assert access.read_file("bom.txt").splitlines()[1] == "hello"
    assert access.read_file("utf16.txt").splitlines()[1:] == ["hé", "there"]
    assert access.read_file("empty.txt") == f"File {(tmp_path / 'empty.txt').resolve()} is empty."


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"text then a NUL\x00",
    bytes(range(1, 32)) * 10,
])
def test_read_file_refuses_binary(tmp_path, content):
    (tmp_path / "data.bin").write_bytes(content)
    assert "binary" in _refused(FileAccess(lambda: [tmp_path]).read_file, "data.bin")


def test_read_file_size_cap(tmp_path):
    (tmp_path / "small.txt").write_text("x" * 100)
    (tmp_path / "large.txt").write_text("x" * 101)
    access = FileAccess(lambda: [tmp_path], max_file_bytes=100)
    assert access.read_file("small.txt").endswith("x" * 100)
    message = _refused(access.read_file, "large.txt")
    assert "101 bytes" in message and "100 bytes" in message


def test_read_file_on_a_folder_is_refused(access):
    assert "use list_folder" in _refused(access.read_file, "docs")
    assert "Give the path" in _refused(access.read_file, "")


@pytest.mark.parametrize("path", [
    "../outside/secret.txt",
    "docs/../../outside/secret.txt",
    "..",
    "../../../../../../../../etc/passwd",
    "docs/../..",
])
def test_dotdot_escapes_are_refused(access, path):
    assert "outside the folders the user shared" in _refused(access.read_file, path)
    assert "outside the folders the user shared" in _refused(access.list_folder, path)


def test_absolute_paths_elsewhere_are_refused(tree, access):
    _, outside = tree
    message = _refused(access.read_file, str(outside / "secret.txt"))
    assert "outside the folders the user shared" in message
    _refused(access.list_folder, str(outside))
    _refused(access.list_folder, "/")
    _refused(access.read_file, "/etc/passwd")


def test_name_rule_cannot_escape(tree, access):
    # With one grant, "grant/../outside" is tried both as a subfolder (missing, inside) and
    # through the grant's name (outside): neither reads the secret.
    message = _refused(access.read_file, "grant/../outside/secret.txt")
    assert "no file or folder" in message


def test_refusal_does_not_reveal_whether_an_outside_path_exists(tree, access):
    _, outside = tree
    existing = _refused(access.read_file, str(outside / "secret.txt"))
    missing = _refused(access.read_file, str(outside / "nothing.txt"))
    assert existing.replace("secret.txt", "X") == missing.replace("nothing.txt", "X")


@pytest.mark.parametrize(("path", "reason"), [
    ("~/secret.txt", "'~' is not expanded"),
    ("~", "'~' is not expanded"),
    ("notes\x00.txt", "NUL character"),
])
def test_home_expansion_and_nul_are_refused(access, path, reason):
    assert reason in _refused(access.read_file, path)
    assert reason in _refused(access.list_folder, path)


def test_symlink_to_outside_file_is_refused(tree, access, symlinks):
    grant, outside = tree
    (grant / "link.txt").symlink_to(outside / "secret.txt")
    message = _refused(access.read_file, "link.txt")
    assert "outside" in message and str(outside) not in message
    listing = access.list_folder(".")
    line = next(l for l in listing.splitlines() if l.startswith("link.txt"))
    assert line == "link.txt (link to outside the shared folders; cannot be read)"
    assert "secret" not in listing and str(len(SECRET * 10)) not in listing


def test_symlink_to_outside_folder_is_refused(tree, access, symlinks):
    grant, outside = tree
    (grant / "docs" / "escape").symlink_to(outside, target_is_directory=True)
    _refused(access.list_folder, "docs/escape")
    _refused(access.read_file, "docs/escape/secret.txt")
    _refused(access.read_file, str(grant / "docs" / "escape" / "secret.txt"))
    assert "escape (link to outside" in access.list_folder("docs")


def test_broken_symlink_pointing_outside_looks_like_any_outside_link(tree, access, symlinks):
    grant, outside = tree
    (grant / "gone").symlink_to(outside / "does-not-exist")
    (grant / "there").symlink_to(outside / "secret.txt")
    listing = access.list_folder(".")
    assert "gone (link to outside the shared folders; cannot be read)" in listing
    assert "there (link to outside the shared folders; cannot be read)" in listing


def test_symlink_inside_the_grant_is_allowed(tree, access, symlinks):
    grant, _ = tree
    (grant / "alias.txt").symlink_to(grant / "docs" / "a.txt")
    (grant / "shortcut").symlink_to(grant / "docs", target_is_directory=True)
    assert access.read_file("alias.txt").endswith("alpha\nbeta")
    assert access.read_file("shortcut/a.txt").endswith("alpha\nbeta")
    assert "a.txt (file, 11 bytes)" in access.list_folder("shortcut")
    listing = access.list_folder(".")
    assert "alias.txt (file, 11 bytes, link)" in listing
    assert "shortcut/ (folder, link)" in listing


def test_symlink_loop_is_refused(tree, access, symlinks):
    grant, _ = tree
    (grant / "loop").symlink_to(grant / "loop")
    started = time.perf_counter()
    _refused(access.read_file, "loop")
    assert time.perf_counter() - started < 5  # no runaway resolving (loose: slow machines pass)


def test_granted_folder_reached_through_a_symlink(tmp_path, tree, symlinks):
    grant, _ = tree
    link = tmp_path / "via-link"
    link.symlink_to(grant, target_is_directory=True)
    access = FileAccess(lambda: [link])
    assert access.read_file("docs/a.txt").endswith("alpha\nbeta")
    assert access.read_file("via-link/docs/a.txt").endswith("alpha\nbeta")
    assert access.read_file(str(link / "notes.txt")).endswith("line 9\nline 10")
    _refused(access.read_file, "../outside/secret.txt")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.timeout(60)  # opening the pipe would block for ever: this is what catches it
def test_fifo_is_refused_without_blocking(tree, access):
    grant, _ = tree
    os.mkfifo(grant / "pipe")
    started = time.perf_counter()
    message = _refused(access.read_file, "pipe")
    assert "not a regular file" in message
    assert "not a regular file" in _refused(access.list_folder, "pipe")
    assert time.perf_counter() - started < 5  # refused without waiting for a writer (loose bound)
    assert "pipe (not a regular file; cannot be read)" in access.list_folder(".")


def test_device_files_are_refused(tmp_path, symlinks):
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    (tmp_path / "null").symlink_to("/dev/null")
    access = FileAccess(lambda: [tmp_path, Path("/dev")])
    assert "not a regular file" in _refused(access.read_file, "/dev/null")
    assert "not a regular file" in _refused(access.read_file, str(tmp_path / "null"))


@pytest.mark.parametrize("granted", [[], None])
def test_nothing_granted(granted):
    access = FileAccess(lambda: granted)
    for call, args in ((access.list_folder, ("",)), (access.list_folder, ("x",)),
                       (access.read_file, ("x.txt",))):
        message = _refused(call, *args)
        assert "Tools panel" in message and "grant" in message


def test_granted_folder_that_no_longer_exists(tmp_path):
    access = FileAccess(lambda: [tmp_path / "gone"])
    assert "Tools panel" in _refused(access.list_folder, "")


def test_grants_are_read_on_every_call(tree):
    grant, outside = tree
    granted = [grant]
    access = FileAccess(lambda: list(granted))
    _refused(access.read_file, str(outside / "secret.txt"))
    granted.append(outside)
    assert SECRET in access.read_file(str(outside / "secret.txt"))
    granted.clear()
    assert "Tools panel" in _refused(access.read_file, "notes.txt")


@pytest.fixture
def two_grants(tmp_path):
    notes = tmp_path / "a" / "notes"
    photos = tmp_path / "b" / "photos"
    notes.mkdir(parents=True)
    photos.mkdir(parents=True)
    (notes / "todo.txt").write_text("buy milk\n")
    (photos / "list.txt").write_text("beach.jpg\n")
    (photos / "sub").mkdir()
    return notes, photos, FileAccess(lambda: [notes, photos])


def test_two_grants_use_the_folder_name(two_grants):
    notes, photos, access = two_grants
    assert access.read_file("notes/todo.txt").endswith("buy milk")
    assert access.read_file("photos/list.txt").endswith("beach.jpg")
    assert access.read_file(str(notes / "todo.txt")).endswith("buy milk")
    assert access.list_folder("photos").splitlines()[1:] == ["sub/ (folder)", "list.txt (file, 10 bytes)"]
    listing = access.list_folder("")
    assert f"notes/ ({notes.resolve()})" in listing and f"photos/ ({photos.resolve()})" in listing


def test_two_grants_need_the_folder_name(two_grants):
    _, _, access = two_grants
    message = _refused(access.read_file, "todo.txt")
    assert "notes, photos" in message
    _refused(access.list_folder, ".")
    assert "no file or folder" in _refused(access.read_file, "notes/list.txt")
    _refused(access.read_file, "notes/../secret.txt")
    # The real path decides, not the spelling: this lands inside the other grant.
    assert access.read_file("notes/../../b/photos/list.txt").endswith("beach.jpg")


def test_one_grant_prefers_a_real_subfolder_over_the_name_rule(tmp_path):
    root = tmp_path / "notes"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "x.txt").write_text("inner\n")
    (root / "x.txt").write_text("outer\n")
    access = FileAccess(lambda: [root])
    assert access.read_file("notes/x.txt").endswith("inner")
    assert access.read_file("x.txt").endswith("outer")
