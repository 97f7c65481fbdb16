"""uContact's wire formats as the simulator reads them: upload lines, forms, recording paths.

Pure functions, no state: what a real server would accept, or why it would skip a line.
"""

from __future__ import annotations

import json
import re
from typing import Any

from syncd.simulators.form import parse_form
from syncd.simulators.ucontact.dialing import Entry

PHONE = re.compile(r"^\+?[0-9]{3,20}$")
# Where an answered call's recording ends up: (host prefix, with day folder, extension).
RECORDING_PLACES = {
    "telephony_day": ("records", True, "mp3"),
    "telephony": ("records", False, "mp3"),
    "backup_day": ("backup/records", True, "mp3"),
    "backup": ("backup/records", False, "mp3"),
    "gsm": ("records", True, "gsm"),
}


def parse_line(line: str, campaign: str) -> Entry | str:
    """Return the contact of one upload line, or why a real server would skip it."""
    cols = line.split(";")
    if not 2 <= len(cols) <= 6:
        return f"expected 2 to 6 columns, found {len(cols)}"
    if cols[0] != campaign:
        return f"campaign {cols[0]!r} is not the upload's"
    phone = cols[1].strip()
    if not PHONE.match(phone):
        return f"invalid number {phone!r}"
    data = cols[2] if len(cols) > 2 else ""
    if not valid_data(data):
        return "parameters are not var=val:var=val"
    alternatives = parse_phones(cols[3] if len(cols) > 3 else "")
    if alternatives is None:
        return "invalid alternative number"
    priority_text = cols[4].strip() if len(cols) > 4 else ""
    if priority_text and not priority_text.isdigit():
        return "priority is not a number"
    agentphone = cols[5].strip() if len(cols) > 5 else ""
    return Entry(
        phone, alternatives, data, int(priority_text) if priority_text else None, agentphone
    )


def valid_data(text: str) -> bool:
    if not text:
        return True
    for pair in text.split(":"):
        name, eq, _value = pair.partition("=")
        if not eq or not name.strip() or "=" in _value:
            return False
    return True


def parse_phones(text: str) -> list[str] | None:
    if not text.strip():
        return []
    phones = [p.strip() for p in text.split(":")]
    return phones if all(PHONE.match(p) for p in phones) else None


def json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def recording_path(place: str, guid: str, calldate: str) -> str:
    prefix, dated, ext = RECORDING_PLACES[place]
    folder = calldate[:10].replace("-", "")
    return f"{prefix}/{folder}/{guid}.{ext}" if dated else f"{prefix}/{guid}.{ext}"


def form_fields(raw: bytes) -> dict[str, str]:
    parsed = parse_form(raw.decode("utf-8", "replace"))
    return {k: v[0] for k, v in parsed.items()}
