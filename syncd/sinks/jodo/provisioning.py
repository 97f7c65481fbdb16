"""Agents from the CRM into Jodo: ``addEditUser`` (add, edit) and ``deleteUser``.

The outbox ``<sink>/agents`` is pushed by :class:`JodoAgentSink`, one request per
agent. Jodo answers success with ``status`` 3 (add, edit; ``userid``, ``revisionno``)
or 1 (delete) and failure with ``status`` 5 and a ``statusdesc``; the method named in
the reply may differ from the request's (``addUser`` for an ``addEditUser`` add).

A repeat is harmless: an add of a login Jodo already has becomes an edit (the crash
came after Jodo took it, before syncd recorded it), an edit of a login Jodo no longer
has becomes an add, and a delete of a login Jodo does not have is done.

Passwords: Jodo takes ``newpassword``/``confirmpassword`` as an MD5 hex digest. A new
agent gets the configured initial password, or one generated for it and appended to
``passwords_file`` (mode 0600, fsynced) *before* Jodo is asked, so no agent ends up
with a password nobody knows. Neither the password nor its digest is logged, stored
or shown: both are registered with the scrubber, which also masks them in anything
the dialer echoes.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.core.agents import Agent
from syncd.core.model import Action, PushResult, QueuedLead
from syncd.core.scrub import register_secrets
from syncd.errors import PermanentError, SinkConfigError
from syncd.sinks.base import BaseSink, SinkContext
from syncd.sinks.jodo.client import NOT_FOUND, connect, reply_text
from syncd.sinks.jodo.config import MEDIA, JodoSinkConfig

# What Jodo's statusdesc says when the login is already there / not there (any case).
EXISTS_WORDS = ("already exist", "duplicate", "exists")
MISSING_WORDS = ("not found", "does not exist", "not exist", "invalid login", "no such")
MEDIA_NAMES = {name.casefold(): name for name in MEDIA.values()}


def md5_hex(password: str) -> str:
    """Return the digest Jodo's newpassword/confirmpassword take."""
    return hashlib.md5(password.encode("utf-8"), usedforsecurity=False).hexdigest()


def says(error: PermanentError, words: Sequence[str]) -> bool:
    reason = error.reason.casefold()
    return any(w in reason for w in words)


def user_payload(agent: Agent, action: str, password: str | None) -> dict[str, Any]:
    """Return the addEditUser request body (without method, apikey, reqdatetime)."""
    body: dict[str, Any] = {
        "action": action,
        "loginid": agent.login,
        "username": agent.username,
        "usertype": agent.usertype,
        "mediadetails": [{"media": MEDIA_NAMES.get(m.casefold(), m)} for m in agent.media],
        "groups": list(agent.groups),
        "language": [{"languageid": lang.id, "language": lang.name} for lang in agent.languages],
        # The document names them this way round: contactid is the kind, contacttype the value.
        "contactdetails": [
            {"contactid": kind, "contacttype": value} for kind, value in agent.contacts
        ],
        "skilldetails": [
            {"skillname": s.name, "skilldetail": s.detail, "proficiencyvalue": str(s.proficiency)}
            for s in agent.skills
        ],
        **agent.profile,
    }
    if agent.customer_code:
        code = agent.customer_code
        body["customercode"] = int(code) if code.isdigit() else code
    if password is not None:
        body["newpassword"] = body["confirmpassword"] = md5_hex(password)
    return body


def unknown_media(agent: Agent) -> list[str]:
    return [m for m in agent.media if m.casefold() not in MEDIA_NAMES]


class Passwords:
    """Hands out new agents' passwords: the configured one, or one generated and kept."""

    def __init__(self, cfg: JodoSinkConfig) -> None:
        settings = cfg.provisioning
        self.initial = settings.initial_password
        self.file: Path | None = settings.passwords_file

    def check(self) -> None:
        """Raise SinkConfigError when new agents could get no password that someone knows."""
        if self.initial is not None:
            return
        if self.file is None:
            raise SinkConfigError(
                "provisioning agents needs [sinks.provisioning] initial_password (env:/file:) "
                "or passwords_file (where generated passwords are kept)",
                vendor="jodo",
            )
        if self.file.exists():
            mode = stat.S_IMODE(self.file.stat().st_mode)
            if mode & 0o077:
                raise SinkConfigError(
                    f"{self.file} is readable by others (mode {mode:o}); chmod 600 it",
                    vendor="jodo",
                )
        elif not os.access(self.file.parent, os.W_OK):
            raise SinkConfigError(f"cannot create {self.file}: its folder is not writable")

    def new(self, login: str) -> str:
        """Return a new agent's password; a generated one is on disk before this returns."""
        if self.initial is not None:
            return self.initial.get_secret_value()
        assert self.file is not None
        password = secrets.token_urlsafe(12)
        register_secrets(password, md5_hex(password))
        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{login}\t{password}\t{when}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return password


class JodoAgentSink(BaseSink):
    """Pushes the outbox of CRM users to Jodo's user module."""

    can_remove = True

    def __init__(self, config: JodoSinkConfig, ctx: SinkContext) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.http, self.client = connect(config, self.guard, self.clock)
        self.passwords = Passwords(config)
        if config.provisioning.initial_password is not None:
            secret = config.provisioning.initial_password.get_secret_value()
            register_secrets(secret, md5_hex(secret))

    async def open(self) -> None:
        self.passwords.check()

    async def push(self, batch: Sequence[QueuedLead]) -> list[PushResult]:
        return [await self._one(q) for q in batch]

    async def _one(self, q: QueuedLead) -> PushResult:
        agent = Agent.from_lead(q.lead)
        try:
            if q.action is Action.DELETE:
                return await self._delete(q.key)
            if bad := unknown_media(agent):
                known = ", ".join(MEDIA.values())
                return PushResult.rejected(q.key, f"unknown media {bad} (Jodo has: {known})")
            if q.delivered_hash is None:
                return await self._add(agent)
            return await self._edit(agent)
        except SinkConfigError:
            raise
        except PermanentError as exc:
            return PushResult.rejected(q.key, exc.reason)

    async def _add(self, agent: Agent) -> PushResult:
        password = self.passwords.new(agent.login)
        try:
            return await self._send(agent, "add", password)
        except PermanentError as exc:
            if not says(exc, EXISTS_WORDS):
                raise
        # Jodo has it already (an add whose answer was lost): bring it up to date instead.
        self.log.info("jodo.agent.exists", login=agent.login, action="edited instead")
        return await self._send(agent, "edit", None, note="already there: edited")

    async def _edit(self, agent: Agent) -> PushResult:
        reset = self.cfg.provisioning.reset_password_on_edit
        password = self.passwords.new(agent.login) if reset else None
        try:
            return await self._send(agent, "edit", password)
        except PermanentError as exc:
            if not says(exc, MISSING_WORDS):
                raise
        # Removed at the dialer by hand while the CRM still has the agent: the CRM wins.
        self.log.warning("jodo.agent.missing", login=agent.login, action="added again")
        password = self.passwords.new(agent.login)
        return await self._send(agent, "add", password, note="gone from Jodo: added again")

    async def _send(
        self, agent: Agent, action: str, password: str | None, note: str = ""
    ) -> PushResult:
        reply = await self.client.call("addEditUser", user_payload(agent, action, password))
        said = reply_text(reply.body) + (f"; {note}" if note else "")
        userid = reply.body.get("userid")
        ref = str(userid) if isinstance(userid, int | str) and str(userid).strip() else None
        return PushResult.delivered(agent.login, vendor_ref=ref, reply=said)

    async def _delete(self, login: str) -> PushResult:
        try:
            reply = await self.client.call("deleteUser", {"loginid": login}, accept=(NOT_FOUND,))
        except PermanentError as exc:
            if not says(exc, MISSING_WORDS):
                raise
            return PushResult.delivered(
                login, reply=f"{exc.reason}; not in Jodo: nothing to delete"
            )
        return PushResult.delivered(login, reply=reply_text(reply.body))

    async def close(self) -> None:
        await self.http.aclose()
