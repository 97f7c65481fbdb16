"""Phone numbers: parse any written form to E.164, and format E.164 for a trunk.

Pure functions over `phonenumbers`; the one place where a lead's phone is validated.
Validation (`to_e164`) may run on `rphonenumbers`, the same API over the Rust port of
libphonenumber, ~10× faster: `use_backend` picks it only after it agreed with
`phonenumbers` on a sample of the routes' regions (see docs/performance.md).
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import phonenumbers

# The dial_format setting is parsed in its own module (a configuration is validated
# without the phone library); numbers are dialled by it here.
from syncd.core.dial_format import DialFormat as DialFormat
from syncd.core.dial_format import parse_dial_format as parse_dial_format


class PhoneError(ValueError):
    """The text is not a valid phone number for the region."""


# ---------------------------------------------------------------------------
# phones


_SCIENTIFIC = re.compile(r"^\+?(\d)(?:[.,](\d+))?[eE]\+?(\d{1,2})$")
_POINT_ZERO = re.compile(r"^(\+?\d{6,})[.,]0+$")
_MANGLED = frozenset(".,eE")  # one of them is in every text either pattern matches


def unmangle(text: str) -> str:
    """Return a number a spreadsheet rewrote as it was, or raise PhoneError if digits were lost.

    ``8.123456789E+09`` → ``8123456789``; ``8123456789.0`` → ``8123456789``;
    ``9.18123E+11`` lost its last six digits: refused, never guessed.
    """
    if _MANGLED.isdisjoint(text):  # most numbers: neither pattern below can match
        return text
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
    return _to_e164(_lib, text, region)


def _to_e164(lib: Any, text: str, region: str) -> str:
    raw = unmangle(text.strip())
    if not raw:
        raise PhoneError("empty phone")
    if raw.startswith("00") and not raw.startswith("000"):
        raw = "+" + raw[2:]
    try:
        number = lib.parse(raw, region)
    except lib.NumberParseException as exc:
        raise PhoneError(f"invalid phone {text.strip()!r}: {exc._msg}") from None
    if not lib.is_valid_number(number):
        raise PhoneError(f"invalid phone {text.strip()!r} for region {region}")
    return str(lib.format_number(number, lib.PhoneNumberFormat.E164))


# ---------------------------------------------------------------------------
# the validating library

BACKENDS = ("auto", "phonenumbers", "rphonenumbers")
FAST = "rphonenumbers"
_lib: ModuleType = phonenumbers  # what to_e164 parses with; worker processes inherit it


class BackendError(ValueError):
    """The configured phone backend cannot be used."""


@dataclass(frozen=True, slots=True)
class BackendChoice:
    name: str  # the library to_e164 now uses
    why: str  # for the log: why this one


def use_backend(name: str, regions: Iterable[str] = ("IN",)) -> BackendChoice:
    """Return which library validates numbers from now on, after switching to it.

    ``auto`` takes rphonenumbers when it is installed and gives the same answer as
    phonenumbers on every sample number of ``regions``; ``rphonenumbers`` insists
    (and is checked the same way); ``phonenumbers`` never looks further.
    """
    global _lib
    if name not in BACKENDS:
        raise BackendError(f"phone_backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "phonenumbers":
        _lib = phonenumbers
        return BackendChoice("phonenumbers", "configured")
    try:
        fast = importlib.import_module(FAST)
    except ImportError:
        if name == FAST:
            raise BackendError(
                "phone_backend = rphonenumbers, but it is not installed: "
                "pip install 'syncd[fast]' (or set phone_backend = auto)"
            ) from None
        _lib = phonenumbers
        return BackendChoice("phonenumbers", "rphonenumbers is not installed")
    differs = disagreement(fast, tuple(sorted(set(regions))))
    if differs is not None:
        if name == FAST:
            raise BackendError(f"rphonenumbers disagrees with phonenumbers: {differs}")
        _lib = phonenumbers
        return BackendChoice("phonenumbers", f"rphonenumbers disagrees: {differs}")
    _lib = fast
    return BackendChoice(FAST, "it agrees with phonenumbers on the sample")


# Written forms a CRM export holds, beyond each region's own example numbers.
_SAMPLE_FORMS = (
    "", "abc", "+", "12", "+99912345", "1" * 30, "1-800-FLOWERS", "(555) 123-4567",
    "+1 415 555 2671", "tel:+1-415-555-2671", "+44 20 7946 0958", "0044 20 7946 0958",
    "+91 98765 43210 ext. 12", "098765 43210", "９８７６５４３２１０", "٠٩٨٧٦٥٤٣٢١٠",
)  # fmt: skip


@functools.lru_cache(maxsize=32)
def disagreement(fast: Any, regions: tuple[str, ...]) -> str | None:
    """Return the first sample where ``fast`` and phonenumbers answer differently, or None.

    The sample: each region's example number of every type, written in E.164, national
    and international form, and the odd forms above, read in each region.
    """
    for region in regions:
        for text in (*_SAMPLE_FORMS, *_examples(region)):
            if _answer(phonenumbers, text, region) != _answer(fast, text, region):
                return f"{text!r} in region {region}"
    return None


def _examples(region: str) -> list[str]:
    out = []
    for kind in vars(phonenumbers.PhoneNumberType).values():
        if isinstance(kind, int):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                for fmt in (0, 1, 2):  # E164, INTERNATIONAL, NATIONAL
                    out.append(phonenumbers.format_number(number, fmt))
    return out


def _answer(lib: Any, text: str, region: str) -> str:
    try:
        return _to_e164(lib, text, region)
    except PhoneError as exc:
        return f"refused: {exc}"


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


def from_dial(dial: str, fmt: DialFormat, region: str) -> str | None:
    """Return the E.164 number a dial string of ``format_dial`` came from, None if unreadable."""
    if not dial:
        return None
    if fmt.style == "e164":
        return dial
    if fmt.style == "00" and dial.startswith("00"):
        return "+" + dial[2:]
    if fmt.style == "prefix" and dial.startswith(fmt.prefix):
        return "+" + dial[len(fmt.prefix) :]
    try:
        return to_e164(dial, region)
    except PhoneError:
        return None


# ---------------------------------------------------------------------------
# mapping


# ---------------------------------------------------------------------------
# what kind of number it is


# Mapping a row asks twice for its main number's type (its number screens, then the
# gate's screen of the lead), ~20 µs each: the second answer is the first, remembered.
@functools.lru_cache(maxsize=64)
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
# Two last digits no placeholder ends with: neither equal nor one apart (mod 10).
_NEVER_LAST_TWO = frozenset(
    f"{a}{b}" for a in range(10) for b in range(10) if (b - a) % 10 not in (0, 1, 9)
)


def _country_code(digits: str) -> str:
    """Return the country code an E.164 number's digits start with ("" if none)."""
    for n in (1, 2, 3):  # a loop, not next() over a generator: per number on the push path
        if digits[:n] in _COUNTRY_CODES:
            return digits[:n]
    return ""


def national_digits(e164: str) -> str:
    """Return the digits after the country code of an E.164 number (no parsing: hot path)."""
    digits = e164.lstrip("+")
    return digits[len(_country_code(digits)) :]


def is_placeholder(e164: str) -> bool:
    """Return True for a number nobody owns that CRMs fill in: one digit repeated, or a run.

    ``+919999999999``, ``+911234567890``, ``+19876543210``: the national number is one
    digit repeated, or counts up or down by one.
    """
    if _cannot_be_placeholder(e164):
        return False
    return _is_placeholder_by_rule(e164)


def _cannot_be_placeholder(e164: str) -> bool:
    """Return True when ``e164`` is surely no placeholder, without finding its country
    code (on the pull's path for every number; most numbers stop here).

    Exact: the country code is at most three digits, so with five or more the national
    number holds at least the last two; a placeholder's last two are one character
    repeated, or a step of one up or down a run (9 → 0 and 0 → 9 too).
    """
    digits = e164.lstrip("+")
    return len(digits) >= 5 and digits[-2:] in _NEVER_LAST_TWO


def _is_placeholder_by_rule(e164: str) -> bool:
    """Return ``is_placeholder`` by its rule, for any text (no shortcut)."""
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


def zone_prefix_width(e164: str) -> int:
    """Return how many leading digits decide ``time_zones(e164)``: any number sharing
    them has the same zones (the country code where the country has one answer)."""
    return _zone_plan(_country_code(e164.lstrip("+")))[0]


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
