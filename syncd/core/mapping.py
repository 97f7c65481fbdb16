"""Field mapping: source rows in, canonical leads (phones via ``core.phones``) or reasons out.

Everything here is pure and picklable so a large initial load can fan out to a
process pool (``phonenumbers`` costs ~20 µs a number and dominates the pull).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel

from syncd.config import RouteConfig
from syncd.core.audit import Facts, list_of, numbers_of, route_policy_version
from syncd.core.csvsafe import FORMULA_START, unhidden
from syncd.core.gate import (
    CallingWindow,
    GateDecision,
    Screening,
    Verdict,
    consent_expiry,
    lead_zones,
    screen,
    window_decision,
)
from syncd.core.keys import key_refusal
from syncd.core.model import Lead, version_text
from syncd.core.phones import PhoneError, to_e164
from syncd.core.raw_rows import RawRows
from syncd.core.zones import ZoneError, check_zone, zone_table

_SPLIT = re.compile(r"[,;/|\n]+")
_SEPARATORS = frozenset(",;/|\n")  # the characters _SPLIT splits at
# C0 controls (but tab and line breaks, which separate numbers in a phone cell), DEL and C1
# controls: removed from every cell.
_CONTROLS: dict[int, None] = {
    c: None for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A, 0x0D)
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RowRejected(ValueError):
    """A row cannot become a lead; the message is the reason kept with it."""


class LeadBlocked(RowRejected):
    """The safety gate blocks this lead: refused, and withdrawn where the dialer has it."""

    def __init__(self, key: str, decision: GateDecision, numbers: tuple[str, ...] = ()) -> None:
        super().__init__(decision.text)
        self.key = key
        self.decision = decision
        self.numbers = numbers  # the lead's numbers the decision was about (for the audit)
        # the row's version time: its removal carries it, so an older row cannot undo it
        self.version_at: datetime | None = None


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def parse_datetime(text: str, fmt: str | None, zone: str) -> datetime | None:
    """Return ``text`` as an aware UTC datetime, None when empty; RowRejected when bad."""
    value = text.strip()
    if not value:
        return None
    if value.startswith("0000-00-00"):
        raise RowRejected(f"invalid date {value!r} (zero date)")
    try:
        parsed = datetime.strptime(value, fmt) if fmt else datetime.fromisoformat(value)
    except ValueError:
        expected = fmt or "ISO 8601, e.g. 2026-11-22 14:30:00"
        raise RowRejected(f"invalid date {value!r} (expected {expected})") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_zone(zone))
    return parsed.astimezone(UTC)


class Mapper:
    """Turns one route's rows into leads; built once per route and header."""

    def __init__(self, route: RouteConfig, header: tuple[str, ...]) -> None:
        self.route = route
        self.index = column_index(header, required_columns(route), route.name)
        self.fingerprint = route_fingerprint(route)
        self.policy_version = route_policy_version(route)
        self.policy = route.policy
        self.screening = screening_of(route)
        overrides = route.policy.zone_overrides if route.policy is not None else []
        self.zones = zone_table((o.prefix, o.zones) for o in overrides)
        self.window = (
            CallingWindow.parse(route.policy.windows, route.policy.holidays)
            if route.policy is not None and route.policy.windows
            else None
        )
        # (field name, cell position) of the custom fields: read for every row
        self.field_at = tuple((name, self.index[col]) for name, col in route.map.fields.items())

    def cell(self, values: list[str], column: str | None) -> str:
        """Return a cell stripped, with control characters (a NUL, an escape…) removed:
        nothing a CRM export smuggles into a cell reaches the dialer."""
        if column is None:
            return ""
        return clean_cell(values[self.index[column]])

    def text(self, values: list[str], column: str | None) -> str:
        """Return a cell of text the dialer shows (a name, an e-mail, a custom field),
        cleaned like :meth:`cell`, defused when cleaning revealed a formula prefix."""
        if column is None:
            return ""
        return clean_text(values[self.index[column]])

    @property
    def key_column(self) -> str:
        return self.route.map.key

    def key_of(self, values: list[str]) -> str:
        return self.cell(values, self.route.map.key)

    def raw_hash(self, values: list[str]) -> str:
        """Return a hash of the raw row, so unchanged rows skip normalization."""
        return row_hash(self.fingerprint, values)

    def to_lead(self, values: list[str], now: datetime | None = None) -> Lead:
        """Return the lead for a row, or raise RowRejected with the reason."""
        return self.map_row(values, now)[0]

    def map_row(self, values: list[str], now: datetime | None = None) -> tuple[Lead, Facts | None]:
        """Return the lead for a row and, when the gate moved its call_at, the audit's
        facts of the move; raise RowRejected with the reason (LeadBlocked: the gate's).

        ``now`` is the run's clock (consent ages against it); None: the system clock."""
        key = self._checked_key(values)
        version = self._version(values)
        try:
            lead, moved = self._lead(key, values, now)
        except LeadBlocked as exc:
            exc.version_at = version
            raise
        lead.version_at = version
        return lead, moved

    def _checked_key(self, values: list[str]) -> str:
        """Return the row's key; RowRejected when it is not a key (``core.keys``), or the
        row holds bytes its file's encoding could not read."""
        key_col = self.route.map.key
        problem = key_refusal(values[self.index[key_col]], key_col)
        if problem is not None:
            raise RowRejected(problem)
        key = self.key_of(values)
        whole = "".join(values)  # isascii() reads a flag: most rows stop here
        if not whole.isascii() and "\udc80" <= max(whole) and has_surrogate(whole):
            column = next((c for c, i in self.index.items() if has_surrogate(values[i])), "")
            raise RowRejected(
                f"column {column!r} is not valid text in the file's encoding "
                "(is the file latin1/cp1252? set the source's encoding)"
            )
        return key

    def _version(self, values: list[str]) -> datetime | None:
        """Return the row's version time (``map.updated_at``; None: not mapped, or empty);
        RowRejected naming the column when it cannot be read (core.versions)."""
        column = self.route.map.updated_at
        if column is None:
            return None
        try:
            return parse_datetime(self.cell(values, column), None, self.route.timezone)
        except RowRejected as exc:
            raise RowRejected(f"{exc} in column {column!r}") from None

    def _lead(self, key: str, values: list[str], now: datetime | None) -> tuple[Lead, Facts | None]:
        """Return the lead of a row whose key is read (see :meth:`map_row`)."""
        m = self.route.map
        if self._is_deleted(values):
            # A removal needs the key and what was delivered, not what the CRM left in
            # the row: a deleted lead's phone cell is often blanked or junk ("N/A").
            return Lead(key=key, phone="", deleted=True), None
        phone, alternates, notes = self._numbers(values)
        call_at = parse_datetime(
            self.cell(values, m.call_at), self.route.call_at_format, self.route.timezone
        )
        zone = ""
        moved: Facts | None = None
        consent_until: datetime | None = None
        if self.policy is not None:
            consent = self._screen(key, numbers_of(phone, alternates), values, now)
            consent_until = consent_expiry(consent, self.screening)
            zone = self.cell(values, self.policy.timezone_column)
            if zone:
                try:
                    check_zone(zone)
                except ZoneError as exc:
                    raise RowRejected(f"{exc} in column {self.policy.timezone_column!r}") from None
            if call_at is not None and self.window is not None:
                asked = call_at
                call_at = self._call_at_in_window(key, [phone, *alternates], zone, call_at)
                if call_at != asked:
                    moved = self.facts(numbers_of(phone, alternates), values, "call_at_moved")
                    moved = replace(
                        moved, call_at_from=asked.isoformat(), call_at_to=call_at.isoformat()
                    )
        lead = Lead(
            key=key,
            phone=phone,
            alt_phones=tuple(alternates),
            first_name=self.text(values, m.first_name),
            last_name=self.text(values, m.last_name),
            email=self.text(values, m.email),
            call_at=call_at,
            agent=self.cell(values, m.agent),
            fields={name: clean_text(values[i]) for name, i in self.field_at},
            zone=zone,
            notes=tuple(notes),
            consent_until=consent_until,
        )
        return lead, moved

    def facts(self, numbers: Sequence[str], values: list[str], code: str) -> Facts:
        """Return the audit's facts of a decision on this row: its numbers, the zones the
        gate respects for them (the CRM's zone narrowing them), the rule, the policy."""
        # A zone cell that is not a zone is ignored here (the row is refused for it).
        hint = self.cell(values, self.policy.timezone_column) if self.policy is not None else ""
        zones = lead_zones(list(numbers), hint, self.route.timezone, self.zones)
        return Facts(
            numbers=tuple(numbers),
            zones=zones,
            code=code,
            policy=self.policy_version,
            dnc_list=list_of(code),
        )

    def _numbers(self, values: list[str]) -> tuple[str, list[str], list[str]]:
        """Return (main number, alternates, notes on numbers left out) of a row.

        Every number the dialer may ring passes the number screens (placeholders,
        refused number types). An alternate that fails is left out with a note; a main
        number that is missing, unreadable or refused gives way to the first usable
        alternate, which the lead is then called on. With none, the row is refused (or
        blocked) for its main number, as before.
        """
        m = self.route.map
        region = self.route.default_region
        cells = _split_phones(self.cell(values, m.phone))
        extra = [p for c in m.alt_phones for p in _split_phones(self.cell(values, c))]
        main_problem: RowRejected | None = None
        main = ""
        if not cells:
            main_problem = RowRejected(f"missing phone (column {m.phone!r} is empty)")
        else:
            try:
                main = to_e164(cells[0], region)
            except PhoneError as exc:
                main_problem = RowRejected(f"{exc} in column {m.phone!r}")
        if main and (refusal := self._number_refused(main)) is not None:
            main_problem = LeadBlocked(self.key_of(values), refusal, (main,))
        usable: list[str] = []
        notes: list[str] = []
        for text in cells[1:] + extra:
            try:
                number = to_e164(text, region)
            except PhoneError as exc:  # it does not cost the lead its main number
                notes.append(f"alternate left out: {exc}")
                continue
            if number == main or number in usable:
                continue
            refusal = self._number_refused(number)
            if refusal is not None:
                notes.append(f"alternate left out: {refusal.text}")
            else:
                usable.append(number)
        if main_problem is None:
            return main, usable, notes
        if not usable:
            raise main_problem
        promoted = usable.pop(0)
        notes.insert(0, f"called on alternate {promoted}: main number refused ({main_problem})")
        return promoted, usable, notes

    def _number_refused(self, number: str) -> GateDecision | None:
        """Return the number screens' block of one number, None when it may be rung."""
        if self.policy is None:
            return None
        decision = screen(number, self.screening, dnc=None, consent=None, now=_EPOCH)
        return decision if decision.verdict is Verdict.BLOCK else None

    def _call_at_in_window(
        self, key: str, numbers: list[str], zone: str, call_at: datetime
    ) -> datetime:
        """Return the CRM's callback time, moved into the calling window (or refuse the lead)."""
        assert self.window is not None and self.policy is not None
        zones = lead_zones(numbers, zone, self.route.timezone, self.zones)
        decision = window_decision(self.window, zones, call_at)
        if decision.verdict is Verdict.ALLOW:
            return call_at
        if decision.verdict is Verdict.HOLD and decision.until is not None:
            if self.policy.call_at_outside_window == "move":
                return decision.until
            decision = GateDecision(
                Verdict.BLOCK,
                "call_at_outside_window",
                f"call_at {call_at.isoformat()} is outside the calling window in "
                f'{", ".join(zones)} (call_at_outside_window = "refuse")',
            )
        raise LeadBlocked(key, decision, numbers_of(numbers[0], numbers[1:]))

    def _screen(
        self, key: str, numbers: tuple[str, ...], values: list[str], now: datetime | None
    ) -> str | None:
        """Raise LeadBlocked when the gate's content rules block the row; return its
        consent cell (None: no consent column)."""
        policy = self.policy
        assert policy is not None
        consent = self.cell(values, policy.consent_column) if policy.consent_column else None
        if consent is not None and now is None:
            now = datetime.now(UTC)
        decision = screen(
            numbers[0],
            self.screening,
            dnc=self.cell(values, policy.dnc_column) if policy.dnc_column else None,
            consent=consent,
            now=_EPOCH if now is None else now,  # only consent ages
        )
        if decision.verdict is Verdict.BLOCK:
            raise LeadBlocked(key, decision, numbers)
        return consent

    def _is_deleted(self, values: list[str]) -> bool:
        route = self.route
        if route.map.deleted and self.cell(values, route.map.deleted).lower() in {
            v.lower() for v in route.deleted_values
        }:
            return True
        # A row that leaves the route's filter is, for this sink, a deleted lead.
        return bool(route.filter) and any(
            self.cell(values, col) not in accepted for col, accepted in route.filter.items()
        )


def clean_cell(text: str) -> str:
    """Return a cell stripped, its control characters removed."""
    if not text.isprintable():  # C fast path: most cells are plain text
        text = text.translate(_CONTROLS)
    return text.strip()


def clean_text(raw: str) -> str:
    """Return a cell of text the dialer shows: ``clean_cell``, then defused where cleaning
    revealed a formula prefix (``csvsafe.unhidden``)."""
    if raw.isascii() and raw.isprintable():
        # Exact shortcut for most cells: printable ASCII has no control character to
        # remove, and its only blank is the space, which the strip leaves in front of
        # nothing; so there is nothing hidden, and a cell that starts with no formula
        # prefix is kept as it is (what ``unhidden`` does too).
        cleaned = raw.strip()
        if not cleaned.startswith(FORMULA_START):
            return cleaned
    return unhidden(raw, clean_cell(raw))


def has_surrogate(text: str) -> bool:
    """Return True when a cell holds bytes its file's encoding could not read."""
    return not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text)


def _split_phones(text: str) -> list[str]:
    """Return the numbers a phone cell lists (``_split_at_separators``)."""
    if _SEPARATORS.isdisjoint(text):
        # Exact shortcut for most cells: with no separator the split finds one part
        # (the cell), kept when it is more than blanks.
        stripped = text.strip()
        return [stripped] if stripped else []
    return _split_at_separators(text)


def _split_at_separators(text: str) -> list[str]:
    """Return the numbers a phone cell lists, by its rule (no shortcut)."""
    parts = [p.strip() for p in _SPLIT.split(text) if p.strip()]
    if len(parts) > 1 and not any(ch.isdigit() for ch in text):
        # No digit at all: not a list of numbers but filler ("n/a", "none; later"),
        # validated whole so the refusal quotes the cell as written, not "invalid phone 'n'".
        return [text.strip()]
    return parts


def screening_of(route: RouteConfig) -> Screening:
    """Return the gate's content rules of a route's policy."""
    policy = route.policy
    if policy is None:
        return Screening()
    age = policy.consent_max_age_days
    return Screening(
        dnc_values=frozenset(v.strip().lower() for v in policy.dnc_values),
        require_consent=policy.require_consent,
        block_placeholders=policy.block_placeholders,
        consent_max_age=timedelta(days=age) if age is not None else None,
        placeholders=frozenset(policy.placeholder_numbers),
        block_types=frozenset(policy.block_number_types),
    )


def required_columns(route: RouteConfig) -> list[str]:
    m = route.map
    cols = [m.key, m.phone, *m.alt_phones]
    cols += [c for c in (m.first_name, m.last_name, m.email, m.call_at, m.agent, m.deleted) if c]
    cols += [m.updated_at] if m.updated_at else []
    cols += list(m.fields.values()) + list(route.filter)
    if route.policy is not None:
        cols += route.policy.columns()
    return list(dict.fromkeys(cols))


def route_fingerprint(route: BaseModel) -> bytes:
    """Return bytes that change whenever the route's mapping changes."""
    if isinstance(route, RouteConfig) and route.map.updated_at is None:
        # A route without a version column reads as it did before the setting existed:
        # its stored raw hashes stay valid (no re-sync maps every row again).
        text = route.model_dump_json(exclude={"map": {"updated_at"}})
    else:
        text = route.model_dump_json()
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def row_hash(fingerprint: bytes, values: list[str]) -> str:
    """Return a hash of a raw row under a route's mapping (unchanged rows skip mapping)."""
    h = hashlib.blake2b(fingerprint, digest_size=16)
    h.update("\x1f".join(values).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def row_hashes(fingerprint: bytes, rows: Sequence[tuple[int, list[str]]]) -> dict[int, str]:
    """Return ``row_hash`` of each (line, values) row, by line: a whole chunk at once (every
    row of a re-sync is hashed; a copy of the seeded hash costs less than a new one).

    Rows the CSV source's line reader kept as raw bytes (``RawRows``) are hashed from
    those bytes, without building their cells: the same hashes."""
    lines = rows.lines if isinstance(rows, RawRows) else [line for line, _ in rows]
    return dict(zip(lines, row_hash_list(fingerprint, rows), strict=True))


def row_hash_list(fingerprint: bytes, rows: Sequence[tuple[int, list[str]]]) -> list[str]:
    """Return ``row_hash`` of each (line, values) row, in row order (see ``row_hashes``)."""
    if isinstance(rows, RawRows):
        return rows.hashes(fingerprint)
    seeded = hashlib.blake2b(fingerprint, digest_size=16).copy
    join = "\x1f".join
    hashes: list[str] = []
    append = hashes.append
    for _, values in rows:
        h = seeded()
        h.update(join(values).encode("utf-8", "surrogateescape"))
        append(h.hexdigest())
    return hashes


def column_index(header: tuple[str, ...], required: list[str], route: str) -> dict[str, int]:
    """Return each column's position; RowRejected naming what the route needs and lacks."""
    index = {name: i for i, name in enumerate(header)}
    missing = [c for c in required if c not in index]
    if missing:
        raise RowRejected(
            "missing column(s) "
            + ", ".join(repr(c) for c in missing)
            + f" required by route {route}; header has: "
            + ", ".join(header)
        )
    return index


def lead_hash(lead_json: str) -> str:
    """Return the content hash the reconcile step compares."""
    return hashlib.blake2b(lead_json.encode("utf-8"), digest_size=16).hexdigest()


def withdrawal(key: str, code: str = "", version_at: datetime | None = None) -> tuple[str, str]:
    """Return the (hash, JSON) of the removal of lead ``key``; ``code`` when the gate asks,
    ``version_at`` the version time of the row that asked for it.

    A dialer that keeps a do-not-call list of its own (uContact) adds the numbers of a
    lead withdrawn for ``dnc_*`` to it.
    """
    return hashed(Lead(key=key, phone="", deleted=True, withdrawn=code, version_at=version_at))


def hashed(lead: Lead) -> tuple[str, str]:
    """Return the (content hash, canonical JSON) of a lead.

    The hash leaves the version time out: the same content at a later change time of
    the CRM is unchanged (nothing is sent again), as it was before versions were kept.
    """
    text = lead_to_json(lead)
    if lead.version_at is None:
        return lead_hash(text), text
    return lead_hash(lead_to_json(replace(lead, version_at=None))), text


def lead_to_json(lead: Lead) -> str:
    """Return the canonical JSON text of a lead (stable key order: equal leads, equal text)."""
    if lead.deleted:
        # What a deleted lead held no longer matters: one stable text per key.
        gone: dict[str, object] = {"key": lead.key, "deleted": True}
        if lead.withdrawn:
            gone["withdrawn"] = lead.withdrawn
        if lead.version_at is not None:
            gone["version_at"] = version_text(lead.version_at)
        return json.dumps(gone, sort_keys=True)
    data = lead.to_json()
    try:
        # Byte for byte what json.dumps(sort_keys, compact, ensure_ascii=False) writes
        # (tests/test_fast_path.py proves it): the stored hashes stay valid.
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:  # a lone surrogate: only the stdlib encodes it
        return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------
# batch entry point (runs in worker processes for large loads)

NormalizedRow = tuple[int, str, str | None, str | None, str | None, bool, str]
"""(line, key, lead_hash, lead_json, reject_reason, deleted, facts): json or reason is set; a
lead the safety gate blocks has both: its reason, and the removal of what a dialer may hold.
``facts`` (``Facts.to_json``, "" for none): the audit's facts of a gate block or of a
call_at the gate moved, carried out of the worker process to where the chunk commits."""


_MAPPERS: dict[tuple[str, tuple[str, ...]], Mapper] = {}


def normalize_rows(
    route_json: str,
    header: tuple[str, ...],
    rows: Sequence[tuple[int, list[str]]],
    now: float | None = None,
) -> list[NormalizedRow]:
    """Return, for each (line, values) row, its lead JSON and hash or its reject reason.

    ``now`` (epoch seconds): the run's clock, which consent ages against (None: the
    system clock); passed in, since this runs in worker processes."""
    moment = datetime.fromtimestamp(now, UTC) if now is not None else None
    cache_key = (route_json, header)
    mapper = _MAPPERS.get(cache_key)
    if mapper is None:
        mapper = Mapper(RouteConfig.model_validate_json(route_json), header)
        _MAPPERS[cache_key] = mapper
    out: list[NormalizedRow] = []
    for line, values in rows:
        key = mapper.key_of(values)
        try:
            lead, moved = mapper.map_row(values, moment)
        except LeadBlocked as exc:
            # Refused with its reason, and a removal for a dialer that already has it.
            facts = mapper.facts(exc.numbers, values, exc.decision.code).to_json()
            gone = withdrawal(exc.key, exc.decision.code, exc.version_at)
            out.append((line, key, *gone, str(exc), True, facts))
            continue
        except RowRejected as exc:
            out.append((line, key, None, None, str(exc), False, ""))
            continue
        content_hash, text = hashed(lead)
        facts = moved.to_json() if moved is not None else ""
        out.append((line, key, content_hash, text, None, lead.deleted, facts))
    return out
