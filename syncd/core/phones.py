"""Phone numbers: parse any written form to E.164, and format E.164 for a trunk.

Pure functions over `phonenumbers`; the one place where a lead's phone is validated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers


class PhoneError(ValueError):
    """The text is not a valid phone number for the region."""


# ---------------------------------------------------------------------------
# phones


def to_e164(text: str, region: str) -> str:
    """Return ``text`` as an E.164 number, or raise PhoneError saying why not."""
    raw = text.strip()
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
