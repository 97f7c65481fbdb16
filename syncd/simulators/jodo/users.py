"""The Jodo simulator's user module: ``addEditUser`` and ``deleteUser``, as the document has them.

Users belong to the organisation (the apikey), not to a process. The replies keep
the document's quirks: an add answers with the method ``addUser``, an edit with
``addEditUser``; success is ``status`` 3 (add, edit) or 1 (delete), failure
``status`` 5 with what was wrong in ``statusdesc``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

USER_TYPES = {"user", "supervisor", "admin", "manager"}
MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_LIST_FIELDS = ("mediadetails", "groups", "language", "contactdetails", "skilldetails")


def _reply(method: str, status: int, desc: str, **extra: Any) -> dict[str, Any]:
    return {
        "method": method,
        **extra,
        "status": status,
        "statusdesc": desc,
        "resdatetime": "",  # stamped with the server's clock on the way out
    }


@dataclass
class UserDirectory:
    """Every user of the organisation, with the document's validation."""

    media_names: set[str]  # lower case
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # loginid -> the user
    next_id: int = 101
    deleted: list[str] = field(default_factory=list)

    def add_edit(self, body: dict[str, Any]) -> dict[str, Any]:
        action = str(body.get("action", "")).strip().lower()
        login = str(body.get("loginid") or "").strip()
        method = "addUser" if action == "add" else "addEditUser"
        problem = self._problem(action, login, body)
        if problem:
            return _reply(method, 5, problem, revisionno=1)
        user = {k: body[k] for k in ("username", "usertype", "customercode", *_LIST_FIELDS)
                if k in body}  # fmt: skip
        for name in ("gender", "dob", "doj", "address", "country", "state", "city", "userimage"):
            if name in body:
                user[name] = body[name]
        if action == "add":
            user.update(userid=self.next_id, revisionno=1, password=body["newpassword"])
            self.next_id += 1
            self.users[login] = user
        else:
            old = self.users[login]
            user.update(
                userid=old["userid"],
                revisionno=old["revisionno"] + 1,
                password=body.get("newpassword") or old["password"],
            )
            self.users[login] = user
        return _reply(method, 3, "success", userid=user["userid"], revisionno=user["revisionno"])

    def _problem(self, action: str, login: str, body: dict[str, Any]) -> str | None:
        if action not in ("add", "edit"):
            return "Invalid action"
        if not login:
            return "loginid is mandatory"
        if not str(body.get("username") or "").strip():
            return "username is mandatory"
        if str(body.get("usertype") or "").strip().lower() not in USER_TYPES:
            return "Invalid usertype"
        media = body.get("mediadetails")
        if not isinstance(media, list) or not media:
            return "mediadetails is mandatory"
        for item in media:
            name = str(item.get("media", "")) if isinstance(item, dict) else ""
            if name.strip().lower() not in self.media_names:
                return f"Invalid media {name}"
        for name in _LIST_FIELDS:
            if name in body and not isinstance(body[name], list):
                return f"Invalid {name}"
        if action == "add" and login in self.users:
            return "Login id already exists"
        if action == "edit" and login not in self.users:
            return "Login id does not exist"
        password = body.get("newpassword")
        if action == "add" or password is not None:
            if password != body.get("confirmpassword"):
                return "Password and confirm password do not match"
            if not MD5_HEX.match(str(password or "")):
                return "Invalid password"
        return None

    def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        login = str(body.get("loginid") or "").strip()
        if not login:
            return _reply("deleteUser", 5, "loginid is mandatory", revisionno="1")
        if login not in self.users:
            return _reply("deleteUser", 5, "Login id does not exist", revisionno="1")
        del self.users[login]
        self.deleted.append(login)
        return _reply("deleteUser", 1, "success", revisionno="1")
