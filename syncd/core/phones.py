"""Phone numbers: parse any written form to E.164, and format E.164 for a trunk.

Pure functions over `phonenumbers`; the one place where a lead's phone is validated.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import phonenumbers


class PhoneError(ValueError):
    """The text is not a valid phone number for the region."""


# ---------------------------------------------------------------------------
# phones


_SCIENTIFIC = re.compile(r"^\+?(\d)(?:[.,](\d+))?[eE]\+?(\d{1,2})$")
_POINT_ZERO = re.compile(r"^(\+?\d{6,})[.,]0+$")


def unmangle(text: str) -> str:
    """Return a number a spreadsheet rewrote as it was, or raise PhoneError if digits were lost.

    ``8.123456789E+09`` → ``8123456789``; ``8123456789.0`` → ``8123456789``;
    ``9.18123E+11`` lost its last six digits: refused, never guessed.
    """
    if (m := _POINT_ZERO.match(text)) is not None:
        return m.group(1)
    m = _SCIENTIFIC.match(text)
    if m is None:
        return text
    first, fraction, exponent = m.group(1), m.group(2) or "", int(m.group(3))
    if len(fraction) < exponent:
        raise PhoneError(
            f"phone {text!r} was turned into a rounded number by a spreadsheet (digits lost): "
            "export the column as text"
        )
    if len(fraction) > exponent:
        raise PhoneError(f"phone {text!r} is not a whole number")
    return first + fraction


def to_e164(text: str, region: str) -> str:
    """Return ``text`` as an E.164 number, or raise PhoneError saying why not."""
    raw = unmangle(text.strip())
    if not raw:
        raise PhoneError("empty phone")
    if raw.startswith("00") and not raw.startswith("000"):
        raw = "+" + raw[2:]
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise PhoneError(f"invalid phone {text.strip()!r}: {exc._msg}") from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneError(f"invalid phone {text.strip()!r} for region {region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True, slots=True)
class DialFormat:
    style: str  # e164 | 00 | national | prefix
    prefix: str = ""


def parse_dial_format(value: str) -> DialFormat:
    """Return the parsed ``dial_format`` setting or raise ValueError naming the choices."""
    if value in ("e164", "00", "national"):
        return DialFormat(value)
    if value.startswith("prefix:") and re.fullmatch(r"[0-9*#]{0,8}", value[7:]):
        return DialFormat("prefix", value[7:])
    raise ValueError(
        "must be one of e164, 00, national, prefix:<digits> (e.g. prefix:011), got " + repr(value)
    )


def format_dial(e164: str, fmt: DialFormat, region: str) -> str:
    """Return the dial string a trunk expects for an E.164 number.

    Jodo's document: GSM gateways take ``+``, telco trunks need ``00`` or a
    domestic prefix instead.
    """
    if fmt.style == "e164":
        return e164
    if fmt.style == "00":
        return "00" + e164[1:]
    if fmt.style == "prefix":
        return fmt.prefix + e164[1:]
    number = phonenumbers.parse(e164, None)
    # Domestic numbers in national form (with the trunk prefix); foreign ones with
    # the region's international access code.
    dial = phonenumbers.format_out_of_country_calling_number(number, region)
    return re.sub(r"[^0-9+*#]", "", dial)


# ---------------------------------------------------------------------------
# mapping


# ---------------------------------------------------------------------------
# what kind of number it is


def number_kind(e164: str) -> str:
    """Return the number's type as ``phonenumbers`` names it: ``mobile``, ``toll_free``…"""
    kind = phonenumbers.number_type(phonenumbers.parse(e164, None))
    for name, value in vars(phonenumbers.PhoneNumberType).items():
        if value == kind and not name.startswith("_") and name.isupper():
            return name.lower()
    return "unknown"


_COUNTRY_CODES = frozenset(str(c) for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
_UP = "0123456789" * 3  # a run counts up (or down) by one, wrapping 9 → 0
_DOWN = _UP[::-1]


def _country_code(digits: str) -> str:
    """Return the country code an E.164 number's digits start with ("" if none)."""
    return next((digits[:n] for n in (1, 2, 3) if digits[:n] in _COUNTRY_CODES), "")


def national_digits(e164: str) -> str:
    """Return the digits after the country code of an E.164 number (no parsing: hot path)."""
    digits = e164.lstrip("+")
    return digits[len(_country_code(digits)) :]


def is_placeholder(e164: str) -> bool:
    """Return True for a number nobody owns that CRMs fill in: one digit repeated, or a run.

    ``+919999999999``, ``+911234567890``, ``+19876543210``: the national number is one
    digit repeated, or counts up or down by one.
    """
    national = national_digits(e164)
    if not national or national.count(national[0]) == len(national):
        return True
    return len(national) >= 6 and (national in _UP or national in _DOWN)


def time_zones(e164: str) -> tuple[str, ...]:
    """Return the zones ``phonenumbers`` places the number in (several near zone borders).

    On the push path for every lead, so without parsing where the answer is known: a
    country whose time-zone data has one answer gives it; elsewhere the first number
    seen under a prefix as long as the country's longest time-zone prefix answers for
    all numbers under it.
    """
    digits = e164.lstrip("+")
    country = _country_code(digits)
    width, single = _zone_plan(country)
    if single is not None:
        return single
    prefix = digits[:width]
    found = _ZONES_BY_PREFIX.get(prefix)
    if found is None:
        found = _ZONES_BY_PREFIX[prefix] = _zones_of(e164)
    return found


_ZONES_BY_PREFIX: dict[str, tuple[str, ...]] = {}


def _zones_of(e164: str) -> tuple[str, ...]:
    from phonenumbers import timezone as number_zones

    zones = number_zones.time_zones_for_number(phonenumbers.parse(e164, None))
    return tuple(z for z in zones if z != "Etc/Unknown")


@functools.lru_cache(maxsize=512)
def _zone_plan(country: str) -> tuple[int, tuple[str, ...] | None]:
    """Return (longest time-zone prefix, the zones when the whole country has one answer)."""
    from phonenumbers.tzdata import TIMEZONE_DATA

    keys = [k for k in TIMEZONE_DATA if k.startswith(country)] if country else []
    answers = {TIMEZONE_DATA[k] for k in keys}
    if len(answers) == 1:
        return len(country), tuple(z for z in answers.pop() if z != "Etc/Unknown")
    return (max((len(k) for k in keys), default=len(country)) or 15), None
