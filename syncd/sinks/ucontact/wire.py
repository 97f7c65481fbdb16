"""uContact's wire formats, pure: the uploadbase file, the call JSON objects, dates.

The uploadbase file is ``campaign;phone;var=val:var=val;alt1:alt2;priority;agentphone``,
one lead a line. ``;``, ``:`` and ``=`` are its separators and a line break ends a
record, so no value may contain them: :func:`clean` rewrites them (``clean =
"replace"``) or the lead is refused with the reason (``clean = "reject"``).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# The documented cleaning rule: each separator becomes the nearest harmless
# character, so "10:30" stays readable as "10.30" and "a=b" as "a-b".
_REPLACEMENTS = str.maketrans({";": ",", ":": ".", "=": "-", "\r": " ", "\n": " ", "\t": " "})
_SPACES = re.compile(r" {2,}")
_FORBIDDEN = re.compile(r"[;:=\r\n]")
_SHOWN = {";": "';'", ":": "':'", "=": "'='", "\r": "a line break", "\n": "a line break"}


class UnsafeValue(ValueError):
    """A value holds a separator of the upload file and cleaning is off."""


def clean(value: str, *, replace: bool, what: str) -> str:
    """Return ``value`` safe for the upload file; UnsafeValue names the culprit if not replacing."""
    found = _FORBIDDEN.search(value)
    if found is None:
        return value.replace("\t", " ").strip()
    if not replace:
        raise UnsafeValue(
            f"{what} contains {_SHOWN[found.group()]}, a separator of uContact's upload file "
            '(set clean = "replace" to rewrite it)'
        )
    return _SPACES.sub(" ", value.translate(_REPLACEMENTS)).strip()


def data_string(pairs: dict[str, str], *, replace: bool) -> str:
    """Return ``var=val:var=val`` with every name and value cleaned; empty values are left out."""
    parts = []
    for name, value in pairs.items():
        if value == "":
            continue
        safe_name = clean(name, replace=replace, what=f"field name {name!r}").replace(" ", "_")
        if not safe_name:
            continue
        parts.append(f"{safe_name}={clean(value, replace=replace, what=f'field {name!r}')}")
    return ":".join(parts)


@dataclass(frozen=True, slots=True)
class Call:
    """One lead as uContact takes it: the same parts in every API call."""

    destination: str
    alternatives: tuple[str, ...]
    data: str  # var=val:var=val, already clean
    agentphone: str = ""
    priority: int | None = None
    calldate: str | None = None  # server-local time, TIME_FORMAT

    @property
    def alternatives_text(self) -> str:
        return ":".join(self.alternatives)


def upload_line(campaign: str, call: Call) -> str:
    """Return the uploadbase line for one call (optional trailing columns left off)."""
    cols = [campaign, call.destination, call.data, call.alternatives_text]
    priority = "" if call.priority is None else str(call.priority)
    if call.agentphone:
        cols += [priority, call.agentphone]
    elif priority:
        cols.append(priority)
    return ";".join(cols)


def upload_file(campaign: str, calls: list[Call]) -> tuple[str, int]:
    """Return (base64 of the UTF-8 file, row count) for uploadbase's fileb64 and cant."""
    text = "\n".join(upload_line(campaign, c) for c in calls) + "\n"
    return base64.b64encode(text.encode("utf-8")).decode("ascii"), len(calls)


def schedule_json(campaign: str, call: Call) -> str:
    """Return ScheduleDialerCall's ``callschedule`` object."""
    return json.dumps(
        {
            "calldate": call.calldate,
            "campaign": campaign,
            "destination": call.destination,
            "alternatives": call.alternatives_text,
            "agentphone": call.agentphone,
            "data": call.data,
        },
        ensure_ascii=False,
    )


def task_json(campaign: str, call: Call, source: str) -> str:
    """Return DialerTask's ``call`` object: every key present, as the server requires."""
    return json.dumps(
        {
            "calldate": call.calldate,
            "campaign": campaign,
            "destination": call.destination,
            "alternatives": call.alternatives_text,
            "agent": call.agentphone,
            "data": call.data,
            "source": source,
            "bulk": True,
            "automatic": False,
        },
        ensure_ascii=False,
    )


def black_json(phone: str, campaign: str, username: str, name: str) -> str:
    """Return addblack's ``black`` object."""
    return json.dumps(
        {
            "phone": phone,
            "campaign": campaign,
            "username": username,
            "company": "",
            "job_title": "",
            "name": name,
        },
        ensure_ascii=False,
    )


def server_time(when: datetime, zone: str) -> str:
    """Return an aware datetime as the server's ``YYYY-MM-DD HH:mm:ss`` local time."""
    return when.astimezone(ZoneInfo(zone)).strftime(TIME_FORMAT)


def parse_server_time(text: object, zone: str) -> datetime | None:
    """Return a server-local time string as aware UTC, None when unreadable.

    Java servers append milliseconds (``2016-01-18 10:11:12.0``); ISO ``T`` is accepted.
    """
    value = str(text or "").strip().replace("T", " ")[:19]
    try:
        naive = datetime.strptime(value, TIME_FORMAT)
    except ValueError:
        return None
    return naive.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def phone_digits(text: str) -> str:
    """Return the matching form of a number: its digits without leading zeros.

    ``+598 98 344 484``, ``0059898344484`` and ``59898344484`` all become
    ``59898344484``; a national ``098344484`` becomes ``98344484`` (the national
    number), which the index also holds.
    """
    return re.sub(r"\D", "", text).lstrip("0")


def recording_candidates(
    guid: str, calldate: str, telephony: str, backup: str | None, ext: str = "mp3"
) -> list[str]:
    """Return the places the document lists for a recording, most likely first.

    The day folder is the call date without hyphens or time (``20160118``).
    """
    folder = calldate.strip()[:10].replace("-", "")
    hosts = [telephony] + ([backup] if backup else [])
    urls = []
    for host in hosts:
        if folder.isdigit() and len(folder) == 8:
            urls.append(f"{host}/records/{folder}/{guid}.{ext}")
        urls.append(f"{host}/records/{guid}.{ext}")
    return urls
