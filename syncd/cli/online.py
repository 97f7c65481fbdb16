"""`syncd check --online`: try every part of a config the way the daemon will use it.

The file alone says nothing of a missing inbox, a dialer on another port or a
revoked key: each shows at run time. So this resolves every secret, opens the
state store read-only, opens each source (the inbox and its subfolders writable;
the query's first row), logs in to each dialer and makes one harmless read (the
sink's own ``probe``: vendor specifics stay in its package), and tries each
writeback's target without writing to it.

Every check runs, whatever another found, all at once, each bounded by
``timeout_s``; a part whose secret cannot be read is not tried (its secret's
line says why). A failure names the part as the file does (``sinks[1]``), what
went wrong and the setting to fix. Nothing is written, no store is opened for
work: a daemon running on the same config is not disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from syncd import registry
from syncd.config import Settings, holds_unset
from syncd.core.mapping import required_columns
from syncd.errors import CheckFailed, SinkConfigError, StoreError, SyncdError, VendorError
from syncd.secrets import secret_problem

DEFAULT_TIMEOUT_S = 10.0  # a part that does not answer is reported within this
CLOSE_TIMEOUT_S = 3.0  # a logout that hangs does not hold the report


class Verdict(enum.StrEnum):
    OK = "ok"
    FAILED = "FAILED"
    SKIPPED = "skipped"  # not tried: a secret it needs could not be read


@dataclass(frozen=True)
class Result:
    part: str  # as the file names it: "sinks[1] jodo-b (jodo)", "secret sinks[1].apikey"
    verdict: Verdict
    text: str  # what the check proved, or what is wrong and what to do

    def line(self) -> str:
        return f"  {self.verdict.value:<8}{self.part}: {self.text}"


class _NoStore:
    """The store a probed sink is built with: any use is a bug (a probe writes nothing)."""

    def __getattr__(self, name: str) -> Any:
        raise StoreError(f"`syncd check --online` opens no state store (asked for {name})")


@dataclass(frozen=True)
class _Part:
    part: str  # how the report names it
    field: str  # its config path: "sinks[1]", "state"
    run: Callable[[], Awaitable[str]]
    close: Callable[[], Awaitable[None]] | None = None
    url: str | None = None  # a plain (not secret) address to name when it does not answer


async def online_checks(
    settings: Settings,
    secrets: list[tuple[str, str]],
    environ: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Result]:
    """Return one result per secret and per part of ``settings``, in the file's order.

    ``secrets`` are the config's ``env:`` / ``file:`` references with their field
    paths (``config.secret_references``).
    """
    results: list[Result] = []
    for field, ref in secrets:
        problem = secret_problem(ref, environ)
        verdict = Verdict.OK if problem is None else Verdict.FAILED
        results.append(Result(f"secret {field} ({ref})", verdict, problem or "read"))
    parts, skipped = _parts(settings, timeout_s)
    tried = await asyncio.gather(*(_run(p, timeout_s) for p in parts))
    by_part = {r.part: r for r in [*tried, *skipped]}
    order = [p.part for p in parts] + [r.part for r in skipped]
    results += [by_part[name] for name in sorted(order, key=_file_order)]
    return results


def _file_order(part: str) -> tuple[int, int]:
    """Sort parts as the file has them: state, sources, sinks, writebacks, by index."""
    sections = ("state", "sources", "sinks", "writebacks")
    head = part.split(" ", 1)[0]
    name, _, rest = head.partition("[")
    index = int(rest.rstrip("]")) if rest else 0
    return (sections.index(name) if name in sections else len(sections), index)


def _parts(settings: Settings, timeout_s: float) -> tuple[list[_Part], list[Result]]:
    """Return the parts to try, and a skipped result for each whose secret is unset."""
    from syncd.run.sinks import build_sink
    from syncd.state.probe import probe_store
    from syncd.writeback.runner import build_writeback

    parts: list[_Part] = []
    skipped: list[Result] = []

    def add(part: _Part, cfg: Any) -> None:
        if holds_unset(cfg):
            why = f"not tried: a secret of {part.field} could not be read (see its line)"
            skipped.append(Result(part.part, Verdict.SKIPPED, why))
        else:
            parts.append(part)

    state = settings.state
    add(
        _Part(f"state store ({state.kind})", "state", partial(probe_store, state, timeout_s)),
        state,
    )
    for i, src in enumerate(settings.sources):
        wanted = {c for r in settings.routes if r.source == src.name for c in required_columns(r)}
        factory = registry.sources()[src.kind].load_factory()
        build = partial(factory, src, required_columns=wanted)
        add(_object_part(f"sources[{i}] {src.name} ({src.kind})", f"sources[{i}]", build), src)
    store: Any = _NoStore()
    for i, sink in enumerate(settings.sinks):
        if sink.entity == "leads":
            name, build = (
                f"sinks[{i}] {sink.name} ({sink.kind})",
                partial(build_sink, sink, settings, store),
            )
            add(_object_part(name, f"sinks[{i}]", build, getattr(sink, "url", None)), sink)
    for i, wb in enumerate(settings.writebacks):
        name, build = f"writebacks[{i}] {wb.name} ({wb.kind})", partial(build_writeback, wb)
        add(_object_part(name, f"writebacks[{i}]", build, getattr(wb, "url", None)), wb)
    return parts, skipped


def _object_part(part: str, field: str, build: Callable[[], Any], url: Any = None) -> _Part:
    """Return the part that builds a source, sink or writeback, probes it, then closes it."""
    built: list[Any] = []

    async def run() -> str:
        obj = build()
        built.append(obj)
        probe = getattr(obj, "probe", None)
        if probe is None:
            return "no online check for this kind (a plug-in without probe())"
        said: str = await probe()
        return said

    async def close() -> None:
        for obj in built:
            closer = getattr(obj, "close", None)
            if closer is not None:
                await closer()

    return _Part(part, field, run, close, url if isinstance(url, str) else None)


async def _run(part: _Part, timeout_s: float) -> Result:
    """Return the result of one part's check; nothing it raises stops the others."""
    try:
        async with asyncio.timeout(timeout_s):
            said = await part.run()
        return Result(part.part, Verdict.OK, said)
    except CheckFailed as exc:
        return Result(part.part, Verdict.FAILED, _failed(exc, part.field))
    except TimeoutError:
        where = f" from {part.url}" if part.url else ""
        fix = f"check {part.field}.url, " if part.url else "check "
        return Result(
            part.part,
            Verdict.FAILED,
            f"no answer within {timeout_s:g} s{where}: {fix}and that it is up and reachable "
            "from here (a firewall that drops packets, a proxy)",
        )
    except SinkConfigError as exc:
        return Result(
            part.part,
            Verdict.FAILED,
            f"the dialer refused the sink: {exc}: fix the settings it names in {part.field}",
        )
    except VendorError as exc:
        where = f" ({part.url})" if part.url else ""
        return Result(
            part.part,
            Verdict.FAILED,
            f"cannot reach it{where}: {exc}: check {part.field}.url and that it is up and "
            "reachable from here",
        )
    except SyncdError as exc:
        return Result(part.part, Verdict.FAILED, str(exc))
    except Exception as exc:  # a plug-in's bug must not hide the other parts' results
        return Result(part.part, Verdict.FAILED, f"internal error: {type(exc).__name__}: {exc}")
    finally:
        if part.close is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await part.close()


def _failed(exc: CheckFailed, field: str) -> str:
    """Return a failure's line: what is wrong, the settings to fix (by path), what to do."""
    text = exc.reason
    if exc.settings:
        text += ": fix " + " or ".join(f"{field}.{s}" for s in exc.settings)
    if exc.action:
        text += f"; {exc.action}" if exc.settings else f": {exc.action}"
    return text


def report(results: list[Result]) -> tuple[list[str], int]:
    """Return the report's lines and how many checks failed."""
    failed = sum(r.verdict is Verdict.FAILED for r in results)
    lines = [r.line() for r in results]
    return lines, failed
