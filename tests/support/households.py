"""A household-style CRM export (several leads per number) and what a dialer holds of it."""

from __future__ import annotations

from dataclasses import dataclass

from syncd.simulators.jodo.api import JodoSimulator


@dataclass(frozen=True)
class Member:
    key: str
    national: str  # the number as the CRM writes it (India, national digits)
    dialled: str  # as the test config's dial_format "00" sends it


def households(count: int, size: int, singles: int) -> list[Member]:
    """Return ``count`` households of ``size`` leads sharing one number, then ``singles``."""
    members: list[Member] = []
    for h in range(count):
        national = f"98200{h:05d}"
        members += [Member(f"H{h:03d}-{m}", national, f"0091{national}") for m in range(size)]
    for s in range(singles):
        national = f"98210{s:05d}"
        members.append(Member(f"S{s:03d}", national, f"0091{national}"))
    return members


def export(members: list[Member], deleted: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """Return the CSV a CRM writes: every lead, with a soft-delete flag."""
    rows = ["id,phone,first,last,deleted"]
    rows += [
        f"{m.key},{m.national},Name{i},Family,{'yes' if m.key in deleted else 'no'}"
        for i, m in enumerate(members)
    ]
    return "\n".join(rows) + "\n"


def open_records(sim: JodoSimulator, key_field: str = "leadnumber") -> dict[str, list[str]]:
    """Return, per number, the CRM keys of the records the dialer would still ring."""
    with sim.lock:
        process = sim.processes["VoiceProcess"]
        out: dict[str, list[str]] = {}
        for slot, record in enumerate(process.records):
            state = process.dial_state.get(slot)
            if state is not None and (state.disposed or state.final):
                continue
            out.setdefault(str(record.get("mobilenumber")), []).append(str(record.get(key_field)))
        return out
