"""Configuration: one TOML file, overridable by ``SYNCD_*`` environment variables.

``load_settings`` returns validated, typed settings or raises ``ConfigError`` with
every problem and its field path (``sinks[0].updateparam: must be one of …``).

Environment overrides use ``__`` between path parts; a list item is picked by its
index or by its ``name`` (non-alphanumerics as ``_``):
``SYNCD_STATE__PATH``, ``SYNCD_SINKS__0__APIKEY``, ``SYNCD_SINKS__JODO_MAIN__APIKEY``.
A whole list can be given as JSON (``SYNCD_ROUTES='[...]'``), so a container can be
configured entirely by environment.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import urllib.parse
from collections.abc import Collection
from datetime import date
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from syncd import registry
from syncd.core.dial_format import parse_dial_format
from syncd.core.scrub import register_secrets
from syncd.core.window import CallingWindow
from syncd.core.window_hold import NOT_HELD, WindowHold
from syncd.errors import ConfigError
from syncd.secrets import UNSET, Secret

ENV_PREFIX = "SYNCD_"
DEFAULT_CONFIG_ENV = "SYNCD_CONFIG"
SECTIONS = ("state", "log", "run", "health", "sources", "sinks", "routes", "writebacks")


def check_timezone(value: str) -> str:
    """Return ``value`` when it names an IANA time zone; ValueError naming it otherwise."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use a name like Asia/Kolkata)") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(check_timezone)]
"""A setting that names a time zone (``Asia/Kolkata``), checked when the config loads."""


class Strict(BaseModel):
    """Base for every config section: unknown settings are errors, not silently ignored."""

    # inf and nan are no settings: `timeout_s = inf` would wait forever.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Schedule(Strict):
    """How often a job runs in the daemon: an interval in seconds or a cron expression."""

    interval_s: float = Field(60.0, gt=0)
    cron: str | None = None  # crontab's five fields, in the machine's time zone

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value)
            except ValueError as exc:
                raise ValueError(f"not a cron expression ({exc})") from None
        return value


class SourceConfig(Strict):
    """Settings every source has; a kind's own model extends it."""

    # False: the source is not pulled on a schedule (a webhook: the sender brings the rows)
    scheduled: ClassVar[bool] = True

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str
    schedule: Schedule = Schedule()


class SinkConfig(Strict):
    """Settings every sink has; a kind's own model extends it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str
    batch_size: int = Field(500, ge=1, le=10_000)
    push_concurrency: int = Field(2, ge=1, le=64)
    progress_every_s: float = Field(5.0, ge=0)  # a push pass logs `push.progress`; 0: each batch
    max_attempts: int = Field(8, ge=1, le=1000)
    retry_base_s: float = Field(2.0, gt=0)
    retry_max_s: float = Field(600.0, gt=0)
    timeout_s: float = Field(30.0, gt=0)
    verify_tls: bool = True
    # An outbound proxy for this sink (http://user:pass@host:port; env:/file: like any
    # secret, it may hold a password); without it HTTPS_PROXY/HTTP_PROXY/NO_PROXY apply.
    proxy: Secret | None = None
    # A PEM file of extra certificate authorities to trust (a private CA), relative to
    # the config file.
    ca_bundle: Path | None = None
    rate_limit_per_s: float | None = Field(None, gt=0)  # requests a second to the dialer
    max_in_flight: int | None = Field(None, ge=1, le=256)  # concurrent requests to the dialer
    breaker_failures: int = Field(5, ge=1, le=1000)  # failed pushes in a row that open it
    breaker_reset_s: float = Field(30.0, gt=0)  # first pause before a probe; doubles
    dial_format: str = "e164"  # validated by core.dial_format.parse_dial_format
    dial_region: str | None = None  # for `national`; defaults to the route's default_region
    poll: Schedule = Schedule(interval_s=60.0)
    # At most one live record per main number in this dialer (the others wait their turn),
    # or "allow" several; see docs/reliability.md "Shared numbers"
    duplicates: Literal["one_per_number", "allow"] = "one_per_number"
    # Feed, don't flood (core.feed): keep about this many minutes of the dialer's pace
    # (measured from the outcomes it reports) waiting in it; None: send whatever is due.
    queue_ahead_minutes: float | None = Field(None, gt=0, le=1440)
    # …and what it may hold before a pace is known (or when slower); None: batch_size
    queue_start: int | None = Field(None, ge=1, le=100_000)
    # "agents": the outbox an [[routes]] kind = "agents" adds for its sink (never configured)
    _entity: str = PrivateAttr("leads")

    def window_hold(self) -> WindowHold:
        """Return what this dialer can be held to of the calling window (core.window_hold).

        A vendor's config overrides it with what its API takes and how it is set.
        """
        return NOT_HELD

    def cannot_withdraw(self) -> str | None:
        """Return why this dialer cannot take a lead back as configured (None: it can).

        A lead deleted in the CRM, listed, or whose consent ran out stays dialable there;
        `syncd check` says so with what to set.
        """
        return None

    def cannot_delete(self) -> str | None:
        """Return what becomes of a lead the CRM deletes, and what to do, when this dialer
        cannot remove it as configured (None: it removes it).

        `syncd check` says so for each route that carries the CRM's deletions here (a
        ``map.deleted`` column): such a lead stays dialable in the dialer.
        """
        return None

    @property
    def entity(self) -> str:
        return self._entity

    def agents_outbox(self) -> Self:
        """Return this sink's settings for the outbox of the agents provisioned into it."""
        from syncd.core.agents import agents_outbox

        copy = self.model_copy(update={"name": agents_outbox(self.name)})
        copy._entity = "agents"
        return copy

    @field_validator("dial_format")
    @classmethod
    def _dial_format(cls, value: str) -> str:
        parse_dial_format(value)
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else ""
        if text and text != UNSET:
            parts = urllib.parse.urlsplit(text)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be a proxy URL like http://proxy.example:3128")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value}: no such file (a PEM file of CA certificates)")
        return value

    def proxy_url(self) -> str | None:
        """Return the configured proxy URL, None when the environment decides."""
        text = self.proxy.get_secret_value() if self.proxy is not None else ""
        return text if text and text != UNSET else None


class WritebackConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str
    schedule: Schedule = Schedule(interval_s=30.0)


class FieldMap(Strict):
    """Which source column feeds which Lead field."""

    key: str
    phone: str
    alt_phones: list[str] = []  # each column may hold several numbers ("a, b; c")
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    call_at: str | None = None
    agent: str | None = None
    deleted: str | None = None  # a soft-delete flag column
    fields: dict[str, str] = {}  # extra Lead.fields name -> source column
    # the CRM's change time of the row: a row older than the version syncd holds of
    # its lead is not applied (listed as superseded); ISO 8601, the route's timezone
    # when it has no offset
    updated_at: str | None = None


class ZoneOverride(Strict):
    """Numbers under ``prefix`` are in these zones (the shipped corrections and the
    ``phonenumbers`` data give way to it; the longest prefix wins)."""

    prefix: str = Field(pattern=r"^\+?[0-9]{1,15}$")  # E.164 digits: "+52614", "+628"
    zones: list[str] = Field(min_length=1)  # IANA names

    @field_validator("zones")
    @classmethod
    def _zones(cls, value: list[str]) -> list[str]:
        from syncd.core.zones import check_zone

        return [check_zone(z) for z in value]


class PolicyConfig(Strict):
    """The safety gate (``syncd.core.gate``): when, and whether, a lead may be called.

    ``[policy]`` holds the defaults; a route's ``[routes.policy]`` overrides the
    settings it names. Every setting off by default: nothing changes until configured.
    """

    # weekday or range ("mon-fri", "sat", "all") -> "09:00-20:00" or "09:00-13:00,14:00-20:00"
    windows: dict[str, str] = {}
    holidays: list[date] = []  # no calls on these days (the lead's local date)
    # hold a lead whose window closes sooner: the dialer needs time to place the call
    min_minutes_left: float = Field(15.0, ge=0, le=240)
    # a CRM call_at outside the window: moved to the next opening, or the lead refused
    call_at_outside_window: Literal["move", "refuse"] = "move"
    timezone_column: str | None = None  # an IANA zone per lead: narrows the number's zones
    zone_overrides: list[ZoneOverride] = []  # prefix -> zones, where the number data is wrong
    dnc_column: str | None = None  # a do-not-call flag column in the CRM
    dnc_lists: list[str] = []  # names of [[dnc_lists]] whose numbers are never called
    dnc_values: list[str] = ["1", "true", "yes", "y", "dnc"]
    consent_column: str | None = None  # a consent flag or the date consent was given
    require_consent: bool = False  # no (or unreadable) consent blocks the lead
    consent_max_age_days: float | None = Field(None, gt=0)
    block_placeholders: bool = True  # refuse 9999999999, 1234567890 and the like
    placeholder_numbers: list[str] = []  # E.164 numbers refused on top of those
    block_number_types: list[str] = []  # e.g. ["premium_rate", "toll_free", "fixed_line"]

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: dict[str, str]) -> dict[str, str]:
        CallingWindow.parse(value)  # ValueError names the bad entry
        return value

    @field_validator("block_number_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        if not value:  # nothing to check: the phone library is not loaded for it
            return value
        import phonenumbers

        known = {n.lower() for n in vars(phonenumbers.PhoneNumberType) if n.isupper()}
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ValueError(f"unknown number type(s) {unknown}; known: {sorted(known)}")
        return value

    def columns(self) -> list[str]:
        """Return the CRM columns the gate reads."""
        return [c for c in (self.timezone_column, self.dnc_column, self.consent_column) if c]


class DncListConfig(Strict):
    """A do-not-call list: the numbers a source's rows hold, never called by a route using it."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    source: str  # a [[sources]] entry read for numbers, feeding no route
    column: str = "phone"
    default_region: str = Field("US", pattern=r"^[A-Z]{2}$")  # numbers without a country code
    # "append": each file adds its numbers; "snapshot": each file is the whole list, and
    # replaces the version before it (a number left out is no longer listed)
    mode: Literal["append", "snapshot"] = "append"
    # A list whose newest file is older than this is stale: a warning (status, /readyz,
    # metrics), and with strict every lead of a route using it is held until a fresh one
    max_age_days: float = Field(31.0, gt=0)
    strict: bool = False
    # snapshot: a new version that would unlist more than this share of the numbers in
    # force is refused as a cut-short export (the version in force stays); 100: never
    max_shrink_percent: float = Field(50.0, gt=0, le=100)


class RouteConfig(Strict):
    """Which source feeds which sink, how rows map to leads, and which rows qualify."""

    source: str
    sink: str
    map: FieldMap
    default_region: str = Field(pattern=r"^[A-Z]{2}$")
    call_at_format: str | None = None  # strptime format; ISO 8601 when unset
    timezone: TimeZoneName = "UTC"  # for call_at values without an offset
    deleted_values: list[str] = ["1", "true", "yes", "y", "deleted"]
    filter: dict[str, list[str]] = {}  # column -> accepted values (all must match)
    policy: PolicyConfig | None = None  # over [policy]; the merged result once loaded

    @property
    def name(self) -> str:
        return f"{self.source}->{self.sink}"


class AgentFieldMap(Strict):
    """Which CRM user column feeds which part of a dialer user (``[routes.map]`` of agents)."""

    login: str
    username: str | None = None  # the login when unset
    usertype: str | None = None  # else the route's usertype
    media: str | None = None  # "Voice Out; Email In": items split at , ; | or a line break
    groups: str | None = None
    skills: str | None = None  # "language:hindi:4; product:old:4" (name:detail:proficiency)
    languages: str | None = None  # "English; Hindi" (ids from language_ids) or "1:English"
    customer_code: str | None = None
    deleted: str | None = None  # a removed flag column: removed when one of deleted_values
    active: str | None = None  # an active flag column: removed when one of inactive_values
    contacts: dict[str, str] = {}  # contact type ("mobile number") -> column
    profile: dict[str, str] = {}  # gender, dob, doj, address, country, state, city, userimage

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: dict[str, str]) -> dict[str, str]:
        from syncd.core.agents import PROFILE_FIELDS

        unknown = sorted(set(value) - set(PROFILE_FIELDS))
        if unknown:
            raise ValueError(f"unknown profile field(s) {unknown}; known: {list(PROFILE_FIELDS)}")
        return value


class AgentRouteConfig(Strict):
    """``[[routes]]`` with ``kind = "agents"``: CRM users provisioned as the sink's agents."""

    kind: Literal["agents"] = "agents"
    source: str
    sink: str
    map: AgentFieldMap
    usertype: str = "user"  # when the map names no usertype column (or its cell is empty)
    media: list[str] = []  # when the map names no media column (or its cell is empty)
    language_ids: dict[str, str] = {}  # language name -> the dialer's id
    deleted_values: list[str] = ["1", "true", "yes", "y", "deleted"]
    inactive_values: list[str] = ["0", "false", "no", "n", "inactive", "disabled", "left"]
    filter: dict[str, list[str]] = {}  # column -> accepted values; others are removed

    @property
    def outbox(self) -> str:
        from syncd.core.agents import agents_outbox

        return agents_outbox(self.sink)

    @property
    def name(self) -> str:
        return f"{self.source}->{self.outbox}"


class StateConfig(Strict):
    """Where syncd keeps its state: a SQLite file (one host) or PostgreSQL (replicas)."""

    kind: Literal["sqlite", "postgresql"] = "sqlite"  # the store implementation (registry)
    path: Path = Path("syncd-state/state.db")
    # PostgreSQL: "postgresql+asyncpg://user@host/db" (env:/file: for one with a password);
    # setting it picks kind = "postgresql"
    url: Secret | None = None
    schema_name: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # PostgreSQL: a dead replica's claims return after this (a live one renews its leases)
    lease_s: float = Field(30.0, ge=5)
    leader_ttl_s: float = Field(20.0, ge=2)  # PostgreSQL: a dead leader's jobs move after this

    @model_validator(mode="after")
    def _renewed_in_time(self) -> StateConfig:
        # Leases are renewed every leader_ttl_s / 3: a live replica's must outlast that.
        if self.lease_s < self.leader_ttl_s / 3 * 2:
            raise ValueError("lease_s must be at least two thirds of leader_ttl_s")
        return self

    @model_validator(mode="before")
    @classmethod
    def _kind_from_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("url") and "kind" not in data:
            return {**data, "kind": "postgresql"}
        return data

    @model_validator(mode="after")
    def _url_for_postgresql(self) -> StateConfig:
        if self.kind == "postgresql":
            if self.url is None:
                raise ValueError('kind = "postgresql" needs url = "postgresql+asyncpg://…"')
            if self.url.get_secret_value() == UNSET:
                return self  # a command that does not open the store (`check --online` says)
            if not re.match(r"^postgres(ql)?(\+asyncpg)?://", self.url.get_secret_value()):
                raise ValueError("url must start with postgresql:// or postgresql+asyncpg://")
        return self

    @property
    def shared(self) -> bool:
        """Return True when several replicas may share this store (no file lock)."""
        return self.kind == "postgresql"

    def shown(self) -> str:
        """Return where the store is, as logs and `status` show it (no password)."""
        if self.url is None:
            return str(self.path)
        return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", self.url.get_secret_value())


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    stream: Literal["stderr", "stdout"] = "stderr"  # the daemon's logs (containers: stdout)


class RunConfig(Strict):
    deadline_s: float = Field(3600.0, gt=0)  # `--once` gives up pushing after this long
    normalize_processes: int = Field(0, ge=0, le=64)  # 0: one per core for large loads
    # Which library validates phone numbers: auto takes rphonenumbers (syncd[fast]) when
    # it is installed and agrees with phonenumbers on the routes' regions.
    phone_backend: Literal["auto", "phonenumbers", "rphonenumbers"] = "auto"
    shutdown_grace_s: float = Field(20.0, ge=0)
    sink_recheck_s: float = Field(300.0, gt=0)  # daemon: re-open a sink stopped by its config
    # daemon: each sink's push also runs this often (a commit or a retry falling due wakes it
    # at once; the tick catches rows queued from outside, e.g. `syncd retry`)
    push_tick_s: float = Field(10.0, gt=0)


class RetentionConfig(Strict):
    """How long history is kept. Leads, outcomes and cursors are state: never pruned."""

    events_days: float | None = Field(30.0, gt=0)  # each lead's pushes, holds, replies
    rejects_days: float | None = Field(30.0, gt=0)  # refused rows and their reasons
    runs_days: float | None = Field(90.0, gt=0)  # finished runs' summaries (the last stays)
    stats_days: float | None = Field(14.0, gt=0)  # hourly figures behind the page's charts
    every_s: float = Field(3600.0, gt=0)  # the daemon prunes this often; --once at each run

    def keep_s(self) -> dict[str, float]:
        """Return, per kind kept for a limited time, how many seconds of it to keep."""
        days = {
            "events": self.events_days,
            "rejects": self.rejects_days,
            "runs": self.runs_days,
            "stats": self.stats_days,
        }
        return {kind: d * 86400 for kind, d in days.items() if d is not None}


class HealthConfig(Strict):
    listen: str = "127.0.0.1:9310"
    enabled: bool = True
    # /status beyond loopback answers only `Authorization: Bearer <this>` (env:/file:)
    status_token: Secret | None = None
    # Host: names answered besides IP addresses, localhost, the listen address and this
    # machine's name (a DNS-rebinding page sends its own): a reverse proxy's name
    allowed_hosts: list[str] = []
    max_requests: int = Field(16, ge=1, le=10_000)  # handled at once; past it 503
    max_rate: float = Field(20.0, gt=0)  # requests served a second; beyond, they wait or 503
    request_timeout_s: float = Field(10.0, gt=0)  # a request still running then is cut off
    snapshot_s: float = Field(2.0, gt=0)  # /status, /metrics, /readyz read the store this often
    # connections kept open at once (each is an open file the sync may need); past it the
    # oldest still sending its request head is let go, or the new one gets 503.
    # Unset: a share of the open-file limit (syncd.daemon.connections)
    max_connections: int | None = Field(None, ge=1, le=1_000_000)
    head_timeout_s: float = Field(5.0, gt=0, le=300)  # a request head not whole by then: closed
    # a writeback failing this long (or never written since the start) is a /readyz warning
    writeback_alert_s: float = Field(600.0, gt=0)


class Settings(BaseModel):
    """The whole configuration.

    A plain model: the TOML file and its environment overlay are merged by
    ``load_settings`` (lists need index-aware merging that pydantic-settings' sources
    lack), so what ``BaseSettings`` adds was never used, and importing it cost every
    command ~50 ms. Its defaults are kept: defaults validated, any field type allowed.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, arbitrary_types_allowed=True
    )

    state: StateConfig = StateConfig()
    log: LogConfig = LogConfig()
    run: RunConfig = RunConfig()
    health: HealthConfig = HealthConfig()
    retention: RetentionConfig = RetentionConfig()
    sources: list[SourceConfig] = []
    sinks: list[SinkConfig] = []
    routes: list[RouteConfig] = []
    agent_routes: list[AgentRouteConfig] = []  # [[routes]] with kind = "agents"
    writebacks: list[WritebackConfig] = []
    policy: PolicyConfig = PolicyConfig()
    dnc_lists: list[DncListConfig] = []
    config_path: Path | None = None

    @model_validator(mode="after")
    def _route_policies(self) -> Settings:
        # Each route carries its whole policy (defaults + its own settings): the mapping
        # runs in worker processes from the route alone.
        routes = []
        for route in self.routes:
            own = route.policy.model_dump(exclude_unset=True) if route.policy else {}
            merged = PolicyConfig.model_validate({**self.policy.model_dump(), **own})
            routes.append(route.model_copy(update={"policy": merged}))
        object.__setattr__(self, "routes", routes)
        lists = {d.name for d in self.dnc_lists}
        sources = {s.name for s in self.sources}
        for i, route in enumerate(routes):
            assert route.policy is not None
            unknown = [n for n in route.policy.dnc_lists if n not in lists]
            if unknown:
                raise ValueError(f"routes[{i}].policy.dnc_lists: no [[dnc_lists]] named {unknown}")
        self._agent_outboxes(routes)
        for i, dnc in enumerate(self.dnc_lists):
            if dnc.source not in sources:
                raise ValueError(f"dnc_lists[{i}].source: no [[sources]] named {dnc.source!r}")
            if any(r.source == dnc.source for r in routes):
                raise ValueError(
                    f"dnc_lists[{i}].source: {dnc.source!r} also feeds a route; a list of "
                    "numbers not to call needs a source of its own"
                )
            kind = next(s.kind for s in self.sources if s.name == dnc.source)
            if dnc.mode == "snapshot" and kind != "csv_drop":
                raise ValueError(
                    f'dnc_lists[{i}].mode: "snapshot" reads each file as the whole list; '
                    f'source {dnc.source!r} is {kind!r}, not a csv_drop folder (use "append")'
                )
        return self

    def _agent_outboxes(self, routes: list[RouteConfig]) -> None:
        """Add, for each sink agents are provisioned into, the outbox they are pushed from."""
        outboxes: list[SinkConfig] = []
        for route in self.agent_routes:
            if any(r.source == route.source for r in routes):
                raise ValueError(
                    f"routes: source {route.source!r} feeds both leads and agents; CRM users "
                    "need a source of their own"
                )
            sink = next((s for s in self.sinks if s.name == route.sink), None)
            if sink is None:
                continue  # reported by the cross-checks
            if sink.kind not in registry.agent_sinks():
                raise ValueError(
                    f"routes: sink {sink.name!r} is a {sink.kind} dialer, which syncd cannot "
                    f"provision agents into (only {', '.join(sorted(registry.agent_sinks()))})"
                )
            known = [*self.sinks, *outboxes]  # validated again (a copy): added once
            if all(o.name != route.outbox for o in known):
                outboxes.append(sink.agents_outbox())
        if outboxes:
            object.__setattr__(self, "sinks", [*self.sinks, *outboxes])

    def route_names(self) -> list[str]:
        """Return every route's name, leads first (``crm->jodo``, ``users->jodo/agents``)."""
        return [r.name for r in self.routes] + [r.name for r in self.agent_routes]

    def agent_routes_of(self, source: str) -> list[AgentRouteConfig]:
        return [r for r in self.agent_routes if r.source == source]

    def dnc_list_of(self, source: str) -> DncListConfig | None:
        """Return the do-not-call list a source feeds, if it feeds one."""
        return next((d for d in self.dnc_lists if d.source == source), None)

    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.sources if s.name == name)

    def sink(self, name: str) -> SinkConfig:
        return next(s for s in self.sinks if s.name == name)


# ---------------------------------------------------------------------------
# loading


def load_settings(
    path: str | Path | None = None,
    environ: dict[str, str] | None = None,
    *,
    without_secrets: Collection[str] = (),
) -> Settings:
    """Return validated settings from the TOML file at ``path`` plus the environment.

    ``without_secrets`` names sections (``sinks``, ``sources``, ``writebacks``) whose
    secrets the calling command never uses: an unset one does not make it fail
    (``core``: the other sections', ``state.url`` and ``health.status_token``).
    """
    env = dict(os.environ if environ is None else environ)
    return validate_settings(read_config(path, env), environ=env, without_secrets=without_secrets)


def read_config(path: str | Path | None, env: dict[str, str]) -> dict[str, Any]:
    """Return the config as read (TOML plus environment overrides), not yet validated."""
    raw: dict[str, Any] = {}
    if path is None and env.get(DEFAULT_CONFIG_ENV):
        path = env[DEFAULT_CONFIG_ENV]
    if path is not None:
        raw = _read_toml(Path(path))
    raw = apply_env_overlay(raw, env)
    if path is not None:
        raw["config_path"] = str(Path(path).resolve())
        _resolve_relative_paths(raw, Path(path).resolve().parent)
    return raw


def secret_references(raw: Any, where: str = "") -> list[tuple[str, str]]:
    """Return (field path, reference) for every ``env:`` / ``file:`` value of a raw config.

    Field paths read like validation errors (``sinks[0].apikey``), so `syncd check
    --online` names each secret the way the operator finds it in the file.
    """
    found: list[tuple[str, str]] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            found += secret_references(value, f"{where}.{key}" if where else str(key))
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            found += secret_references(value, f"{where}[{i}]")
    elif isinstance(raw, str) and raw.startswith(("env:", "file:")):
        found.append((where, raw))
    return found


def holds_unset(model: Any) -> bool:
    """Return True when a settings tree holds a secret that could not be read (lenient load)."""
    if isinstance(model, SecretStr):
        return model.get_secret_value() == UNSET
    if isinstance(model, BaseModel):
        return any(holds_unset(getattr(model, name)) for name in type(model).model_fields)
    if isinstance(model, list | tuple):
        return any(holds_unset(item) for item in model)
    if isinstance(model, dict):
        return any(holds_unset(item) for item in model.values())
    return False


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    # Relative paths in a config file mean "next to the config", not "wherever cron ran".
    state = raw.get("state")
    if isinstance(state, dict) and isinstance(state.get("path"), str):
        state["path"] = str(base / state["path"])
    for section in ("sources", "writebacks"):
        for item in raw.get(section) or []:
            if not isinstance(item, dict):
                continue
            for key in ("inbox", "outbox", "directory"):
                if isinstance(item.get(key), str) and "://" not in item[key]:
                    item[key] = str(base / item[key])
    for item in raw.get("sinks") or []:
        if isinstance(item, dict) and isinstance(item.get("ca_bundle"), str):
            item["ca_bundle"] = str(base / item["ca_bundle"])


def apply_env_overlay(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """Return ``raw`` with every ``SYNCD_A__B__C=value`` applied on top of it."""
    result: dict[str, Any] = json.loads(json.dumps(raw, default=str))
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == DEFAULT_CONFIG_ENV:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts or parts[0] not in SECTIONS:
            continue  # SYNCD_TEST_PG_URL and friends are not configuration
        _set_path(result, parts, _env_value(environ[name]))
    return result


def _env_value(text: str) -> Any:
    # Lists and tables come as JSON; anything else stays a string for pydantic to coerce.
    stripped = text.strip()
    if stripped[:1] in "[{":
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return text
    return text


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "_", name.lower())


def _set_path(node: Any, parts: list[str], value: Any) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        index = _list_index(node, head)
        if not rest:
            node[index] = value
            return
        if not isinstance(node[index], dict | list):
            node[index] = {}
        _set_path(node[index], rest, value)
        return
    if not rest:
        node[head] = value
        return
    child = node.get(head)
    if not isinstance(child, dict | list):
        child = [] if head in ("sources", "sinks", "routes", "writebacks") else {}
        node[head] = child
    _set_path(child, rest, value)


MAX_ENV_LIST_ITEMS = 1000  # SYNCD_SINKS__99999999__… must not build a list of millions


def _list_index(items: list[Any], head: str) -> int:
    if head.isdigit():
        index = int(head)
        if index > len(items) or index >= MAX_ENV_LIST_ITEMS:
            raise ConfigError(
                f"environment override index {index}: the list has {len(items)} item(s); "
                f"use 0 to {len(items)} (the last adds one), or the item's name"
            )
        if index == len(items):
            items.append({})
        return index
    for i, item in enumerate(items):
        if isinstance(item, dict) and _norm(str(item.get("name", ""))) == head:
            return i
    items.append({"name": head})
    return len(items) - 1


def validate_settings(
    raw: dict[str, Any],
    environ: dict[str, str] | None = None,
    *,
    without_secrets: Collection[str] = (),
) -> Settings:
    """Return typed settings, or raise ConfigError listing every problem found."""
    context: dict[str, Any] = {"environ": dict(os.environ if environ is None else environ)}
    lenient = {**context, "lenient_secrets": True}
    problems: list[str] = []
    plugin_sections = ("sources", "sinks", "writebacks")
    core = {k: v for k, v in raw.items() if k not in plugin_sections}
    for section in plugin_sections:
        if section in raw and not isinstance(raw[section], list):
            problems.append(f"{section}: must be a list of tables ([[{section}]])")
    typed = {
        section: _typed_items(
            raw,
            section,
            plugins,
            problems,
            lenient if section in without_secrets else context,
        )
        for section, plugins in (
            ("sources", registry.sources()),
            ("sinks", registry.sinks()),
            ("writebacks", registry.writebacks()),
        )
    }
    problems.extend(_cross_checks(raw))
    core.update(_split_routes(raw, problems))
    try:
        # Plug-in sections were validated by their own models above; subclass
        # instances pass through unchanged.
        settings = Settings.model_validate(
            {**core, **typed}, context=lenient if "core" in without_secrets else context
        )
    except ValidationError as exc:
        problems.extend(format_validation_error(exc))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    register_secrets(*secret_values(settings))
    return settings


def secret_values(model: Any) -> list[str]:
    """Return every secret a settings tree holds (and the password inside a secret URL)."""
    found: list[str] = []
    if isinstance(model, SecretStr):
        value = model.get_secret_value()
        found.append(value)
        if "://" in value:
            password = urllib.parse.urlsplit(value).password
            if password:
                found += [password, urllib.parse.unquote(password)]
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            found += secret_values(getattr(model, name))
    elif isinstance(model, list | tuple):
        for item in model:
            found += secret_values(item)
    elif isinstance(model, dict):
        for item in model.values():
            found += secret_values(item)
    return [s for s in found if s and s != UNSET]


def _typed_items(
    raw: dict[str, Any],
    section: str,
    plugins: dict[str, registry.Plugin],
    problems: list[str],
    context: dict[str, Any],
) -> list[Any]:
    typed: list[Any] = []
    items = raw.get(section) or []
    if not isinstance(items, list):
        return typed  # the base model already reported it
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        kind = item.get("kind")
        if kind not in plugins:
            known = ", ".join(sorted(plugins))
            problems.append(f"{section}[{i}].kind: must be one of {known}")
            continue
        try:
            model = plugins[kind].load_config_class()
        except ImportError as exc:
            problems.append(
                f"{section}[{i}].kind: {kind} is not available here ({exc.name} missing)"
            )
            continue
        try:
            typed.append(model.model_validate(item, context=context))
        except ValidationError as exc:
            problems.extend(format_validation_error(exc, prefix=f"{section}[{i}]"))
    return typed


def _split_routes(raw: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """Return the lead routes and the agent routes (validated, errors named by index)."""
    routes = raw.get("routes")
    if not isinstance(routes, list):
        return {}
    leads: list[Any] = []
    agents: list[AgentRouteConfig] = []
    for i, item in enumerate(routes):
        if not isinstance(item, dict):
            leads.append(item)  # the base model reports it
            continue
        kind = item.get("kind", "leads")
        if kind == "leads":
            leads.append({k: v for k, v in item.items() if k != "kind"})
        elif kind == "agents":
            try:
                agents.append(AgentRouteConfig.model_validate(item))
            except ValidationError as exc:
                problems.extend(format_validation_error(exc, prefix=f"routes[{i}]"))
        else:
            problems.append(f"routes[{i}].kind: must be leads or agents")
    return {"routes": leads, "agent_routes": agents}


def _names(raw: dict[str, Any], section: str) -> list[str]:
    items = raw.get(section) or []
    if not isinstance(items, list):
        return []
    return [str(i.get("name")) for i in items if isinstance(i, dict) and i.get("name")]


def _cross_checks(raw: dict[str, Any]) -> list[str]:
    """Return problems between sections (names used twice, routes to nowhere)."""
    problems: list[str] = []
    for section in ("sources", "sinks", "writebacks"):
        seen: set[str] = set()
        for i, name in enumerate(_names(raw, section)):
            if name in seen:
                problems.append(f"{section}[{i}].name: {name!r} is used twice")
            seen.add(name)
    sources, sinks = set(_names(raw, "sources")), set(_names(raw, "sinks"))
    pairs: set[tuple[object, object]] = set()
    routes = raw.get("routes") or []
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(route, dict):
            continue
        source, sink = route.get("source"), route.get("sink")
        if source is not None and source not in sources:
            problems.append(f"routes[{i}].source: no source named {source!r}")
        if sink is not None and sink not in sinks:
            problems.append(f"routes[{i}].sink: no sink named {sink!r}")
        if (source, sink) in pairs:
            problems.append(f"routes[{i}]: {source}->{sink} is routed twice")
        pairs.add((source, sink))
    return problems


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """Return one ``path: message`` line per pydantic error, worded for people."""
    lines = []
    for err in exc.errors(include_url=False):
        path = prefix
        for part in err["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += f".{part}" if path else str(part)
        lines.append(f"{path or '(top level)'}: {_message(err)}")
    return lines


_PATTERN_HINTS = {
    r"^https?://": "must be an http:// or https:// URL",
    r"^[A-Z]{2}$": "must be a two-letter ISO country code in capitals, e.g. IN, GB, US",
    r"^[A-Za-z0-9_.-]+$": "may use only letters, digits, '_', '.' and '-'",
}


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", ""))
        choices = [c.strip().strip("'\"") for c in re.split(r",| or ", expected) if c.strip()]
        return "must be one of " + ", ".join(choices)
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown setting (check the spelling)"
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    if kind == "string_pattern_mismatch":
        pattern = str(err.get("ctx", {}).get("pattern", ""))
        return _PATTERN_HINTS.get(pattern, f"must match {pattern}")
    return str(err["msg"])
