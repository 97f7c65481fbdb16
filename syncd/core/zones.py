"""Where a lead may be, in time zones: its numbers' zones, narrowed by what the CRM says.

``phonenumbers`` places a number by prefix, and for some numbering plans its answer
is coarse or wrong (Indonesian mobiles all in Jakarta, Brazil's area 81 on Fernando
de Noronha, Chihuahua on Mazatlán's clock, Kaliningrad and Russian mobiles in a zone
that observes daylight saving). ``CORRECTIONS`` fixes those by prefix; a user's
``[[policy.zone_overrides]]`` adds more (longest prefix wins, the user's first).

A CRM time-zone column narrows the number's zones, never replaces them: a Hawaii
number with ``America/New_York`` in the CRM may be either place, so the window must
be open in both. Only IANA names are read (``EST`` is UTC-5 all summer; refused).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from syncd.core.phones import time_zones, zone_prefix_width

_RUSSIA = (
    "Europe/Kaliningrad", "Europe/Moscow", "Europe/Samara", "Asia/Yekaterinburg",
    "Asia/Omsk", "Asia/Novosibirsk", "Asia/Krasnoyarsk", "Asia/Irkutsk", "Asia/Yakutsk",
    "Asia/Vladivostok", "Asia/Magadan", "Asia/Srednekolymsk", "Asia/Kamchatka",
)  # fmt: skip

# E.164 prefix (digits, no "+") -> the zones the number may be in. Checked against the
# numbering plans: a mobile range that is national, or an area code the library puts in
# the wrong place. Each entry has a case in tests/test_zones.py.
CORRECTIONS: dict[str, tuple[str, ...]] = {
    # Indonesian mobiles (08xx) are national: any of the four zones
    "628": ("Asia/Jakarta", "Asia/Pontianak", "Asia/Makassar", "Asia/Jayapura"),
    # Brazil, area 81 (Recife, Pernambuco): UTC-3, not Fernando de Noronha's UTC-2
    "5581": ("America/Recife",),
    # Mexico: Chihuahua city (614) keeps UTC-6 since 2022; Ciudad Juárez (656) follows the US
    "52614": ("America/Chihuahua",),
    "52656": ("America/Ciudad_Juarez",),
    # Kaliningrad: UTC+2 all year (the library says Bucharest, which observes DST)
    "74012": ("Europe/Kaliningrad",),
    # Russian mobiles (+7 9xx) are national: Russia's zones, none with daylight saving
    "79": _RUSSIA,
    # Australian mobiles (04xx) are national: the mainland's and Tasmania's clocks (the
    # library adds Lord Howe, Eucla and the Indian Ocean territories, which held every
    # call until 13:00 in Sydney; add them with a zone override where they matter)
    "614": (
        "Australia/Perth", "Australia/Darwin", "Australia/Adelaide", "Australia/Brisbane",
        "Australia/Sydney",
    ),
}  # fmt: skip

# The old names the phone library still gives, and today's (tzdata's backward links):
# a CRM's Asia/Kolkata is the number's Asia/Calcutta, so it narrows it.
RENAMED: dict[str, str] = {
    "Asia/Calcutta": "Asia/Kolkata", "Asia/Katmandu": "Asia/Kathmandu",
    "Asia/Rangoon": "Asia/Yangon", "Asia/Saigon": "Asia/Ho_Chi_Minh",
    "Atlantic/Faeroe": "Atlantic/Faroe", "America/Godthab": "America/Nuuk",
    "America/Buenos_Aires": "America/Argentina/Buenos_Aires", "Africa/Asmera": "Africa/Asmara",
    "Pacific/Enderbury": "Pacific/Kanton", "Pacific/Ponape": "Pacific/Pohnpei",
    "Pacific/Truk": "Pacific/Chuuk",
}  # fmt: skip


def same_zone(a: str, b: str) -> bool:
    """Return True when two names are one zone (one of them an old name of the other)."""
    return RENAMED.get(a, a) == RENAMED.get(b, b)


class ZoneError(ValueError):
    """A time-zone name the gate cannot use, with what to write instead."""


@lru_cache(maxsize=1)
def _iana() -> frozenset[str]:
    return frozenset(available_timezones())


def check_zone(name: str) -> str:
    """Return an IANA zone name as given; raise ZoneError for anything else.

    Abbreviations (``EST``, ``IST``, ``CET``) are refused even where tzdata knows them:
    ``EST`` is UTC-5 all year, and ``IST`` is India, Ireland or Israel.
    """
    text = name.strip()
    if text in ("UTC", "Etc/UTC"):
        return text
    if "/" in text and text not in _iana():
        near = {z.lower(): z for z in _iana()}.get(text.lower())
        hint = f"; did you mean {near}?" if near else " (e.g. America/New_York, Asia/Kolkata)"
        raise ZoneError(f"time zone {text!r} is not an IANA zone name this system knows{hint}")
    if "/" not in text:
        raise ZoneError(
            f"time zone {text!r} is not an IANA zone name (e.g. America/New_York, "
            "Asia/Kolkata); abbreviations like EST or IST are ambiguous"
        )
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ZoneError(f"time zone {text!r} is not known to this system's tzdata") from None
    return text


# Numbers whose zones were found, remembered by this many leading digits at least (more
# when an override is longer): a push finds the zones of every lead it sends, and the
# numbers of one country or area code share them (issue 27).
MEMO_DIGITS = 5
MEMO_SIZE = 50_000  # prefixes remembered at most per table


class ZoneTable:
    """The zones of numbers by prefix: the user's overrides, then ``CORRECTIONS``."""

    def __init__(self, overrides: Mapping[str, Sequence[str]] | None = None) -> None:
        table = dict(CORRECTIONS)
        table.update({p.lstrip("+"): tuple(z) for p, z in (overrides or {}).items()})
        self._table = table
        self._widths = sorted({len(p) for p in table}, reverse=True)
        # The answer of every number sharing a prefix this long, where the prefix decides
        # it: the table's prefixes are no longer, nor is the phone library's for its country.
        self._memo_width = max(MEMO_DIGITS, *self._widths)
        self._memo: dict[str, tuple[str, ...]] = {}

    def zones_of(self, e164: str) -> tuple[str, ...]:
        """Return the zones of one number (empty when nothing places it)."""
        digits = e164.lstrip("+")
        prefix = digits[: self._memo_width]
        found = self._memo.get(prefix)
        if found is not None:
            return found
        found = self._zones_of(e164, digits)
        if len(self._memo) < MEMO_SIZE and self._decides(e164, digits):
            self._memo[prefix] = found
        return found

    def _decides(self, e164: str, digits: str) -> bool:
        """Return True when the memo's prefix of ``digits`` decides its zones (never for a
        number no longer than it: a longer one may share its digits, not its zones)."""
        if len(digits) <= self._memo_width:
            return False
        try:
            return zone_prefix_width(e164) <= self._memo_width
        except Exception:
            return False

    def _zones_of(self, e164: str, digits: str) -> tuple[str, ...]:
        for width in self._widths:
            found = self._table.get(digits[:width])
            if found is not None:
                return found
        try:
            return time_zones(e164)
        except Exception:  # an unparsable stored number: no zone, not a crash
            return ()


DEFAULT_TABLE = ZoneTable()


def zone_table(overrides: Iterable[tuple[str, Sequence[str]]]) -> ZoneTable:
    """Return the table of a policy's ``zone_overrides`` ((prefix, zones) pairs)."""
    pairs = tuple((prefix, tuple(zones)) for prefix, zones in overrides)
    return _table(pairs) if pairs else DEFAULT_TABLE


@lru_cache(maxsize=32)
def _table(pairs: tuple[tuple[str, tuple[str, ...]], ...]) -> ZoneTable:
    return ZoneTable(dict(pairs))


def possible_zones(
    numbers: str | Iterable[str],
    hint: str,
    fallback: str,
    table: ZoneTable = DEFAULT_TABLE,
) -> tuple[str, ...]:
    """Return every zone the window must be open in to call any of a lead's numbers.

    Per number: its zones, narrowed to the CRM's zone when that is one of them, or
    joined by it when it is not (the lead may be in either place). Over all numbers
    the dialer may ring: the union. No zone from any number: the CRM's, else
    ``fallback`` (the route's zone).
    """
    if isinstance(numbers, str):
        numbers = (numbers,)
    valid_hint = ""
    if hint:
        try:
            valid_hint = check_zone(hint)
        except ZoneError:
            valid_hint = ""  # refused when the row was read; an old stored lead: ignored
    found: list[str] = []
    for number in numbers:
        if not number:
            continue
        zones = table.zones_of(number)
        if not zones:
            continue
        same = [z for z in zones if same_zone(z, valid_hint)] if valid_hint else []
        if same:
            zones = (same[0],)
        elif valid_hint:
            zones = (*zones, valid_hint)
        found += [z for z in zones if z not in found]
    if found:
        return tuple(found)
    return (valid_hint or fallback,)
