"""The Jodo simulator's call floor: agents, a dialing engine and call recordings.

Time moves lazily: every API request first calls :meth:`Floor.advance`, which
applies agent status changes that fell due and dials the records whose turn has
come, at ``DialPlan.interval_s`` seconds per call (0: every due record at once).
Tests drive it through the simulator's methods (``set_agent_status``,
``publish_recordings``, ``advance``) or an injected clock.

A record is dialled when it is due (``callDateTime`` reached, retry delay over),
not disposed, not finished, and its agent can take it: a record assigned to a
``userlogin`` waits for that agent to be logged in; an unassigned record goes to
a logged-in agent in turn (or to nobody, when the process has no agents at all).
Each call writes status, disposition, attempts, agent, last call time and
``systemcallid`` into the record and stamps ``storedatetime``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
CHANGE_FORMAT = "%d-%b-%y %I:%M:%S %p"  # statuschangetime, "07-Mar-19 11:59:59 PM"

LOGGED_OUT = 0
READY = 1
AGENT_STATUSES = {
    LOGGED_OUT: "Logged Out",
    READY: "Ready",
    2: "On Call",
    3: "Break",
    4: "Wrap Up",
    11: "System Sent NA",
}

# Form-template field -> what the dialing engine writes there (the sink's defaults).
OUTCOME_FIELDS = {
    "status": "callstatus",
    "disposition": "disposition",
    "attempts": "attempts",
    "last_call": "lastcalldatetime",
    "agent": "agentlogin",
    "call_id": "systemcallid",
}


@dataclass(frozen=True)
class DialResult:
    """What one call attempt ends in; ``final`` results are not dialled again."""

    status: str
    disposition: str = ""
    final: bool = False
    weight: float = 1.0


DEFAULT_RESULTS = (
    DialResult("Connected", "Interested", final=True, weight=4),
    DialResult("Connected", "Not Interested", final=True, weight=1),
    DialResult("No Answer", weight=3.5),
    DialResult("Busy", weight=1.5),
)


@dataclass
class DialPlan:
    """How the dialing engine works: pace, retries, results and recordings."""

    interval_s: float | None = None  # seconds per call; 0: all due at once; None: engine off
    retry_s: float = 60.0  # before a record that was not reached is dialled again
    max_attempts: int = 3
    recording_delay_s: float | None = 0.0  # None: only after publish_recordings()
    seed: int = 0
    results: tuple[DialResult, ...] = DEFAULT_RESULTS
    fields: dict[str, str] = field(default_factory=lambda: dict(OUTCOME_FIELDS))


@dataclass
class Agent:
    login: str
    status: int = READY
    changed_at: float = 0.0
    schedule: list[tuple[float, int]] = field(default_factory=list)  # (at, status), sorted

    @property
    def present(self) -> bool:
        return self.status != LOGGED_OUT


@dataclass
class DialState:
    """The engine's bookkeeping for one record (not part of the record itself)."""

    next_at: float = 0.0
    attempts: int = 0
    final: bool = False
    disposed: bool = False


@dataclass
class Call:
    call_id: str
    mobilenumber: str
    at: float
    recording_at: float | None  # when the recording exists; None: not yet
    path: str


class Floor:
    """Agents, calls and recordings of the simulated contact center."""

    def __init__(self, plan: DialPlan, zone: str, clock: Callable[[], float]) -> None:
        self.plan = plan
        self.zone = ZoneInfo(zone)
        self.clock = clock
        self.rng = random.Random(plan.seed)
        self.agents: dict[str, Agent] = {}
        self.calls: dict[str, Call] = {}
        self.scripts: dict[str, list[DialResult]] = {}  # mobilenumber -> results, in order
        self._paced_at: dict[str, float] = {}  # servicekey -> clock of the last paced call
        self._serial = itertools.count(1)
        self._turn = 0

    # -- time ---------------------------------------------------------------------

    def text(self, when: float, fmt: str = TIME_FORMAT) -> str:
        return datetime.fromtimestamp(when, self.zone).strftime(fmt)

    def parse(self, text: object) -> float | None:
        try:
            parsed = datetime.strptime(str(text), TIME_FORMAT)
        except ValueError:
            return None
        return parsed.replace(tzinfo=self.zone).timestamp()

    # -- agents -------------------------------------------------------------------

    def set_agent(self, login: str, status: int, since: float | None = None) -> None:
        agent = self.agents.setdefault(login, Agent(login))
        agent.status = status
        agent.changed_at = self.clock() if since is None else since

    def schedule_agent(self, login: str, after_s: float, status: int) -> None:
        agent = self.agents.setdefault(login, Agent(login, changed_at=self.clock()))
        agent.schedule.append((self.clock() + after_s, status))
        agent.schedule.sort()

    def user_status(self, login: str, now: float) -> dict[str, Any]:
        agent = self.agents.get(login)
        if agent is None:
            return {"login": login, "statusdesc": "User not found", "status": 5}
        return {
            "duration": int(now - agent.changed_at),
            "currentstatus": agent.status,
            "currentstatusdesc": AGENT_STATUSES.get(agent.status, "Unknown"),
            "statuschangetime": self.text(agent.changed_at, CHANGE_FORMAT),
            "login": login,
            "statusdesc": "Success",
            "status": 3,
        }

    def _agent_for(self, record: dict[str, Any]) -> str | None:
        assigned = str(record.get("userlogin") or "").strip()
        if assigned:
            agent = self.agents.get(assigned)
            return assigned if agent is not None and agent.present else None
        if not self.agents:
            return ""
        ready = sorted(a.login for a in self.agents.values() if a.status == READY)
        if not ready:
            return None
        self._turn += 1
        return ready[self._turn % len(ready)]

    # -- dialing ------------------------------------------------------------------

    def advance(self, processes: Iterable[Any]) -> int:
        """Apply due agent changes and dial due records; return how many calls were made."""
        now = self.clock()
        for agent in self.agents.values():
            while agent.schedule and agent.schedule[0][0] <= now:
                at, status = agent.schedule.pop(0)
                agent.status, agent.changed_at = status, at
        if self.plan.interval_s is None:
            return 0
        made = 0
        for process in processes:
            made += self._dial_process(process, now)
        return made

    def _dial_process(self, process: Any, now: float) -> int:
        interval = self.plan.interval_s or 0.0
        last = self._paced_at.setdefault(process.servicekey, now)
        budget = len(process.records) if interval <= 0 else int((now - last) / interval)
        made = 0
        for slot, record in enumerate(process.records):
            if made >= budget:
                break
            state = process.dial_state.setdefault(slot, DialState())
            if state.disposed or state.final or state.next_at > now:
                continue
            due = self.parse(record.get("callDateTime")) if record.get("callDateTime") else None
            if due is not None and due > now:
                continue
            agent = self._agent_for(record)
            if agent is None:
                continue
            self._dial(process, record, state, agent, now)
            made += 1
        if interval > 0:
            self._paced_at[process.servicekey] = last + made * interval if made else now
        return made

    def _result(self, number: str) -> DialResult:
        script = self.scripts.get(number)
        if script:
            return script.pop(0)
        weights = [r.weight for r in self.plan.results]
        return self.rng.choices(self.plan.results, weights=weights)[0]

    def _dial(
        self, process: Any, record: dict[str, Any], state: DialState, agent: str, now: float
    ) -> None:
        number = str(record.get("mobilenumber", ""))
        result = self._result(number)
        state.attempts += 1
        call_id = self.text(now, "%y%m%d%H%M%S") + f"{next(self._serial):06d}"
        delay = self.plan.recording_delay_s
        self.calls[call_id] = Call(
            call_id,
            number,
            now,
            None if delay is None else now + delay,
            f"http://recordings.jodo.sim/recordings/1/1/{self.text(now, '%Y/%m/%d/%H')}/"
            f"{call_id}_0000.MP3",
        )
        f = self.plan.fields
        status, disposition = result.status, result.disposition
        if result.final:
            state.final = True
        elif state.attempts >= self.plan.max_attempts:
            state.final = True
            status, disposition = "Closed", "Attempts exhausted"
        else:
            state.next_at = now + self.plan.retry_s
        record.update(
            {
                f["status"]: status,
                f["disposition"]: disposition,
                f["attempts"]: str(state.attempts),
                f["last_call"]: self.text(now),
                f["agent"]: agent,
                f["call_id"]: call_id,
                "storedatetime": self.text(now),
            }
        )

    def dispose(
        self, record: dict[str, Any], state: DialState, remarks: str, ids: tuple[int, int]
    ) -> None:
        state.disposed = True
        f = self.plan.fields
        record.update(
            {
                f["status"]: "Closed",
                f["disposition"]: remarks or "Disposed",
                "dispomasterid": ids[0],
                "disporeasonid": ids[1],
                "storedatetime": self.text(self.clock()),
            }
        )

    # -- recordings ---------------------------------------------------------------

    def recording(self, call_id: str) -> dict[str, Any]:
        call = self.calls.get(call_id)
        if call is None or call.recording_at is None or call.recording_at > self.clock():
            return {
                "systemcallid": call_id,
                "statusdesc": "Data not found",
                "status": 67,
                "recordingfilepath": "",
            }
        return {
            "systemcallid": call_id,
            "statusdesc": "success",
            "status": 3,
            "recordingfilepath": call.path,
        }

    def publish_recordings(self) -> int:
        now = self.clock()
        waiting = [c for c in self.calls.values() if c.recording_at is None or c.recording_at > now]
        for call in waiting:
            call.recording_at = now
        return len(waiting)
