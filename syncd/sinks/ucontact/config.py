"""Settings of a uContact sink."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from syncd.config import SinkConfig, Strict
from syncd.core.model import CallStatus
from syncd.core.window_hold import WindowHold
from syncd.secrets import Secret

FORBIDDEN = (";", ":", "=", "\n", "\r")  # characters the uploadbase file uses as separators


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


class DncConfig(Strict):
    """Which Lead.fields entry flags a lead as do-not-call, and where to blacklist it."""

    field: str = Field(min_length=1)  # a name from the route's [routes.map.fields]
    values: tuple[str, ...] = ("1", "true", "yes", "y", "dnc")  # compared case-insensitively
    campaign: str | None = None  # "*" blacklists in every campaign; default: the sink's


class DispositionFields(Strict):
    """Which Lead.fields entries carry a disposition set in the CRM (api/DispositionCall).

    Names come from the route's [routes.map.fields]. A lead whose ``l1`` field is
    filled is dispositioned on its last call instead of being placed again.
    """

    l1: str = Field(min_length=1)  # level 1: the disposition itself
    l2: str | None = None
    l3: str | None = None
    d1: str | None = None  # extra data
    d2: str | None = None
    comment: str | None = None
    schedule: str | None = None  # the time to call again, for the reschedule values
    reschedule_values: tuple[str, ...] = ("RESCHEDULE",)  # l1 values that call again
    agent: str | None = None  # the agent name to send; default: the call's agent


class UContactSinkConfig(SinkConfig):
    kind: Literal["ucontact"] = "ucontact"
    url: str = Field(pattern=r"^https?://")  # the server, e.g. https://acme.ucontactcloud.com
    user: str = Field(min_length=1)
    password: Secret
    campaign: str = Field(min_length=3)  # a dialer campaign, with its suffix: "Ventas->"
    upload_user: str | None = None  # uploadbase's `username`; defaults to `user`
    # uploadbasewithtimezone's zone (an IANA name, as uContact's list gives them): each
    # lead is uploaded with its own (the zone its calling window was decided in; see
    # ``timezones``), and with this one when it has none; None: plain uploadbase then
    timezone: str | None = None
    # false: every upload carries ``timezone`` (an override), whatever the lead's zone
    lead_timezones: bool = True
    server_timezone: str = "UTC"  # the server's clock: schedule dates and CDR call dates
    immediate: Literal["uploadbase", "dialertask"] = "uploadbase"  # leads without call_at
    task_source: str = "syncd"  # DialerTask's `source`
    priority: int | None = Field(None, ge=2)  # uploadbase priority; 1 is kept for schedules
    key_var: str = Field("crmkey", pattern=r"^[A-Za-z0-9_]+$")  # data variable with the key
    clean: Literal["replace", "reject"] = "replace"  # values holding ; : = or newlines
    dnc: DncConfig | None = None
    dispositions: DispositionFields | None = None  # CRM dispositions -> api/DispositionCall
    # after a call that got no answer, wait this long before (re)adding the lead, so a
    # late effect of that call lands first; default: 2 x timeout_s
    settle_s: float | None = Field(None, gt=0)
    # outcomes (Cdr/getrecords)
    # the page asked for; a server serving fewer is read to the end all the same
    cdr_page_size: int = Field(500, ge=1, le=1000)
    cdr_lookback_s: float = Field(86_400.0, gt=0)  # first poll: how far back to read
    # how far before the newest call seen a poll reads again, for records written late;
    # None: cdr_delay_s plus a minute of clock skew
    cdr_overlap_s: float | None = Field(None, ge=0)
    # how long after a call starts its record can still appear (the call's length plus
    # the server's delay): an upload syncd could not confirm is re-sent only when no
    # record showed up this long after its number was removed
    cdr_delay_s: float = Field(300.0, ge=0)
    # extra CDR status -> call status, e.g. { CANCEL = "dropped" }
    status_map: dict[str, CallStatus] = Field(default_factory=dict)
    # recordings
    records_url: str | None = Field(None, pattern=r"^https?://")  # telephony host; default url
    backup_records_url: str | None = Field(None, pattern=r"^https?://")  # BackupRecords host
    probe_recordings: bool = True  # HEAD each candidate and keep the first that exists
    convert_gsm: bool = False  # ask Supervisor/convert when only a .gsm recording exists
    # queue figures (Supervisor/queuesummary) and the campaign's status, read this often
    queue_poll_s: float = Field(60.0, gt=0)
    # hold pushes once the campaign has had no agent logged in for this long (None: never)
    hold_without_agents_min: float | None = Field(None, gt=0)

    @field_validator("campaign")
    @classmethod
    def _campaign(cls, value: str) -> str:
        if any(ch in value for ch in FORBIDDEN):
            raise ValueError("may not contain ';', ':', '=' or a line break")
        if not value.endswith("->"):
            raise ValueError(
                f"must be a dialer campaign name with its '->' suffix, e.g. {value.rstrip('<-')}->"
            )
        return value

    @field_validator("server_timezone")
    @classmethod
    def _server_timezone(cls, value: str) -> str:
        return _zone(value)

    def window_hold(self) -> WindowHold:
        """uContact takes a zone with an upload and a date with a schedule, no end: syncd
        takes a lead out at its window's close and sends it again at the next opening."""
        return WindowHold(
            start=True,
            close="withdraw",
            how=(
                "Dialers/uploadbasewithtimezone with each lead's zone, ScheduleDialerCall's"
                " calldate for a callback; RemoveContact / RemoveScheduleDialerCall at the close"
            ),
            in_dialer=(
                "set the campaign's calling hours to the window (uContact applies them in each"
                " upload's timezone)"
            ),
        )

    @field_validator("url", "records_url", "backup_records_url")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        # Accept the full resource root as well as the bare server address.
        for suffix in ("/Integra/resources", "/Integra"):
            if value.endswith(suffix):
                value = value[: -len(suffix)]
        return value

    @model_validator(mode="after")
    def _dnc_campaign(self) -> UContactSinkConfig:
        if self.dnc is not None and self.dnc.campaign not in (None, "*"):
            if any(ch in self.dnc.campaign for ch in FORBIDDEN):
                raise ValueError("dnc.campaign may not contain ';', ':', '=' or a line break")
        return self

    @property
    def uploader(self) -> str:
        return self.upload_user or self.user

    @property
    def settle_delay_s(self) -> float:
        return self.settle_s if self.settle_s is not None else 2 * self.timeout_s

    @property
    def dnc_campaign(self) -> str:
        if self.dnc is None or self.dnc.campaign is None:
            return self.campaign
        return self.dnc.campaign
