"""Settings of an Ameyo sink."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from syncd.config import SinkConfig, Strict, TimeZoneName
from syncd.core.model import CallStatus
from syncd.core.window_hold import WindowHold
from syncd.secrets import Secret

COMMAND_PATH = "/ameyowebaccess/command"
LEAD_ATTRIBUTES = ("key", "first_name", "last_name", "email", "agent")
# What a removal is refused with: the Customer Manager API has no delete.
REMOVE_REFUSED = "Ameyo's Customer Manager API cannot remove a customer"


class SessionAuth(Strict):
    """On-premise Ameyo: a Customer Manager user logs in and keeps its session alive."""

    mode: Literal["session"] = "session"
    user_id: str = Field(min_length=1)
    password: Secret
    terminal: str = "127.0.0.1"  # the "local ip of the user logging in", as Ameyo records it


class HeaderAuth(Strict):
    """Ameyo cloud tenants: no session, three headers on every request."""

    mode: Literal["headers"]
    hash_key: Secret
    policy_name: str = Field(min_length=1)
    requesting_host: str = Field(min_length=1)


def _auth_mode(value: Any) -> str:
    # `mode` may be left out: a session login is what an on-premise Ameyo wants.
    if isinstance(value, dict):
        return str(value.get("mode", "session"))
    return str(getattr(value, "mode", "session"))


Auth = Annotated[
    Annotated[SessionAuth, Tag("session")] | Annotated[HeaderAuth, Tag("headers")],
    Discriminator(
        _auth_mode,
        custom_error_type="auth_mode",
        custom_error_message="auth.mode must be one of session, headers",
    ),
]


class AmeyoSinkConfig(SinkConfig):
    kind: Literal["ameyo"] = "ameyo"
    url: str = Field(pattern=r"^https?://")  # http://host:port; /ameyowebaccess/command is added
    auth: Auth
    campaign_id: int = Field(ge=0)
    lead_id: int = Field(ge=0)
    update_customer: bool = True  # Ameyo's "update.customer": upsert on phone1
    migrate_customer: bool = False  # "migrate.customer": move a customer found in another lead
    callbacks: bool = True  # False: uploadContacts only, call_at is not scheduled
    self_callback: bool = False  # "isSelfCallBack" for callbacks with an agent
    timezone: TimeZoneName = "UTC"  # the Ameyo server's clock, for callBackTime and dial times
    # validityTime, after which Ameyo does not dial the customer: the calling window's
    # close. "zone": on the server's clock with its offset ("2026-11-30 20:00:00 GMT+05:30",
    # the document's "… IST" without the ambiguity of a zone abbreviation); "plain":
    # without the offset, for a server that refuses one; "off": not sent (check warns).
    validity_time: Literal["zone", "plain", "off"] = "zone"
    max_phones: int = Field(3, ge=1, le=10)  # phone1 plus alternates as phone2..phoneN
    name_column: str | None = "name"
    email_column: str | None = "email"
    key_column: str | None = None  # a campaign column that keeps the CRM key, if there is one
    columns: dict[str, str] = Field(
        default_factory=dict
    )  # Ameyo column -> lead field (fields.*, or key/first_name/…)
    poll_chunk: int = Field(200, ge=1, le=5000)  # customerIds per getContacts
    ping_interval_s: float | None = Field(None, gt=0)  # default: the pingInterval login returns
    status_map: dict[str, str] = Field(
        default_factory=dict
    )  # extra or overriding Ameyo status -> CallStatus value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.rstrip("/")
        if value.endswith(COMMAND_PATH):
            value = value[: -len(COMMAND_PATH)]
        return value

    @field_validator("name_column", "email_column", "key_column")
    @classmethod
    def _optional_column(cls, value: str | None) -> str | None:
        # TOML has no null: an empty name means "do not send this column".
        return value.strip() or None if value is not None else None

    @field_validator("status_map")
    @classmethod
    def _status_map(cls, value: dict[str, str]) -> dict[str, str]:
        allowed = {s.value for s in CallStatus}
        for raw, status in value.items():
            if status not in allowed:
                raise ValueError(f"{raw}: {status!r} must be one of " + ", ".join(sorted(allowed)))
        return {raw.strip().upper(): status for raw, status in value.items()}

    @model_validator(mode="after")
    def _columns(self) -> AmeyoSinkConfig:
        taken = {f"phone{i}" for i in range(1, self.max_phones + 1)}
        named = [c for c in (self.name_column, self.email_column, self.key_column) if c]
        for column in [*named, *self.columns]:
            if column in taken:
                raise ValueError(f"column {column!r} is used twice (phones, name, email, key)")
            taken.add(column)
        return self

    def cannot_delete(self) -> str | None:
        return (
            f'Ameyo has no delete: each lead the CRM deletes is refused ("{REMOVE_REFUSED}") '
            "and the customer stays dialable in the campaign; remove those customers in "
            "Ameyo by hand (`syncd status` counts the refusals by this reason, `syncd "
            "explain KEY` shows each lead)"
        )

    def window_hold(self) -> WindowHold:
        opening = "leads go only while their window is open; call_at as callBackTime"
        if self.validity_time == "off":
            return WindowHold(
                start=True,
                close="",
                how=f'{opening}; validity_time = "off": no validityTime',
                in_dialer="set the campaign's calling hours to the window, or send validityTime",
            )
        how = f"{opening}; validityTime = the window's close, one request per close"
        if not self.callbacks:
            how += " (documented for uploadContactAndAddCallback; sent with uploadContacts)"
        # callBackTime carries no zone: the server reads it on its own clock, so a wrong
        # `timezone` moves every callback (the fresh-eyes run rang one at 04:30 local).
        clock = f"callBackTime on the server's clock: check that its zone is {self.timezone}"
        return WindowHold(start=True, close="expiry", how=how, in_dialer=clock, per_request=True)

    @property
    def command_url(self) -> str:
        return self.url + COMMAND_PATH
