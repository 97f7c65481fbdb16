"""The pull side: source chunks → mapping → reconcile → one transaction per chunk.

The outbox rows, the rejects and the source's new cursor commit together, so a
crash never loses or skips a row: a restart resumes at the committed cursor.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from syncd import registry
from syncd.config import AgentRouteConfig, DncListConfig, RouteConfig, Settings, SourceConfig
from syncd.core import phones
from syncd.core.agent_mapping import AgentMapper, agent_columns
from syncd.core.audit import Facts, list_of, sink_policy_version
from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.core.gate import GateDecision, Verdict, lead_zones
from syncd.core.keys import looked_up, not_looked_up
from syncd.core.mapping import (
    Mapper,
    NormalizedRow,
    normalize_rows,
    required_columns,
    route_fingerprint,
    row_hash_list,
    withdrawal,
)
from syncd.core.model import Action, LeadWrite, Reject
from syncd.core.phones import PhoneError, to_e164
from syncd.core.raw_rows import RawRows
from syncd.core.reconcile import (
    RowReject,
    Versions,
    latest_of,
    naming_attempt,
    older_rows,
    plan_chunk,
    row_keys,
    row_lines,
    triage,
)
from syncd.core.summary import RunSummary
from syncd.core.versions import is_older_reason, version_of
from syncd.errors import ConfigError, StoreError
from syncd.run.dnc_lists import version_labels
from syncd.run.refused import (
    chunk_fingerprint,
    environment,
    recall_refused,
    refuse_again,
    remember,
)
from syncd.run.window import unmarked
from syncd.sources.base import Chunk, Source
from syncd.sources.csv_drop import CsvDropSource
from syncd.state.base import HANDED_STATS, BlockedLead, ChunkWrite, DncVersion, StateStore

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

log = structlog.get_logger("syncd.pull")

POOL_THRESHOLD = 2000  # rows needing normalization before a chunk fans out to processes
PROBE_KEYS = 64  # keys looked up to guess whether a chunk is mostly new
Speculative = dict[str, "asyncio.Future[list[NormalizedRow]]"]  # route name -> mapping under way
Prepared = dict[str, tuple[list[str], list[str]]]  # route name -> rows' raw hashes and keys
AnyRoute = RouteConfig | AgentRouteConfig


def build_source(
    cfg: SourceConfig,
    routes: list[RouteConfig],
    store: StateStore,
    required: set[str] | None = None,
) -> Source:
    """Return the source object for a config, via the registry."""
    factory = registry.sources()[cfg.kind].load_factory()
    required = required or {c for r in routes for c in required_columns(r)}

    async def load_rejects(origin: str) -> list[tuple[int | None, str, str, str]]:
        return await store.rejects_for_origin(cfg.name, origin)

    source: Source = factory(cfg, required_columns=required, load_rejects=load_rejects)
    return source


def key_column(route: AnyRoute) -> str:
    """Return the CRM column a route keys its leads (or users) by."""
    return route.map.key if isinstance(route, RouteConfig) else route.map.login


_CHOSEN: dict[tuple[str, tuple[str, ...]], phones.BackendChoice] = {}


def backend_wanted(settings: Settings) -> tuple[str, tuple[str, ...]]:
    """Return what ``phones.use_backend`` is asked: the setting and the routes' regions."""
    regions = {r.default_region for r in settings.routes}
    regions.update(d.default_region for d in settings.dnc_lists)
    return settings.run.phone_backend, tuple(sorted(regions))


def choose_phone_backend(settings: Settings) -> phones.BackendChoice:
    """Return the phone library mapping uses, chosen (and logged) once per process.

    The mapping workers make the same choice when they start (``run.workers``).
    """
    wanted = backend_wanted(settings)
    choice = _CHOSEN.get(wanted)
    if choice is None:
        try:
            choice = _CHOSEN[wanted] = phones.use_backend(*wanted)
        except phones.BackendError as exc:
            raise ConfigError(f"[run] phone_backend: {exc}") from None
        log.info("phones.backend", backend=choice.name, why=choice.why)
    else:
        phones.use_backend(*wanted)  # cached: another setting may have switched it since
    return choice


class Puller:
    """Pulls every source once and reconciles what it reads into the outbox."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        summary: RunSummary,
        *,
        progress: Callable[[Source, int], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        lead: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        # The leader's job this pull runs as (`pull:<source>`, on a store replicas share):
        # each commit holds only while this process still leads it (ChunkWrite.lead)
        self.lead = lead
        self.summary = summary
        self.progress = progress
        self.clock = clock  # the run's: consent ages against it when rows are mapped
        self._pool: ProcessPoolExecutor | None = None
        self._route_json = {r.name: r.model_dump_json() for r in settings.routes}
        self._fingerprints: dict[str, bytes] = {}  # route name -> core.mapping.route_fingerprint
        # Per route, whether its last chunk had mostly rows to map: while it had not (a
        # re-sync), the next chunk is not probed for mapping ahead (see _fetch).
        self._mapping_most: dict[str, bool] = {}
        # what decides a refusal besides the row and its route (syncd.run.refused)
        self._environment = environment(choose_phone_backend(settings).name)

    async def pull_all(self, *, full: bool = False) -> None:
        for cfg in self.settings.sources:
            await self.pull(cfg, full=full)

    async def pull(self, cfg: SourceConfig, *, full: bool = False) -> None:
        leads = [r for r in self.settings.routes if r.source == cfg.name]
        agents = self.settings.agent_routes_of(cfg.name)
        routes: list[AnyRoute] = [*leads, *agents]
        listing = self.settings.dnc_list_of(cfg.name)
        if listing is not None:
            await DncPuller(self, listing).pull(cfg, full=full)
            return
        if not routes:
            log.warning("source.unrouted", source=cfg.name)
            return
        required = {c for r in leads for c in required_columns(r)}
        required.update(c for r in agents for c in agent_columns(r))
        source = build_source(cfg, leads, self.store, required)
        if isinstance(source, CsvDropSource):  # a file's repeated keys, read ahead: last wins
            source.key_columns = frozenset(key_column(r) for r in routes)
        cursor = None if full else await self.store.get_cursor(cfg.name)
        bound = log.bind(source=cfg.name)
        for route in leads:
            self._mapping_most.pop(route.name, None)  # a new pull probes its first chunks
        chunks = source.chunks(cursor, full=full).__aiter__()
        upcoming = asyncio.ensure_future(self._fetch(chunks, routes))
        try:
            while (item := await upcoming) is not None:
                chunk, speculative, prepared = item
                # Read (and maybe map) the next chunk while this one is reconciled and
                # committed: reading is a thread, mapping a process pool.
                upcoming = asyncio.ensure_future(self._fetch(chunks, routes))
                await self._chunk(source, chunk, routes, bound, speculative, prepared)
        finally:
            if not upcoming.done():
                upcoming.cancel()
            await asyncio.gather(upcoming, return_exceptions=True)
            await source.close()

    async def _fetch(
        self, chunks: AsyncIterator[Chunk], routes: list[AnyRoute]
    ) -> tuple[Chunk, Speculative, Prepared] | None:
        """Return the next chunk, with its rows already being mapped during initial loads."""
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return None
        speculative: Speculative = {}
        prepared: Prepared = {}
        if chunk.rows and not chunk.failed:
            # Each row's raw hash and key now, on the event loop, while the previous chunk
            # waits on the store's thread (its look-up, its commit): a re-sync hashes every
            # row, and the store's work is most of what it waits for.
            for route in routes:
                if isinstance(route, RouteConfig) and route.map.key in chunk.header:
                    prepared[route.name] = self._hashes_and_keys(route, chunk)
            # Lookups must wait for the previous chunk's commit, but mapping is pure:
            # when most rows are new anyway, start it now and drop what turns out unneeded.
            for route in routes:
                if not isinstance(route, RouteConfig):
                    continue  # users are few: mapped when reconciled
                if not self._mapping_most.get(route.name, True):
                    # The last chunk mapped few of its rows (a re-sync): so will this one,
                    # most likely. Not probing spares a store query a chunk, on the path
                    # that waits for this chunk; a chunk mostly new is mapped all the same.
                    continue
                if route.map.key in chunk.header and route.map.phone in chunk.header:
                    if await self._mostly_new(route, chunk):
                        speculative[route.name] = asyncio.ensure_future(
                            self._normalize(route, chunk, chunk.rows)
                        )
        return chunk, speculative, prepared

    def _hashes_and_keys(self, route: RouteConfig, chunk: Chunk) -> tuple[list[str], list[str]]:
        """Return the raw hash and the key of each row of a chunk under one route."""
        fingerprint = self._fingerprints.get(route.name)
        if fingerprint is None:
            fingerprint = self._fingerprints[route.name] = route_fingerprint(route)
        keys = row_keys(chunk.rows, chunk.header.index(route.map.key))
        return row_hash_list(fingerprint, chunk.rows), keys

    async def _mostly_new(self, route: RouteConfig, chunk: Chunk) -> bool:
        """Return True when a sample of the chunk's keys is mostly unknown to the store.

        An initial load maps every row anyway; a re-sync maps only the few that
        changed, and mapping all of them ahead would waste both cores.
        """
        key_col = chunk.header.index(route.map.key)
        step = max(len(chunk.rows) // PROBE_KEYS, 1)
        sample = {chunk.rows[i][1][key_col].strip() for i in range(0, len(chunk.rows), step)}
        sample = {key for key in sample if looked_up(key)}
        if not sample:
            return False
        known = set(await self.store.lookup(route.sink, list(sample)))
        if len(known) * 2 < len(sample):  # keys refused before are known too
            known.update(await self.store.refusals(route.sink, sorted(sample - known)))
        return len(known) * 2 < len(sample)

    async def _chunk(
        self,
        source: Source,
        chunk: Chunk,
        routes: list[AnyRoute],
        bound: Any,
        speculative: Speculative | None = None,
        prepared: Prepared | None = None,
    ) -> ChunkWrite | None:
        """Reconcile one chunk into the outbox in one transaction; return what it committed
        (None: an origin not ready yet)."""
        if chunk.waiting:
            bound.info("source.origin.waiting", origin=chunk.origin, reason=chunk.waiting)
            self.summary.files_waiting.append(f"{source.name}/{chunk.waiting}")
            return None
        if chunk.failed:
            bound.error("source.origin.failed", origin=chunk.origin, reason=chunk.failed)
            self.summary.files_failed.append(f"{source.name}/{chunk.origin}: {chunk.failed}")
            write = ChunkWrite(self.summary.run_id, source.name, chunk.origin)
            write.rejects.append(("", Reject(source.name, chunk.failed, None, chunk.origin)))
            await self.commit(write)
            if chunk.after_commit:
                await chunk.after_commit()
            return write
        write = await self._plan(source, chunk, routes, speculative, prepared)
        await self.commit(write)
        if chunk.after_commit:
            await chunk.after_commit()
        if self.progress:
            self.progress(source, chunk.rows_read)
        if chunk.rows or chunk.rejects:
            bound.debug("source.chunk.committed", origin=chunk.origin, rows=chunk.rows_read)
        return write

    async def _plan(
        self,
        source: Source,
        chunk: Chunk,
        routes: list[AnyRoute],
        speculative: Speculative | None = None,
        prepared: Prepared | None = None,
    ) -> ChunkWrite:
        """Return what one chunk writes (its leads, rejects, events), not committed yet."""
        write = ChunkWrite(
            self.summary.run_id,
            source.name,
            chunk.origin,
            cursor=chunk.cursor,
            received_at=chunk.received_at,
        )
        for reject in chunk.rejects:
            write.rejects.append(("", reject))
        for route in routes:
            await self._route(
                route,
                chunk,
                write,
                (speculative or {}).get(route.name),
                (prepared or {}).get(route.name),
            )
        return write

    async def ingest(self, source: Source, chunks: list[Chunk]) -> list[ChunkWrite | Exception]:
        """Reconcile chunks a source was handed (webhook POSTs) like any pulled chunk, to its
        lead routes, and commit them in one transaction; return what each committed (its
        rejects say which rows were refused), or the bug that kept it out.

        The chunks' keys must not overlap: each is planned against the store as it was
        before the commit. A StoreError fails them all (nothing committed).
        """
        routes: list[AnyRoute] = [r for r in self.settings.routes if r.source == source.name]
        planned: list[ChunkWrite | Exception] = []
        for chunk in chunks:
            try:
                write = await self._plan(source, chunk, routes)
            except StoreError:
                raise
            except Exception as exc:  # a bug one POST met: the others are committed all the same
                planned.append(exc)
                continue
            _count_handed(write, chunk)
            planned.append(write)
        await self.store.apply_chunks([w for w in planned if isinstance(w, ChunkWrite)])
        return planned

    async def _route(
        self,
        route: AnyRoute,
        chunk: Chunk,
        write: ChunkWrite,
        speculative: asyncio.Future[list[NormalizedRow]] | None = None,
        prepared: tuple[list[str], list[str]] | None = None,
    ) -> None:
        counts = self.summary.route(route.name)
        counts.read += chunk.rows_read
        counts.rejected += len(chunk.rejects)
        if not chunk.rows:
            return
        mapper: Mapper | AgentMapper
        if isinstance(route, AgentRouteConfig):
            sink, mapper = route.outbox, AgentMapper(route, chunk.header)
        else:
            sink, mapper = route.sink, Mapper(route, chunk.header)
        key_col = chunk.header.index(mapper.key_column)
        rows = chunk.rows
        if prepared is not None:  # by _fetch: the route's fingerprint and key column
            hashes, keys = prepared
        else:
            hashes, keys = row_hash_list(mapper.fingerprint, rows), row_keys(rows, key_col)
        raw_hashes = dict(zip(row_lines(rows), hashes, strict=True))
        latest = latest_of(keys)
        # (key, raw hash of its last row) of every key, in C: every row of a re-sync
        pairs = list(zip(latest, map(hashes.__getitem__, latest.values()), strict=True))
        unasked = not_looked_up(latest.keys())
        if unasked:  # no key (refused as such), a NUL (refused when mapped): not looked up
            pairs = [pair for pair in pairs if looked_up(pair[0])]
        stored = await self.store.lookup_changed(sink, pairs, chunk.origin)
        # New to the store, not unchanged (a key left out of the answer is): mapped, refused
        stored.update((key, None) for key in unasked if key)
        first = triage(
            rows, key_col, raw_hashes, stored, origin=chunk.origin, run_id=write.run_id,
            keys=keys, latest=latest, last_lines=chunk.last_lines.get(mapper.key_column),
        )  # fmt: skip
        again: list[RowReject] = []
        fp = chunk_fingerprint(self._environment, chunk.header)
        if isinstance(mapper, Mapper):  # rows refused before, unchanged: not mapped again
            first.to_map, settled = await recall_refused(
                self.store, sink, first.to_map, key_col, raw_hashes, stored, fp
            )
            again = refuse_again(settled, counts)
        by_line = dict(first.to_map)
        self._mapping_most[route.name] = len(first.to_map) * 2 >= len(chunk.rows)
        if isinstance(mapper, AgentMapper):
            mapped = mapper.map_rows(first.to_map)
            counts.mapped += len(first.to_map)
        elif speculative is not None:
            mapped = [row for row in await speculative if row[0] in by_line]
            counts.mapped += len(chunk.rows)  # the whole chunk went, ahead of the lookup
        else:
            assert isinstance(route, RouteConfig)
            mapped = await self._normalize(route, chunk, first.to_map)
            counts.mapped += len(first.to_map)
        versions = Versions(current=mapped)
        if isinstance(route, RouteConfig) and route.map.updated_at is not None:
            # Before the lists and the refusal memory: an older row is not applied at all.
            versions = older_rows(mapped, by_line, stored, route.map.updated_at)
            mapped = versions.current
            counts.rejected += len(versions.older)
            counts.older_versions += len(versions.older)
        if isinstance(mapper, Mapper) and mapper.policy and mapper.policy.dnc_lists:
            mapped, kept = await self._against_lists(mapper, mapper.policy.dnc_lists, mapped)
            _keep_blocked(write, sink, mapped, kept, raw_hashes)
        if isinstance(mapper, Mapper):
            remember(write, sink, mapped, by_line, key_col, raw_hashes, fp)
        plan = plan_chunk(
            mapped,
            by_line,
            raw_hashes,
            stored,
            origin=chunk.origin,
            run_id=write.run_id,
            versions=versions.times,
        )
        counts.unchanged += first.unchanged
        counts.rejected += len(first.rejects)
        for bucket, n in plan.counts.items():
            counts.add(bucket, n)
        for code, n in plan.blocked.items():
            counts.blocked[code] = counts.blocked.get(code, 0) + n
        self.summary.sink(sink).carried -= plan.carried_requeued
        counts.superseded += plan.superseded
        for r in [*first.rejects, *again, *versions.older, *plan.rejects]:
            reject = Reject(write.source, r.reason, r.line, chunk.origin, r.values, r.key, r.facts)
            write.rejects.append((sink, reject))
        write.leads.setdefault(sink, []).extend(plan.writes)
        write.events.extend((sink, *event) for event in plan.events)

    async def _against_lists(
        self, mapper: Mapper, lists: list[str], mapped: list[NormalizedRow]
    ) -> tuple[list[NormalizedRow], dict[int, tuple[str, str, str]]]:
        """Return the mapped rows with those holding a listed number (any of them) blocked,
        and per blocked line the list and the lead as it was (hash, JSON): it is kept, to
        come back if its numbers leave the list."""
        numbers: dict[int, list[str]] = {}
        hints: dict[int, str] = {}
        for line, _key, _hash, text, reason, deleted, _facts in mapped:
            if text is not None and reason is None and not deleted:
                lead = json.loads(text)
                numbers[line] = [lead["phone"], *lead.get("alt_phones", ())]
                hints[line] = lead.get("zone", "")
        listed = await self.store.dnc_matches(lists, [n for ns in numbers.values() for n in ns])
        kept: dict[int, tuple[str, str, str]] = {}
        if not listed:
            return mapped, kept
        versions = await version_labels(self.store, set(listed.values()))
        out: list[NormalizedRow] = []
        for row in mapped:
            hit = next((n for n in numbers.get(row[0], ()) if n in listed), None)
            if hit is None or row[2] is None or row[3] is None:
                out.append(row)
                continue
            kept[row[0]] = (listed[hit], row[2], row[3])
            decision = GateDecision(
                Verdict.BLOCK,
                f"dnc_list:{listed[hit]}",
                f"{hit} is on the do-not-call list {listed[hit]}",
            )
            zones = lead_zones(numbers[row[0]], hints[row[0]], mapper.route.timezone, mapper.zones)
            facts = Facts(
                numbers=tuple(numbers[row[0]]),
                zones=zones,
                code=decision.code,
                policy=mapper.policy_version,
                dnc_list=listed[hit],
                list_version=versions.get(listed[hit], ""),
            )
            gone = withdrawal(row[1], decision.code, version_of(row[3]))
            out.append((row[0], row[1], *gone, decision.text, True, facts.to_json()))
        return out, kept

    async def _normalize(
        self, route: RouteConfig, chunk: Chunk, rows: Sequence[tuple[int, list[str]]]
    ) -> list[NormalizedRow]:
        route_json = self._route_json[route.name]
        workers = self._workers()
        now = self.clock.time()
        if len(rows) < POOL_THRESHOLD or workers <= 1:
            return normalize_rows(route_json, chunk.header, rows, now)
        if self._pool is None:
            # Imported when first needed: a re-sync maps a few rows a chunk, in this process,
            # and never starts the pool (nor loads multiprocessing).
            from syncd.run.workers import mapping_pool

            self._pool = mapping_pool(workers, phones.use_backend, backend_wanted(self.settings))
        loop = asyncio.get_running_loop()
        size = -(-len(rows) // workers)
        starts = range(0, len(rows), size)
        parts: list[Sequence[tuple[int, list[str]]]] = (
            [rows.part(i, i + size) for i in starts]
            if isinstance(rows, RawRows)
            else [rows[i : i + size] for i in starts]
        )
        results = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._pool, normalize_rows, route_json, chunk.header, part, now
                )
                for part in parts
            )
        )
        return [row for part in results for row in part]

    async def commit(self, write: ChunkWrite) -> None:
        """Commit one chunk's write, as this pull's leader (raise LeadLost when another
        replica leads the pull now: nothing is written)."""
        write.lead = self.lead
        await self.store.apply_chunk(write)

    def _workers(self) -> int:
        configured = self.settings.run.normalize_processes
        return configured if configured else (os.cpu_count() or 1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _count_handed(write: ChunkWrite, chunk: Chunk) -> None:
    """Note a handed chunk in its source's figures (status: the last POST, its rows taken
    and refused); the cursor says which POST came last (an id, no lead data)."""
    rows = len(chunk.rows) + len(chunk.rejects)
    # a row older than the version held is taken, not refused: the sender has nothing to redo
    refused = len(
        {r.line for _, r in write.rejects if r.line is not None and not is_older_reason(r.reason)}
    )
    posts, accepted, refused_name = HANDED_STATS
    write.cursor = json.dumps({"post": chunk.origin})
    write.stats += [
        (write.source, posts, 1),
        (write.source, accepted, rows - refused),
        (write.source, refused_name, refused),
    ]


def _keep_blocked(
    write: ChunkWrite,
    sink: str,
    mapped: list[NormalizedRow],
    kept: dict[int, tuple[str, str, str]],
    raw_hashes: dict[int, str],
) -> None:
    """Keep the leads a list blocks (as they would be sent); forget any other mapped key's."""
    for line, key, *_ in mapped:
        if not key:
            continue
        if line in kept:
            name, content_hash, text = kept[line]
            write.dnc_blocked.append(
                BlockedLead(sink, key, name, content_hash, raw_hashes[line], text)
            )
        else:
            write.dnc_unblocked.append((sink, key))


_NUMBERISH = re.compile(r"^\+?[\d\s().\-/]{6,}$")
_NAME_DATE = re.compile(r"(?<!\d)(20\d\d)-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])(?!\d)")


def headerless_names(column: str, first: tuple[str, ...]) -> tuple[str, ...] | None:
    """Return the names a list file without a header is read under, when its first row is
    data (its first cell looks like a phone number): the number first, other columns after."""
    if not first or column in first or not _NUMBERISH.match(first[0]):
        return None
    if sum(c.isdigit() for c in first[0]) < 6:
        return None
    return (column, *(f"column{i}" for i in range(2, len(first) + 1)))


def file_date(name: str, mtime: float) -> float:
    """Return a list file's date: one in its name (dnc-2026-11-30.csv, UTC), else its mtime."""
    m = _NAME_DATE.search(name)
    if m is None:
        return mtime
    try:
        day = datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=UTC)
    except ValueError:
        return mtime
    return day.timestamp()


class DncPuller:
    """Reads a do-not-call list's source into the store, then withdraws the leads it names.

    Numbers and the source's cursor commit together, chunk by chunk. A number new to
    the list is matched against every lead (main and alternate numbers) once the
    source is read: each lead found is taken back from its dialer, and the numbers
    are marked matched in the same transaction, so a crash in between matches again.

    In snapshot mode a file is the whole list: its numbers are staged, chunk by chunk,
    beside the version in force, and the file's last chunk switches the list to it in
    its transaction. The leads the list kept back whose numbers it no longer holds
    (and no other list of their dialer's routes does) go back to the outbox.
    """

    def __init__(self, puller: Puller, listing: DncListConfig) -> None:
        self.puller = puller
        self.store = puller.store
        self.summary = puller.summary
        self.listing = listing
        self._staged: str | None = None  # the file whose numbers the stage holds
        self._staged_any = False  # and whether it holds any

    async def pull(self, cfg: SourceConfig, *, full: bool = False) -> None:
        listing = self.listing
        source = build_source(cfg, [], self.store, required={listing.column})
        if isinstance(source, CsvDropSource):  # a snapshot list has one (the config checks)
            source.data_header = functools.partial(headerless_names, listing.column)
        if listing.mode == "snapshot":
            self._staged = await self.store.dnc_staged_origin(listing.name)
            self._staged_any = self._staged is not None  # a stage holds numbers or nothing
        cursor = None if full else await self.store.get_cursor(cfg.name)
        bound = log.bind(source=cfg.name, dnc_list=listing.name)
        read, origin = 0, cfg.name
        try:
            async for chunk in source.chunks(cursor, full=full):
                if chunk.failed or chunk.waiting:
                    await self.puller._chunk(source, chunk, [], bound)
                    if chunk.failed and self._staged == chunk.origin:
                        await self._discard_stage(chunk.origin)
                    continue
                await self._chunk(source, chunk)
                read, origin = read + chunk.rows_read, chunk.origin
        finally:
            await source.close()
        if read and not isinstance(source, CsvDropSource):  # a table read: its date is now
            write = ChunkWrite(self.summary.run_id, listing.source, origin)
            write.dnc_version = DncVersion(listing.name, origin, read, 0, 0.0, "", "append")
            await self.puller.commit(write)
            self._loaded(write.dnc_version)
        await self.withdraw()
        await self.release()

    async def _discard_stage(self, origin: str) -> None:
        """Forget a failed file's staged numbers: a file dropped again starts afresh."""
        write = ChunkWrite(self.summary.run_id, self.listing.source, origin)
        write.dnc_restage = self.listing.name
        await self.puller.commit(write)
        self._staged = None

    async def _chunk(self, source: Source, chunk: Chunk) -> None:
        listing = self.listing
        write = ChunkWrite(self.summary.run_id, listing.source, chunk.origin, cursor=chunk.cursor)
        write.rejects.extend(("", r) for r in chunk.rejects)
        counts = self.summary.dnc.setdefault(listing.name, {"read": 0, "listed": 0, "refused": 0})
        counts["read"] += chunk.rows_read
        counts["refused"] += len(chunk.rejects)
        numbers: list[tuple[str, str]] = []
        if chunk.rows:
            col = chunk.header.index(listing.column)
            for line, values in chunk.rows:
                try:
                    number = to_e164(values[col], listing.default_region)
                except PhoneError as exc:
                    counts["refused"] += 1
                    reason = f"{exc} in column {listing.column!r}"
                    write.rejects.append(
                        ("", Reject(listing.source, reason, line, chunk.origin, values))
                    )
                    continue
                numbers.append((listing.name, number))
            counts["listed"] += len(numbers)
        if listing.mode == "snapshot":
            if self._staged != chunk.origin:  # a new file: what another left staged goes
                write.dnc_restage = listing.name
                self._staged, self._staged_any = chunk.origin, False
            write.dnc_staged = numbers
            self._staged_any = self._staged_any or bool(numbers)
        else:
            write.dnc = numbers
        if chunk.after_commit is not None and chunk.cursor is not None:  # the file's last
            # this chunk's numbers join the stage in the same commit as the version
            pending = len(set(write.dnc_staged)), write.dnc_restage is not None
            write.dnc_version = await self._version(source, chunk.origin, pending)
        await self.puller.commit(write)
        if write.dnc_version is not None:
            self._loaded(write.dnc_version)
        if chunk.after_commit:
            await chunk.after_commit()

    async def _version(
        self, source: Source, origin: str, pending: tuple[int, bool] = (0, False)
    ) -> DncVersion | None:
        """Return the version a file read whole makes; None for an empty snapshot (refused:
        a registry copy without a number is a failed export, not an empty register)."""
        listing = self.listing
        if not isinstance(source, CsvDropSource):
            return None  # a table: recorded once the pull has read it (see pull)
        facts = await asyncio.to_thread(source.describe, origin)
        if listing.mode == "snapshot" and (facts.rows == 0 or not self._staged_any):
            what = "no data row" if facts.rows == 0 else "no valid number"
            why = (
                f"{origin}: an empty snapshot of do-not-call list {listing.name} ({what}) is "
                "not applied (the version in force stays); drop the whole register"
            )
            log.error("dnc.snapshot.empty", dnc_list=listing.name, origin=origin)
            self.summary.files_failed.append(f"{listing.source}/{why}")
            self._staged = None
            return None
        if listing.mode == "snapshot" and (shrunk := await self._shrunk(origin, pending)):
            log.error("dnc.snapshot.shrunk", dnc_list=listing.name, origin=origin)
            self.summary.files_failed.append(f"{listing.source}/{shrunk}")
            self._staged = None
            return None
        date = file_date(origin, facts.mtime)
        return DncVersion(listing.name, origin, facts.rows, 0, date, facts.sha256, listing.mode)

    async def _shrunk(self, origin: str, pending: tuple[int, bool]) -> str | None:
        """Return why a snapshot is refused for unlisting too much of the list, or None.

        A registry export cut short looks like a register that lost most of its
        numbers: applied, it would let every lead of those numbers be rung.
        """
        listing = self.listing
        versions = await self.store.dnc_versions(listing.name, 1)
        if not versions or versions[0].numbers == 0:
            return None
        before = versions[0].numbers
        more, restaged = pending  # this chunk's, not staged yet; restaged: the stage restarts
        now = more + (0 if restaged else await self.store.dnc_staged_count(listing.name))
        if (before - now) * 100 <= before * listing.max_shrink_percent:
            return None
        return (
            f"{origin}: the snapshot of do-not-call list {listing.name} holds {now} numbers "
            f"against {before} in force (over max_shrink_percent = "
            f"{listing.max_shrink_percent:g}% fewer): not applied, the version in force stays; "
            "a cut-short export? Drop the whole register, or raise max_shrink_percent"
        )

    def _loaded(self, version: DncVersion) -> None:
        counts = self.summary.dnc.setdefault(self.listing.name, {})
        counts["versions"] = counts.get("versions", 0) + 1
        if self.listing.mode == "snapshot":
            self._staged = None
        log.info("dnc.version.loaded", dnc_list=version.list, origin=version.file,
                 mode=version.mode, sha256=version.sha256)  # fmt: skip

    async def withdraw(self) -> int:
        """Take back every lead holding a number new to the list; return how many."""
        listing = self.listing
        users = {
            r.sink
            for r in self.puller.settings.routes
            if r.policy is not None and listing.name in r.policy.dnc_lists
        }
        found = [lead for lead in await self.store.listed_leads(listing.name) if lead.sink in users]
        routes = self.puller.settings.routes
        fallback = {r.sink: r.timezone for r in reversed(routes)}  # a sink's first route's
        versions = await version_labels(self.store, {listing.name}) if found else {}
        write = ChunkWrite(self.summary.run_id, listing.source, listing.name)
        write.dnc_checked = listing.name
        done: set[tuple[str, str]] = set()
        for lead in found:
            # Removed: the dialer no longer holds it, unless it was only taken out for
            # the night (run.window): its removal is queued again, so it never returns.
            gone = lead.state == "removed" and unmarked(lead.lead_json) is None
            if (lead.sink, lead.key) in done or gone:
                continue
            done.add((lead.sink, lead.key))
            why = f"blocked (dnc_list:{listing.name}): {lead.number} is on the do-not-call list"
            counts = self.summary.sink(lead.sink)
            # Sent in doubt (the dialer may hold it) is withdrawn as a delivered lead is,
            # by the number sent (its removal has no dialer id to go by).
            doubt = None if lead.delivered or lead.state == "inflight" else lead.doubt_number
            if lead.delivered or doubt:
                why += "; its withdrawal from the dialer is queued"
                kind, state = "deleted", "pending"
                if lead.state not in ("pending", "inflight", "held"):
                    counts.carried += 1  # a removal queued outside this run's routes
            elif lead.state in ("pending", "inflight", "held"):
                why += "; taken off the outbox before anyone called it"
                kind, state = "rejected", "removed"
                counts.refused += 1  # it leaves the outbox refused, by the gate
            else:
                continue
            code = f"dnc_list:{listing.name}"
            gone_hash, gone_json = withdrawal(lead.key, code)
            gone_json = naming_attempt(gone_json, doubt)
            facts = Facts(
                numbers=(lead.number,),
                zones=lead_zones([lead.number], "", fallback[lead.sink]),
                code=code,
                policy=sink_policy_version(routes, lead.sink),
                dnc_list=list_of(code),
                list_version=versions.get(listing.name, ""),
            ).to_json()
            action = LeadWrite(
                lead.key, gone_hash, lead.raw_hash, gone_json, Action.DELETE, kind, None,
                state=state,
            )  # fmt: skip
            write.leads.setdefault(lead.sink, []).append(action)
            if lead.lead_json:  # kept: it comes back if the number leaves the list
                text = unmarked(lead.lead_json) or lead.lead_json
                write.dnc_blocked.append(
                    BlockedLead(lead.sink, lead.key, listing.name, lead.hash, lead.raw_hash, text)
                )
            write.rejects.append(
                (lead.sink, Reject(listing.source, why, None, listing.name, [], lead.key, facts))
            )
            write.events.append((lead.sink, lead.key, "gate.withdrawn", why, facts))
        await self.puller.commit(write)
        if done:
            log.warning("gate.withdrawn", dnc_list=listing.name, leads=len(done))
            self.summary.dnc.setdefault(listing.name, {})["withdrawn"] = len(done)
        return len(done)

    async def release(self) -> int:
        """Send back to the outbox every lead the list kept whose numbers no list of its
        dialer's routes holds any more (a snapshot left them out); return how many.

        The lead goes back as it was when blocked (the CRM's row is not read again:
        an unchanged row is never re-read); the push-time gate (calling hours) still
        applies. A later change of the row maps it afresh, as always.
        """
        listing = self.listing
        blocked = await self.store.blocked_leads(listing.name)
        if not blocked:
            return 0
        lists: dict[str, set[str]] = {}
        for r in self.puller.settings.routes:
            if r.policy is not None and r.policy.dnc_lists:
                lists.setdefault(r.sink, set()).update(r.policy.dnc_lists)
        write = ChunkWrite(self.summary.run_id, listing.source, listing.name)
        versions = await version_labels(self.store, {listing.name})  # the one that freed them
        by_sink: dict[str, list[BlockedLead]] = {}
        for b in blocked:
            by_sink.setdefault(b.sink, []).append(b)
        for sink, leads in by_sink.items():
            if sink not in lists:
                continue  # no route of this dialer uses lists now: left as it is
            numbers = {b.key: _numbers_of(b.lead_json) for b in leads}
            listed = await self.store.dnc_matches(
                sorted(lists[sink]), [n for ns in numbers.values() for n in ns]
            )
            free = [b for b in leads if not any(n in listed for n in numbers[b.key])]
            stored = await self.store.lookup(sink, [b.key for b in free])
            for b in free:
                previous = stored.get(b.key)
                if previous is None or previous.state not in ("pending", "inflight", "held"):
                    self.summary.sink(sink).carried += 1  # queued outside this run's routes
                write.leads.setdefault(sink, []).append(
                    LeadWrite(b.key, b.hash, b.raw_hash, b.lead_json, Action.UPSERT, "changed",
                              None)
                )  # fmt: skip
                write.dnc_unblocked.append((sink, b.key))
                why = (
                    f"released (dnc_list:{listing.name}): its numbers are no longer on the "
                    "do-not-call list; back through the gate"
                )
                facts = Facts(
                    numbers=tuple(numbers[b.key]),
                    code=f"dnc_list:{listing.name}",
                    policy=sink_policy_version(self.puller.settings.routes, sink),
                    dnc_list=listing.name,
                    list_version=versions.get(listing.name, ""),
                )
                write.events.append((sink, b.key, "gate.released", why, facts.to_json()))
        if not write.dnc_unblocked:
            return 0
        await self.puller.commit(write)
        released = len(write.dnc_unblocked)
        log.warning("gate.released", dnc_list=listing.name, leads=released)
        self.summary.dnc.setdefault(listing.name, {})["released"] = released
        return released


def _numbers_of(lead_json: str) -> list[str]:
    lead = json.loads(lead_json)
    return [n for n in (lead.get("phone"), *lead.get("alt_phones", ())) if n]
