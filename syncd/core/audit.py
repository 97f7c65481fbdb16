"""What the audit records with each safety-gate decision: pure helpers, no I/O.

A decision is written with its *facts* (a small JSON object in the event's or the
refusal's ``facts`` column) at the moment it is made: the lead's numbers, the zones
the gate used, the rule, the version of the policy that decided, the do-not-call
list. A later change of the configuration or of the lead does not rewrite them.

The facts hold phone numbers: they are for ``syncd audit`` (an operator with access
to the store), never for a log line or an unauthenticated page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson

from syncd.config import PolicyConfig, RouteConfig

VERSION_CHARS = 12  # hex digits of a policy version: short to read, long enough to tell apart


def policy_version(policy: PolicyConfig | None, fallback_zone: str = "UTC") -> str:
    """Return a short hash of a route's gate settings ("" when it has no policy).

    Every setting of the policy counts (windows, holidays, min_minutes_left, zone
    overrides, do-not-call column and lists, consent, placeholders, number types),
    and the route's zone for numbers that place nowhere: a change to any of them
    changes the version; an unchanged configuration keeps it across restarts.
    """
    if policy is None:
        return ""
    settings = {"policy": policy.model_dump(mode="json"), "fallback_zone": fallback_zone}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:VERSION_CHARS]


def route_policy_version(route: RouteConfig) -> str:
    return policy_version(route.policy, route.timezone)


def sink_policy_version(routes: Iterable[RouteConfig], sink: str) -> str:
    """Return the version of the policies of the routes feeding ``sink``.

    One route (the usual case): that route's version. Several: their versions
    joined with ``+`` in a stable order, since the push-time gate applies them all.
    """
    versions = sorted({route_policy_version(r) for r in routes if r.sink == sink} - {""})
    return "+".join(versions)


@dataclass(frozen=True, slots=True)
class Facts:
    """What one audit row says beyond its event: see the module docstring."""

    numbers: tuple[str, ...] = ()  # E.164, main number first
    zones: tuple[str, ...] = ()  # every zone the gate respected for these numbers
    code: str = ""  # the gate's reason code (``dnc_list:dnc``, ``window_closed``)
    policy: str = ""  # policy_version() of the settings that decided
    dnc_list: str = ""  # the do-not-call list that decided, if one did
    list_version: str = ""  # that list's version in force: "v3 of 2026-11-30 (file, sha256 …)"
    call_at_from: str = ""  # the CRM's callback time (ISO 8601, UTC) before the move
    call_at_to: str = ""  # where the gate moved it: the window's next opening
    action: str = ""  # upsert | delete: what a push sent
    withdrawn: str = ""  # a removal the gate asked for: its reason code
    reply: str = ""  # the dialer's answer to the push

    def to_json(self) -> str:
        """Return the facts as compact JSON, leaving out what is empty ("" for none)."""
        # Field by field, not dataclasses.asdict (it deep-copies every value), and with
        # orjson: a push writes the facts of each lead it sends, and these were a third
        # of a pushing replica's CPU (50,000 leads, 2.6 s of 11 under cProfile), then a
        # tenth (asdict gone). orjson writes non-ASCII as UTF-8 where json escaped it:
        # the same value once read.
        # The names taken in sorted order (one pass, no sort by orjson): the same text.
        data = {name: value for name in _FACT_NAMES if (value := getattr(self, name))}
        return orjson.dumps(data).decode() if data else ""

    @classmethod
    def from_json(cls, text: str | None) -> Facts:
        """Return the facts of a stored text; empty facts for none or for unreadable text."""
        if not text:
            return cls()
        try:
            data: Any = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        known: dict[str, Any] = {}
        for name, value in data.items():
            if name in ("numbers", "zones"):
                if isinstance(value, list):
                    known[name] = tuple(str(v) for v in value)
            elif name in cls.__dataclass_fields__ and isinstance(value, str):
                known[name] = value
        return cls(**known)


_FACT_NAMES = tuple(sorted(f.name for f in fields(Facts)))  # the JSON's key order


def decision_json(
    numbers: Sequence[str],
    zones: Sequence[str],
    *,
    code: str = "",
    policy: str = "",
    list_version: str = "",
    action: str = "",
    withdrawn: str = "",
    reply: str = "",
) -> str:
    """Return ``Facts(numbers, zones, code, policy, list_of(code), list_version, action=…,
    withdrawn=…, reply=…).to_json()``: the same text, without building the Facts.

    A push writes the facts of every lead it sends (issue 27: a tenth of its CPU went
    into them); the keys are written in ``_FACT_NAMES``' order, the empty ones left out.
    """
    data: dict[str, Any] = {}
    if action:
        data["action"] = action
    if code:
        data["code"] = code
        if dnc_list := list_of(code):
            data["dnc_list"] = dnc_list
    if list_version:
        data["list_version"] = list_version
    if numbers:
        data["numbers"] = numbers
    if policy:
        data["policy"] = policy
    if reply:
        data["reply"] = reply
    if withdrawn:
        data["withdrawn"] = withdrawn
    if zones:
        data["zones"] = zones
    return orjson.dumps(data).decode() if data else ""


def list_of(code: str) -> str:
    """Return the list a ``dnc_list:<name>`` code names ("" for any other code)."""
    kind, _, name = code.partition(":")
    return name if kind == "dnc_list" else ""


def numbers_of(phone: str, alternates: Sequence[str]) -> tuple[str, ...]:
    """Return a lead's numbers, main first, without blanks or repeats."""
    if not alternates:
        return (phone,) if phone else ()
    return tuple(dict.fromkeys(n for n in (phone, *alternates) if n))
