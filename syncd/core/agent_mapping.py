"""CRM user rows in, canonical agents (or the reason a row cannot be one) out. Pure."""

from __future__ import annotations

import re
from datetime import date, datetime

from syncd.config import AgentRouteConfig
from syncd.core.agents import Agent, Language, Skill
from syncd.core.mapping import (
    NormalizedRow,
    RowRejected,
    clean_cell,
    column_index,
    has_surrogate,
    lead_hash,
    lead_to_json,
    route_fingerprint,
    row_hash,
)
from syncd.core.model import MAX_KEY_LEN

_ITEMS = re.compile(r"[,;|\n]+")
MAX_NAME_LEN = 100
DATE_FIELDS = ("dob", "doj")
MAX_PROFICIENCY = 10


def split_items(text: str) -> tuple[str, ...]:
    """Return the items of a list cell ("a; b, c"), trimmed, empty ones and repeats dropped."""
    return tuple(dict.fromkeys(i.strip() for i in _ITEMS.split(text) if i.strip()))


def parse_skill(item: str, column: str) -> Skill:
    """Return ``name:detail:proficiency`` as a Skill; RowRejected naming the column otherwise."""
    parts = [p.strip() for p in item.rsplit(":", 2)]
    if len(parts) != 3 or not all(parts):
        raise RowRejected(
            f"skill {item!r} in column {column!r} is not name:detail:proficiency "
            "(e.g. language:hindi:4)"
        )
    name, detail, level = parts
    if not level.isdigit() or not 0 <= int(level) <= MAX_PROFICIENCY:
        raise RowRejected(
            f"skill {item!r} in column {column!r}: proficiency {level!r} is not a whole "
            f"number from 0 to {MAX_PROFICIENCY}"
        )
    return Skill(name, detail, int(level))


def parse_language(item: str, ids: dict[str, str], column: str) -> Language:
    """Return ``id:name`` or a name the route's ``language_ids`` knows as a Language."""
    head, sep, tail = item.partition(":")
    if sep and head.strip() and tail.strip():
        return Language(head.strip(), tail.strip())
    known = {name.casefold(): (lid, name) for name, lid in ids.items()}
    found = known.get(item.casefold())
    if found is None:
        raise RowRejected(
            f"language {item!r} in column {column!r} has no language id: write it as "
            "id:name or add it to the route's language_ids"
        )
    return Language(found[0], found[1])


def parse_date(text: str, name: str, column: str) -> str:
    """Return a date cell as YYYY-MM-DD (a datetime keeps its date); RowRejected when unreadable."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        raise RowRejected(
            f"{name} {text!r} in column {column!r} is not a date (expected YYYY-MM-DD)"
        ) from None


class AgentMapper:
    """Turns one agents route's rows into agents; built once per route and header."""

    def __init__(self, route: AgentRouteConfig, header: tuple[str, ...]) -> None:
        self.route = route
        self.index = column_index(header, agent_columns(route), route.name)
        self.fingerprint = route_fingerprint(route)
        self.deleted_values = {v.casefold() for v in route.deleted_values}
        self.inactive_values = {v.casefold() for v in route.inactive_values}

    @property
    def key_column(self) -> str:
        return self.route.map.login

    def cell(self, values: list[str], column: str | None) -> str:
        return "" if column is None else clean_cell(values[self.index[column]])

    def raw_hash(self, values: list[str]) -> str:
        """Return a hash of the raw row, so unchanged rows skip mapping."""
        return row_hash(self.fingerprint, values)

    def to_agent(self, values: list[str]) -> Agent:
        """Return the agent for a row, or raise RowRejected with the reason."""
        m, route = self.route.map, self.route
        login = self.cell(values, m.login)
        if not login:
            raise RowRejected(f"missing login (column {m.login!r} is empty)")
        if len(login) > MAX_KEY_LEN or any(c.isspace() for c in login):
            raise RowRejected(
                f"login in column {m.login!r} has spaces or is longer than {MAX_KEY_LEN} characters"
            )
        bad = next((c for c, i in self.index.items() if has_surrogate(values[i])), None)
        if bad is not None:
            raise RowRejected(
                f"column {bad!r} is not valid text in the file's encoding "
                "(is the file latin1/cp1252? set the source's encoding)"
            )
        if self._is_deleted(values):
            return Agent(login=login, username=login, deleted=True)
        username = self.cell(values, m.username) or login
        if len(username) > MAX_NAME_LEN:
            raise RowRejected(f"username in column {m.username!r} is longer than {MAX_NAME_LEN}")
        profile = {}
        for name, column in m.profile.items():
            text = self.cell(values, column)
            if text and name in DATE_FIELDS:
                text = parse_date(text, name, column)
            if text:
                profile[name] = text
        return Agent(
            login=login,
            username=username,
            usertype=self.cell(values, m.usertype) or route.usertype,
            media=split_items(self.cell(values, m.media)) or tuple(route.media),
            groups=split_items(self.cell(values, m.groups)),
            skills=tuple(
                parse_skill(i, str(m.skills)) for i in split_items(self.cell(values, m.skills))
            ),
            languages=tuple(
                parse_language(i, route.language_ids, str(m.languages))
                for i in split_items(self.cell(values, m.languages))
            ),
            contacts=tuple(
                (kind, value)
                for kind, column in m.contacts.items()
                if (value := self.cell(values, column))
            ),
            customer_code=self.cell(values, m.customer_code),
            profile=profile,
        )

    def _is_deleted(self, values: list[str]) -> bool:
        m = self.route.map
        if m.deleted and self.cell(values, m.deleted).casefold() in self.deleted_values:
            return True
        if m.active and self.cell(values, m.active).casefold() in self.inactive_values:
            return True
        # A user who leaves the route's filter (another team, another site) is removed.
        return any(
            self.cell(values, col) not in accepted for col, accepted in self.route.filter.items()
        )

    def map_rows(self, rows: list[tuple[int, list[str]]]) -> list[NormalizedRow]:
        """Return, for each (line, values) row, its agent's outbox JSON and hash or the reason."""
        out: list[NormalizedRow] = []
        for line, values in rows:
            key = self.cell(values, self.route.map.login)
            try:
                agent = self.to_agent(values)
            except RowRejected as exc:
                out.append((line, key, None, None, str(exc), False, ""))
                continue
            text = lead_to_json(agent.to_lead())
            out.append((line, key, lead_hash(text), text, None, agent.deleted, ""))
        return out


def agent_columns(route: AgentRouteConfig) -> list[str]:
    """Return the CRM columns an agents route reads."""
    m = route.map
    cols = [m.login]
    cols += [
        c
        for c in (m.username, m.usertype, m.media, m.groups, m.skills, m.languages,
                  m.customer_code, m.deleted, m.active)
        if c
    ]  # fmt: skip
    cols += list(m.contacts.values()) + list(m.profile.values()) + list(route.filter)
    return list(dict.fromkeys(cols))
