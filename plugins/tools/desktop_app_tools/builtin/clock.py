"""The ``current_time`` tool: the date, time, weekday and UTC offset in a time zone found
from an IANA name, a city, an unambiguous abbreviation or an offset, or in the user's own.

Like every module of this package it avoids ``from __future__ import annotations``:
see the package docstring.
"""

import datetime as _dt
import difflib
import functools
import os
import re
import unicodedata
import zoneinfo

__all__ = ["current_time"]

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
