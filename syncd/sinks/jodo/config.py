"""Settings of a Jodo sink: push, outcomes, recordings, agents, reallocation, dispositions."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from syncd.config import SinkConfig, Strict, TimeZoneName
from syncd.core.model import CallStatus
from syncd.core.window_hold import WindowHold
from syncd.secrets import Secret

# The Media table of the Jodo document: id -> name.
# What a removal is refused with when Jodo has no way to close the lead (no on_delete).
REMOVE_REFUSED = "Jodo cannot remove a lead; it stays in the dialer"
MEDIA = {
    1: "Email In",
    2: "Email Out",
    3: "SMS In",
    4: "SMS Out",
    8: "Chat",
    11: "Voice In",
    12: "Voice Out",
    21: "Social-Twitter",
    22: "Social-Facebook",
    31: "Video",
}
CALL_TYPES = {
    5: "Hot Lead",
    21: "Callback Call",
    31: "Preview Callback Call",
    41: "General call back",
    71: "Preview Call",
    1001: "Fresh Call",
}


class OutcomeFields(Strict):
    """Which getProcessData row fields carry the call outcome (the process's form template)."""

    status: str = "callstatus"
    disposition: str = "disposition"
    attempts: str = "attempts"
    last_call: str = "lastcalldatetime"
    agent: str = "agentlogin"
    call_id: str = "systemcallid"


class OutcomeSettings(Strict):
    """Outcome polling with getProcessData over a moving ``storedatetime`` window."""

    enabled: bool = True
    fields: OutcomeFields = OutcomeFields()
    # raw status (case-insensitive) -> CallStatus; added on top of the built-in table
    status_map: dict[str, CallStatus] = Field(default_factory=dict)
    last_call_format: str = "%Y-%m-%d %H:%M:%S"
    # A change readable up to this long after its storedatetime is still read: each row
    # is read once more at this age (the late pass), not by every poll until then.
    settle_s: float = Field(600.0, ge=0)
    # Each window re-reads this much of the previous one. Unset: a few seconds plus how far
    # the dialer's clock is measured behind the window (what is new, not settle_s again).
    overlap_s: float | None = Field(None, ge=0)
    max_window_s: float = Field(86400.0, gt=0)  # a longer gap is read in slices this long
    lookback_s: float = Field(86400.0, gt=0)  # how far back the very first poll reads
    match_field: str | None = None  # row field holding the lead key; default: the update key
    recheck_per_poll: int = Field(0, ge=0, le=10_000)  # delivered leads re-read by key per poll


class RecordingSettings(Strict):
    """Recording links for outcomes with a systemcallid."""

    enabled: bool = True
    batch_size: int = Field(50, ge=1, le=1000)  # systemcallids per customer_multiple_recordings
    max_age_s: float = Field(86400.0, gt=0)  # stop asking for a recording after this long
    max_pending: int = Field(10_000, ge=1)  # recordings awaited at once; the oldest give way
    # an awaited recording is asked for again after this long, then at gaps as long as
    # its age (at most recordings.RECORDING_ASK_MAX_S)
    ask_again_s: float = Field(10.0, ge=0)


class AgentSettings(Strict):
    """Agent status polling with userStatus."""

    enabled: bool = True
    # empty: every agent that delivered leads are assigned to (and the fallback agents)
    logins: list[str] = Field(default_factory=list)
    batch_size: int = Field(50, ge=1, le=1000)  # loginids per userStatus request
    change_time_format: str = "%d-%b-%y %I:%M:%S %p"  # statuschangetime, "07-Mar-19 11:59:59 PM"


DEFAULT_ABSENT = [
    "logged out",
    "logout",
    "log out",
    "logged off",
    "offline",
    "absent",
    "not logged in",
    "missing",  # syncd's name for a login the dialer does not know (the agent has left)
]


class ReallocationSettings(Strict):
    """Move leads of an agent absent too long to a fallback agent with reallocatedata."""

    fallback: list[str] = Field(default_factory=list)  # empty: reallocation is off
    after_s: float = Field(1800.0, ge=0)  # absent at least this long before leads move
    # status codes or descriptions (any case) that mean the agent is not there
    absent_statuses: list[str] = Field(default_factory=lambda: list(DEFAULT_ABSENT))
    max_per_poll: int = Field(200, ge=1, le=100_000)
    max_attempts: int = Field(3, ge=1, le=100)  # per lead, before it is left where it is


class DispositionRule(Strict):
    """A CRM closing value: leads whose ``field`` holds one of ``values`` are disposed."""

    field: str = Field(min_length=1)  # a Lead.fields name (routes.map.fields)
    values: list[str] = Field(min_length=1)  # compared case-insensitively
    dispomasterid: int = Field(ge=0)
    disporeasonid: int = Field(ge=0)
    remarks: str = "Closed in the CRM"


class DeleteDisposition(Strict):
    """The disposition sent for a lead removed from the CRM (Jodo cannot delete)."""

    dispomasterid: int = Field(ge=0)
    disporeasonid: int = Field(ge=0)
    remarks: str = "Removed from the CRM"


class DispositionSettings(Strict):
    """saveDisposition at push time, so the dialer stops working leads the CRM closed."""

    login: str | None = None  # who disposes; default: the lead's (possibly reallocated) agent
    media: str | None = None  # the text media ("Voice Out"); default: the sink's media name
    rules: list[DispositionRule] = Field(default_factory=list)
    on_delete: DeleteDisposition | None = None  # without it removals are refused with a reason


class ProvisioningSettings(Strict):
    """Agents provisioned from the CRM (a route of kind "agents"): passwords, unknown agents."""

    # Every new agent's first password (env:/file:); without it one is generated per agent
    # and appended to passwords_file (mode 0600) before the dialer is asked.
    initial_password: Secret | None = None
    passwords_file: Path | None = None
    reset_password_on_edit: bool = False  # an edit sends a new password too
    # A lead whose agent is no login the dialer has (provisioned, or listed by userStatus):
    # "unassign" sends it to nobody in particular, "refuse" keeps it back with the reason,
    # "send" does not check. Unset: unassign when syncd provisions this dialer's agents.
    unknown_agent: Literal["unassign", "refuse", "send"] | None = None

    @field_validator("passwords_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(
                "must be an absolute path (a file only syncd's user can read, "
                "e.g. /var/lib/syncd/agent-passwords)"
            )
        return value


class JodoSinkConfig(SinkConfig):
    kind: Literal["jodo"] = "jodo"
    url: str = Field(pattern=r"^https?://")
    apikey: Secret
    servicekey: str = Field(min_length=1)
    media: int = 12
    updateparam: Literal["mobilenumber", "customercode", "crmuniquefield"] = "crmuniquefield"
    key_field: str = "leadnumber"  # the record field that carries the CRM key
    crm_unique_field: str = "leadnumber"  # the process's unique CRM field (crmuniquefield)
    # for leads without call_at (sent with callDateTime = the push moment); None sends none
    calltype: int | None = None
    callback_calltype: int = 41  # for leads with call_at (General call back)
    timezone: TimeZoneName = "UTC"  # the Jodo server's clock, for callDateTime / reqdatetime
    # The server's resdatetime further than this from our clock: polls follow its clock
    clock_tolerance_s: float = Field(120.0, gt=0)
    alt_phone_fields: tuple[str, ...] = ()  # form-template fields for alternate numbers
    outcomes: OutcomeSettings = OutcomeSettings()
    recordings: RecordingSettings = RecordingSettings()
    agents: AgentSettings = AgentSettings()
    reallocation: ReallocationSettings = ReallocationSettings()
    dispositions: DispositionSettings = DispositionSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()

    @field_validator("media", mode="before")
    @classmethod
    def _media(cls, value: object) -> int:
        if isinstance(value, str) and not value.strip().isdigit():
            by_name = {v.lower(): k for k, v in MEDIA.items()}
            if value.strip().lower() in by_name:
                return by_name[value.strip().lower()]
        try:
            number = int(str(value))
        except ValueError:
            number = -1
        if number not in MEDIA:
            choices = ", ".join(f"{k} ({v})" for k, v in MEDIA.items())
            raise ValueError(f"must be one of {choices}")
        return number

    @field_validator("calltype", "callback_calltype")
    @classmethod
    def _calltype(cls, value: int | None) -> int | None:
        if value is not None and value not in CALL_TYPES:
            raise ValueError(
                "must be one of " + ", ".join(f"{k} ({v})" for k, v in CALL_TYPES.items())
            )
        return value

    @model_validator(mode="after")
    def _dependent_settings(self) -> JodoSinkConfig:
        if self.dispositions.on_delete is not None and not self.dispositions.login:
            raise ValueError(
                "dispositions.on_delete needs dispositions.login (a removed lead has no agent)"
            )
        if self.reallocation.fallback and not self.agents.enabled:
            raise ValueError(
                "reallocation.fallback needs agents.enabled = true"
                " (an agent's absence is read with userStatus)"
            )
        return self

    def cannot_withdraw(self) -> str | None:
        if self.dispositions.on_delete is not None:
            return None
        return (
            "Jodo has no delete: a lead deleted in the CRM, put on a do-not-call list or "
            "whose consent ran out stays dialable; set [sinks.dispositions] login and "
            "on_delete so syncd closes it with saveDisposition"
        )

    def cannot_delete(self) -> str | None:
        if self.dispositions.on_delete is not None:
            return None  # a removal is disposed with on_delete
        return (
            f'Jodo has no delete: each lead the CRM deletes is refused ("{REMOVE_REFUSED}") '
            "and stays dialable; set [sinks.dispositions] login and on_delete so syncd "
            "closes it with saveDisposition"
        )

    def window_hold(self) -> WindowHold:
        """Jodo takes a start per record (callDateTime) and no end: the close is the dialer's."""
        return WindowHold(
            start=True,
            close="",
            how="callDateTime on every record: the lead's call_at, else the push moment; "
            "Jodo has no expiry or removal",
            in_dialer="set the process's calling hours in Jodo; set queue_ahead_minutes",
        )

    @property
    def media_name(self) -> str:
        """Return the text media saveDisposition expects ("Voice Out")."""
        return self.dispositions.media or MEDIA[self.media]
