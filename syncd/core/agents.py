"""Agents (dialer users) in canonical form, and their place in the outbox.

An agent travels the lead pipeline: reconciled by content hash, queued, claimed and
pushed like a lead, to the outbox ``<sink>/agents``. The outbox stores leads, so an
agent is kept as a :class:`~syncd.core.model.Lead` whose key is the login and whose
fields hold the profile; :meth:`Agent.to_lead` and :meth:`Agent.from_lead` convert.
The structured parts (media, groups, skills…) are kept as compact JSON text in their
field, so one agent always has one text (and one hash).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from syncd.core.model import Lead

OUTBOX_SUFFIX = "/agents"  # "/" is not allowed in a sink's name: no clash with a real sink
PROFILE_FIELDS = ("gender", "dob", "doj", "address", "country", "state", "city", "userimage")


def agents_outbox(sink: str) -> str:
    """Return the name of the outbox holding the agents provisioned into ``sink``."""
    return sink + OUTBOX_SUFFIX


def provisioned_sink(outbox: str) -> str | None:
    """Return the sink an agents outbox provisions, None for a lead outbox."""
    return outbox[: -len(OUTBOX_SUFFIX)] if outbox.endswith(OUTBOX_SUFFIX) else None


@dataclass(frozen=True, slots=True)
class Skill:
    name: str  # "language", "product"
    detail: str  # "hindi", "old"
    proficiency: int


@dataclass(frozen=True, slots=True)
class Language:
    id: str  # the dialer's language id
    name: str


@dataclass(slots=True)
class Agent:
    """One dialer user as the CRM defines it."""

    login: str
    username: str
    usertype: str = "user"
    media: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    skills: tuple[Skill, ...] = ()
    languages: tuple[Language, ...] = ()
    contacts: tuple[tuple[str, str], ...] = ()  # (contact type, value), e.g. ("mobile number", …)
    customer_code: str = ""
    profile: dict[str, str] = field(default_factory=dict)  # PROFILE_FIELDS that are set
    deleted: bool = False  # removed or deactivated in the CRM

    def to_lead(self) -> Lead:
        """Return the outbox's form of this agent (the inverse of :meth:`from_lead`)."""
        fields = {name: value for name, value in self.profile.items() if value}
        fields["usertype"] = self.usertype
        if self.customer_code:
            fields["customercode"] = self.customer_code
        structured: dict[str, Any] = {
            "media": list(self.media),
            "groups": list(self.groups),
            "skills": [[s.name, s.detail, s.proficiency] for s in self.skills],
            "languages": [[lang.id, lang.name] for lang in self.languages],
            "contacts": [list(c) for c in self.contacts],
        }
        for name, items in structured.items():
            if items:
                fields[name] = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
        return Lead(
            key=self.login, phone="", first_name=self.username, fields=fields, deleted=self.deleted
        )

    @classmethod
    def from_lead(cls, lead: Lead) -> Agent:
        """Return the agent an outbox lead holds."""
        f = lead.fields

        def items(name: str) -> list[Any]:
            text = f.get(name)
            return list(json.loads(text)) if text else []

        return cls(
            login=lead.key,
            username=lead.first_name or lead.key,
            usertype=f.get("usertype", "user"),
            media=tuple(items("media")),
            groups=tuple(items("groups")),
            skills=tuple(Skill(str(n), str(d), int(p)) for n, d, p in items("skills")),
            languages=tuple(Language(str(i), str(n)) for i, n in items("languages")),
            contacts=tuple((str(t), str(v)) for t, v in items("contacts")),
            customer_code=f.get("customercode", ""),
            profile={k: f[k] for k in PROFILE_FIELDS if f.get(k)},
            deleted=lead.deleted,
        )
