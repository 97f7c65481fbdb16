"""CSV drop folder: files appear in an inbox, are claimed, streamed, and filed away.

Writers drop ``name.csv.part`` and rename it to ``name.csv`` when complete (the
documented convention). A writer that ignores it and writes ``name.csv`` in place is
caught two ways: a file is claimed only once it has not changed for ``settle_s``,
and a file that changes while it is read stops being read (the rows read before the
change are kept; the file goes to ``failed/`` saying so). A file is
claimed by an atomic rename into ``processing/``, read in chunks, then moved to
``done/`` (with ``<name>.rejects.csv`` beside it when rows were refused) or to
``failed/`` with ``<name>.error.txt`` when it cannot be read at all.

The cursor names every file of ``done/`` whose rows the store holds (name and size),
committed with the file's last rows. A file in ``done/`` that the cursor does not name
was read after the store's copy was taken (a store restored from a backup): it goes
back to ``processing/`` and is read again, oldest first, before anything new. That is
safe: the rows the store already holds are unchanged and skipped.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import anyio
import structlog
from pydantic import Field, PrivateAttr, field_validator

from syncd.config import SourceConfig
from syncd.core.csvsafe import neutralise
from syncd.core.model import Reject
from syncd.core.private import folder_problem, open_private, private_dir, write_private_text
from syncd.core.reconcile import row_keys, row_lines
from syncd.core.repeats import RepeatFinder, bitmap_bits
from syncd.errors import CheckFailed
from syncd.sources import compressed
from syncd.sources.base import Chunk
from syncd.sources.csv_lines import LineReader, Scan, scan, shaped

SNIFF_BYTES = 64 * 1024
MIN_FIELD_LIMIT = 131072  # the csv module's own default: never tightened below it
HEADER_FIELDS = 4  # a header line may be as long as this many fields at the field limit
REJECTS_SUFFIX = ".rejects.csv"  # beside a file in done/: its refused rows
REREAD = (
    "in done/, but the state store has no record of reading it (a store restored from a "
    "copy taken before?): read again; the rows the store holds already are skipped"
)
RejectLoader = Callable[[str], Awaitable[list[tuple[int | None, str, str, str]]]]


log = structlog.get_logger("syncd.source")


class CsvDropConfig(SourceConfig):
    kind: Literal["csv_drop"] = "csv_drop"
    inbox: Path
    pattern: str = "*.csv"
    encoding: str = "utf-8"
    delimiter: str = ","
    quotechar: str = '"'
    chunk_rows: int = Field(5000, ge=1, le=1_000_000)
    # A file is claimed once unchanged (its modification time) for this long
    settle_s: float = Field(3.0, ge=0, le=86400)
    max_field_bytes: int = Field(1_000_000, ge=1024)
    # "lines": a file without a quote character (and with UTF-8 text, one line a row) is
    # read by the line reader (csv_lines), every other by the row reader; "rows": every
    # file by the row reader. Both give the same rows (tests/test_csv_lines.py).
    reader: Literal["lines", "rows"] = "lines"
    # Files in done/ (and their .rejects.csv) older than this are deleted; None keeps them
    keep_done_days: float | None = Field(14.0, gt=0)
    # Set by the dry run only, whose shadow inbox links to the real one: links that
    # resolve to a regular file inside this folder are read as that file.
    _links_into: Path | None = PrivateAttr(None)

    def shadowing(self, inbox: Path, real: Path) -> CsvDropConfig:
        """Return a copy reading ``inbox``, a folder of links into the ``real`` inbox."""
        copy = self.model_copy(update={"inbox": inbox})
        copy._links_into = real.resolve()
        return copy

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        value = {"tab": "\t", "\\t": "\t"}.get(value, value)
        if len(value) != 1:
            raise ValueError("must be a single character (or 'tab')")
        return value


@dataclass(frozen=True, slots=True)
class FileFacts:
    """A claimed file's checksum, modification time and data rows (non-blank lines)."""

    sha256: str
    mtime: float
    rows: int


class FileUnreadable(Exception):
    """The whole file cannot be read as CSV; the message says why."""


class _CountingReader(io.RawIOBase):
    """Tells how far into the file reading stands, so progress can be shown without
    seeking a text stream; seekable, so a zip can find the file inside it."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self.raw.readinto(buffer)
        self.count = self.raw.tell()
        return n or 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.count = self.raw.seek(offset, whence)
        return self.count

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()
        super().close()


def _csv_bytes(path: Path) -> tuple[_CountingReader, io.BufferedReader]:
    """Open a drop: its position counter, and its CSV bytes (decompressed when it came
    compressed). Raise FileUnreadable when it is an archive syncd does not read."""
    counter = _CountingReader(path.open("rb"))
    try:
        stream = compressed.opened(io.BufferedReader(counter))
        # Every stream it returns is buffered (BufferedReader, GzipFile, BZ2File,
        # LZMAFile, ZipExtFile): typeshed types them apart, TextIOWrapper takes each.
        return counter, cast(io.BufferedReader, stream)
    except compressed.ArchiveRefused as exc:
        counter.close()
        raise FileUnreadable(f"{_printable(path.name)}: {exc}") from None


def field_limit(config: CsvDropConfig) -> int:
    """Return the largest cell, in characters, the source reads (``max_field_bytes``)."""
    return max(config.max_field_bytes, MIN_FIELD_LIMIT)


def line_limit(columns: int, limit: int) -> int:
    """Return the longest physical line a row of ``columns`` cells can take when no cell
    is over ``limit`` characters: each cell written as at most two characters a character
    (every one a doubled quote) plus its quotes and delimiter, and one cell more for the
    empty cells a spreadsheet leaves at a row's end. Exact, not a guess: a longer line
    holds a cell over the limit (or far more cells than the header), so no row is refused
    that the field limit would let through."""
    return (columns + 1) * (2 * limit + 3)


class _BoundedLines:
    """The physical lines of a text stream for ``csv.reader``, none longer than ``limit``
    characters. A longer line raises ``csv.Error`` once ``limit + 1`` characters of it
    are read: the reader never holds a whole line of a hostile file (a cell of 300 MB
    in one line, or all of it in a cell), only the bound; the error ends the file the
    way the csv module's own field limit does."""

    __slots__ = ("limit", "readline", "why")

    def __init__(self, text: io.TextIOWrapper, limit: int, why: str) -> None:
        self.readline = text.readline
        self.limit = limit
        self.why = why

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.readline(self.limit + 1)
        if len(line) > self.limit:
            raise csv.Error(self.why)
        if not line:
            raise StopIteration
        return line

    def bound(self, limit: int, why: str) -> None:
        """Bound the lines read from now on (the data rows, once the header is known)."""
        self.limit, self.why = limit, why


def _header_lines(text: io.TextIOWrapper, limit: int) -> _BoundedLines:
    """Return the lines of ``text`` bounded for its header row (its width is not known)."""
    longest = HEADER_FIELDS * (2 * limit + 3)
    return _BoundedLines(text, longest, f"the header line is longer than {longest} characters")


def _bound_to_rows(lines: _BoundedLines, columns: int, limit: int) -> None:
    # Worded as the csv module words a cell over the limit: the outcome is the same.
    lines.bound(line_limit(columns, limit), f"field larger than field limit ({limit})")


@dataclass
class _OpenFile:
    path: Path
    origin: str
    header: tuple[str, ...]
    reader: csv.Reader = field(repr=False)  # type: ignore[name-defined]
    text: io.IOBase = field(repr=False)  # what closes the file
    counter: _CountingReader = field(repr=False)
    last_line: int = 1  # the header's physical line
    skip_until: int = 0  # resume: rows ending at or before this line are committed
    broken: str | None = None  # why reading stopped before the end (a row not parsed whole)
    opened_as: tuple[int, int] = (0, 0)  # (size, mtime_ns) when opened: a change is a writer
    # The line reader (csv_lines), when the file is one it reads; else the row reader's
    lines: LineReader | None = field(default=None, repr=False)
    # What picked the reader (``csv_lines.scan``): a second opening reads the file alike
    found: Scan = field(default_factory=lambda: Scan(None), repr=False)


class CsvDropSource:
    """Streams the files of a drop folder; see the module docstring for the lifecycle."""

    def __init__(
        self,
        config: CsvDropConfig,
        *,
        required_columns: set[str] | None = None,
        load_rejects: RejectLoader | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.inbox = Path(config.inbox)
        self.processing = self.inbox / "processing"
        self.done = self.inbox / "done"
        self.failed = self.inbox / "failed"
        self.required_columns = required_columns or set()
        self.load_rejects = load_rejects
        self.bytes_read = 0
        self._current: _CountingReader | None = None
        self._seen: dict[str, int] = {}  # files read whole (in the cursor): name -> size
        self._ignored_told: set[str] = set()  # inbox files matching no pattern, logged once
        # Given a file's first row when it lacks the required columns: the column names
        # to read it under when that row is data, not a header (a one-number-a-line list)
        self.data_header: Callable[[tuple[str, ...]], tuple[str, ...] | None] | None = None
        # The columns routes key leads by (set by the pull): each file is read once ahead
        # for the keys that repeat in it (``_last_lines``). None given: no read ahead.
        self.key_columns: frozenset[str] = frozenset()

    # -- `syncd check --online` ------------------------------------------------

    async def probe(self) -> str:
        """Raise CheckFailed unless the inbox exists and syncd can file drops away in it."""
        await anyio.to_thread.run_sync(self._probe)
        return f"inbox {self.inbox} exists; syncd can write in it and its subfolders"

    def _probe(self) -> None:
        if not self.inbox.is_dir():
            what = "is not a folder" if self.inbox.exists() else "does not exist"
            raise CheckFailed(
                f"inbox {self.inbox} {what}: create it (the CRM's export drops files there), "
                "or point inbox at the folder it uses",
                settings=("inbox",),
            )
        # processing/, done/ and failed/ are made on the first pull when missing.
        for folder in (self.inbox, self.processing, self.done, self.failed):
            problem = folder_problem(folder, may_create=True)
            if problem is not None:
                raise CheckFailed(
                    f"inbox: {problem}",
                    action="give the user syncd runs as write access there (under systemd, "
                    "also ReadWritePaths=): syncd moves each file to processing/, done/, failed/",
                )

    # -- discovery -----------------------------------------------------------

    def _ensure_dirs(self) -> None:
        for d in (self.processing, self.done, self.failed):
            private_dir(d)

    def _candidates(self) -> list[Path]:
        """Return the inbox entries that look like drops (any kind of entry), by name."""
        return [
            p for p in _entries(self.inbox) if compressed.is_drop_name(p.name, self.config.pattern)
        ]

    def ignored_files(self) -> list[str]:
        """Return the names of the inbox's files that match no drop pattern (never read)."""
        return ignored_in(self.inbox, self.config.pattern)

    def prune_done(self, now: float) -> int:
        """Return how many files of done/ older than ``keep_done_days`` were deleted."""
        days = self.config.keep_done_days
        if days is None:
            return 0
        cutoff, gone = now - days * 86400, 0
        for path in self.done.iterdir():
            try:
                st = path.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    path.unlink()
                    gone += 1
            except OSError as exc:  # one file we cannot remove must not stop the pull
                log.warning("source.done.prune_failed", source=self.name, file=path.name,
                            reason=exc.strerror or str(exc))  # fmt: skip
        return gone

    def settling(self, path: Path) -> str | None:
        """Return why ``path`` is not claimed yet (changed too recently), None when settled."""
        settle = self.config.settle_s
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None  # gone: the claim finds out
        if settle <= 0 or age >= settle:
            return None
        when = f"changed {age:.0f} s ago" if age >= 0 else "its time is ahead of our clock"
        # A rename keeps the time of the last write: a file dropped the documented way
        # (name.part, renamed) looks as fresh as one still written in place. Say both.
        return (
            f"{_printable(path.name)}: still being written? ({when}); read once unchanged "
            f"for {settle:g} s (settle_s). Every writer drops name.part and renames it? "
            "Then set settle_s = 0 to read each file at once"
        )

    def waiting_files(self) -> list[Path]:
        """Return the inbox files that are complete and match the pattern, oldest first.

        Only regular files count: a link (to a file outside the inbox, say a secret),
        a FIFO or a device is refused by :meth:`refuse_strangers`, never read.
        """
        files = [p for p in self._candidates() if self._acceptable(p)]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def _acceptable(self, path: Path) -> bool:
        """Return True for a regular file (a link only in a dry run's shadow inbox)."""
        if _regular(path):
            return True
        root = self.config._links_into
        if root is None or not path.is_symlink():
            return False
        target = path.resolve()
        return target.is_relative_to(root) and _regular(target)

    def refuse_strangers(self) -> list[tuple[str, str]]:
        """Move every inbox entry that is not a regular file to failed/; return (name, why)."""
        refused = []
        for entry in self._candidates():
            if self._acceptable(entry):
                continue
            why = (
                f"{_printable(entry.name)}: not a regular file ({_kind(entry)}): refused unread; "
                "drop the export itself in the inbox, not a link to it"
            )
            target = self.failed / _unique_name(_printable(entry.name), self.failed)
            try:
                os.rename(entry, target)  # moves the link itself, never what it points at
            except OSError:
                continue
            write_private_text(
                self.failed / f"{target.name}.error.txt",
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n{why}\n",
            )
            refused.append((target.name, why))
        return refused

    def progress_total(self) -> int | None:
        files = list(self.processing.glob("*")) if self.processing.is_dir() else []
        files = [f for f in files if f.is_file()] + self.waiting_files()
        return sum(f.stat().st_size for f in files)

    def progress_done(self) -> int:
        return self.bytes_read + (self._current.count if self._current else 0)

    def _claim(self, path: Path) -> Path | None:
        # A name that is not UTF-8 (Exportación.csv from a Latin-1 share) is claimed under
        # its readable spelling: it is the origin every reject and event is stored under.
        name = _printable(path.name)
        # Unique against failed/ too: a file dropped again after a failure is a new
        # origin, so the old file's error is not one of its refused rows.
        target = self.processing / _unique_name(name, self.processing, self.done, self.failed)
        try:
            os.rename(path, target)  # atomic on one filesystem: only one claimer wins
        except FileNotFoundError:
            return None
        return target

    # -- reading -------------------------------------------------------------

    async def chunks(self, cursor: str | None, *, full: bool = False) -> AsyncIterator[Chunk]:
        """Yield every chunk of every claimed or waiting file, resuming at ``cursor``."""
        if not await anyio.to_thread.run_sync(self.inbox.is_dir):
            yield Chunk(
                "(inbox)",
                (),
                [],
                failed=f"inbox {self.inbox} does not exist or is not a folder: create it "
                "(syncd does not, so a mistyped path cannot hide every drop)",
            )
            return
        await anyio.to_thread.run_sync(self._ensure_dirs)
        if self.config._links_into is None:  # never from a dry run's shadow inbox
            pruned = await anyio.to_thread.run_sync(self.prune_done, time.time())
            if pruned:
                log.info("source.done.pruned", source=self.name, files=pruned)
        for origin, why in await anyio.to_thread.run_sync(self.refuse_strangers):
            yield Chunk(origin, (), [], failed=why)
        for name in await anyio.to_thread.run_sync(self.ignored_files):
            if name not in self._ignored_told:  # once per file and process, not every pull
                self._ignored_told.add(name)
                log.warning(
                    "source.inbox.ignored",
                    source=self.name,
                    file=_printable(name),
                    reason=f"does not match the source's pattern {self.config.pattern!r}: "
                    "never read; rename it, widen `pattern`, or move it out of the inbox",
                )
        state = json.loads(cursor) if cursor else {}
        self._seen = await anyio.to_thread.run_sync(self._seen_files, state)
        # Files of done/ the store never saw come first, in the order they were read (a
        # later file wins), then files a crash left in processing/, in claim order.
        unseen = await anyio.to_thread.run_sync(self._take_back_unseen)
        for name in unseen:
            log.warning("source.origin.reread", source=self.name, origin=name, reason=REREAD)
        order = {name: i for i, name in enumerate(unseen)}
        leftovers = sorted(
            (_renamed_printable(p) for p in self.processing.iterdir() if self._acceptable(p)),
            key=lambda p: (order.get(p.name, len(order)), p.stat().st_mtime),
        )
        for path in leftovers:
            mine = state.get("file") == path.name
            skip = int(state.get("line", 0)) if mine else 0
            if path.name in unseen and state.get("done"):
                skip = 0  # a file of that name read whole, but not this one (its size)
            if skip and state.get("done"):
                # Read whole and committed, not filed away: file it (cursor None, so a
                # do-not-call list does not record the version twice).
                yield Chunk(path.name, (), [], cursor=None, after_commit=self._finisher(path))
                continue
            async for chunk in self._file_chunks(path, skip):
                yield chunk
        told: set[str] = set()
        while True:
            ready: list[Path] = []
            for path in self.waiting_files():
                unsettled = self.settling(path)
                if unsettled is None:
                    ready.append(path)
                elif path.name not in told:
                    told.add(path.name)
                    yield Chunk(_printable(path.name), (), [], waiting=unsettled)
            if not ready:
                return
            claimed = self._claim(ready[0])
            if claimed is None:
                continue
            async for chunk in self._file_chunks(claimed, 0):
                yield chunk

    async def _file_chunks(self, path: Path, skip_until: int) -> AsyncIterator[Chunk]:
        try:
            opened = await anyio.to_thread.run_sync(self._open, path, skip_until)
            try:
                # Before the first chunk: which keys repeat further on (last row wins).
                last_lines = await anyio.to_thread.run_sync(self._last_lines, opened)
            except BaseException:
                if opened is not None:
                    opened.text.close()
                raise
        except FileUnreadable as exc:
            yield Chunk(
                path.name, (), [], failed=str(exc), after_commit=self._failer(path, str(exc))
            )
            return
        if opened is None:  # empty file: nothing to do but file it away
            yield Chunk(
                path.name,
                (),
                [],
                cursor=self._cursor(
                    path.name, 0, True, await anyio.to_thread.run_sync(os.path.getsize, path)
                ),
                after_commit=self._finisher(path),
            )
            return
        self._current = opened.counter
        try:
            while True:
                rows, rejects, eof = await anyio.to_thread.run_sync(self._read_chunk, opened)
                broken = opened.broken
                done = eof and broken is None
                cursor = self._cursor(path.name, opened.last_line, done, opened.opened_as[0])
                yield Chunk(
                    opened.origin,
                    opened.header,
                    rows,
                    rejects=rejects,
                    cursor=cursor,
                    after_commit=self._finisher(path) if done else None,
                    last_lines=last_lines,
                )
                if broken is not None:
                    # The rows before are kept (committed above); nothing after is read.
                    yield Chunk(
                        opened.origin,
                        (),
                        [],
                        failed=broken,
                        after_commit=self._failer(path, broken),
                    )
                    return
                if eof:
                    return
        finally:
            self.bytes_read += opened.counter.count
            self._current = None
            opened.text.close()

    def _cursor(self, name: str, line: int, done: bool, size: int) -> str:
        """Return the cursor: where reading stands, and the files read whole (``seen``).

        A file joins ``seen`` in the commit of its last rows, so a copy of the store
        names exactly the files whose rows it holds.
        """
        if done:
            self._seen[name] = size
        return json.dumps({"file": name, "line": line, "done": done, "seen": self._seen})

    def _drops_in_done(self) -> list[tuple[str, os.stat_result]]:
        """Return the drops filed in done/ (not their .rejects.csv), in the order filed."""
        found = []
        for path in self.done.iterdir() if self.done.is_dir() else ():
            name = path.name
            if name.startswith(".") or name.endswith(REJECTS_SUFFIX):
                continue
            if compressed.is_drop_name(name, self.config.pattern) and self._acceptable(path):
                found.append((name, path.stat()))
        return sorted(found, key=lambda f: (f[1].st_mtime, f[0]))

    def _seen_files(self, state: dict[str, Any]) -> dict[str, int]:
        """Return the files read whole, as the cursor names them, by name and size.

        A cursor without the list (a new store, a full pull, a store from before syncd
        kept it) starts it with what done/ holds now: those files were read, by this
        store or the one it replaced. Names no longer in done/ are dropped from it.
        """
        filed = {name: st.st_size for name, st in self._drops_in_done()}
        recorded = state.get("seen")
        if not isinstance(recorded, dict):
            seen = filed
            if state.get("done") and isinstance(state.get("file"), str):
                name = state["file"]  # committed whole, not yet filed: a crash before the move
                if (self.processing / name).is_file():
                    seen[name] = (self.processing / name).stat().st_size
            return seen
        return {
            str(name): int(size)
            for name, size in recorded.items()
            if name in filed or (self.processing / str(name)).exists()
        }

    def _take_back_unseen(self) -> list[str]:
        """Move every file of done/ the cursor does not name back to processing/; return
        their names there, in the order they were filed."""
        names = []
        for name, st in self._drops_in_done():
            if self._seen.get(name) == st.st_size:
                continue
            target = _unique_name(name, self.processing)
            try:
                os.rename(self.done / name, self.processing / target)
            except FileNotFoundError:
                continue
            names.append(target)
        return names

    def _last_lines(self, opened: _OpenFile | None) -> dict[str, dict[str, int]]:
        """Return, per key column of the file, its keys that repeat and the line of each
        one's last row (``core.repeats``), reading the file once ahead from where
        ``opened`` starts.

        Read with a second opening of the very reader that reads the chunks (the line
        reader or the row reader, picked as for ``opened``): its rows, lines and keys are
        the chunks' own, a row the source refuses has no key, and a row that stops the
        reading (a hostile file) stops this read there too. Derived from the file alone,
        so a pull resumed after a crash decides as the first one did. One chunk at a time:
        what it keeps is the finder's bitmap and the repeated keys.
        """
        if opened is None:
            return {}
        columns = {c: opened.header.index(c) for c in self.key_columns if c in opened.header}
        if not columns:
            return {}
        twin = self._open(opened.path, opened.skip_until, found=opened.found)
        if twin is None:
            return {}
        size = opened.opened_as[0]
        finders = {c: RepeatFinder(bitmap_bits(size)) for c in columns}
        try:
            while True:
                rows, _rejects, eof = self._parse_chunk(twin)
                lines = row_lines(rows)
                for column, finder in finders.items():
                    finder.add(row_keys(rows, columns[column]), lines)
                if twin.lines is not None and twin.broken is not None:
                    # The line reader stops only on a failing read, which the chunks'
                    # read may not meet again: it must not read rows this read missed.
                    raise FileUnreadable(
                        f"{opened.origin} line {twin.last_line + 1}: cannot read the file "
                        "ahead for its repeated keys (last row wins); no row after line "
                        f"{opened.skip_until} was taken. Drop the whole file again"
                    )
                if eof:
                    return {c: finder.result() for c, finder in finders.items()}
        finally:
            twin.text.close()

    def _open(self, path: Path, skip_until: int, found: Scan | None = None) -> _OpenFile | None:
        """Open a claimed file at its first data row; ``found``: the reader a first
        opening picked (not scanned again, not logged again)."""
        counter, binary = _csv_bytes(path)
        with counter, binary:
            try:
                head, whole = compressed.read_head(binary, SNIFF_BYTES)
            except compressed.STREAM_ERRORS as exc:  # cut before its first byte of CSV
                raise FileUnreadable(f"{path.name}: {compressed.damaged(exc)}") from None
        _check_head(head, self.config.encoding, path.name, whole)
        if not head.strip(b"\xef\xbb\xbf \r\n\t"):
            return None
        encoding = self.config.encoding
        if codecs.lookup(encoding).name == "utf-8":
            encoding = "utf-8-sig"  # a leading BOM is not part of the first column's name
        counter, binary = _csv_bytes(path)
        opened = os.fstat(counter.raw.fileno())
        text = io.TextIOWrapper(binary, encoding=encoding, errors="surrogateescape", newline="")
        limit = field_limit(self.config)
        csv.field_size_limit(limit)
        lines = _header_lines(text, limit)
        reader = csv.reader(lines, delimiter=self.config.delimiter, quotechar=self.config.quotechar)
        try:
            header_row = next(reader, None)
        except csv.Error as exc:
            text.close()
            raise FileUnreadable(f"{path.name}: cannot read the header: {exc}") from None
        except compressed.STREAM_ERRORS as exc:
            text.close()
            raise FileUnreadable(f"{path.name}: {compressed.damaged(exc)}") from None
        header = tuple(h.strip() for h in (header_row or []))
        problem = _header_problem(header, self.required_columns)
        names = self.data_header(header) if problem and self.data_header else None
        if names is not None:  # the first row is data: read the file again from its top
            text.close()
            counter, binary = _csv_bytes(path)
            text = io.TextIOWrapper(binary, encoding=encoding, errors="surrogateescape", newline="")
            lines = _header_lines(text, limit)
            reader = csv.reader(
                lines, delimiter=self.config.delimiter, quotechar=self.config.quotechar
            )
            header, problem = names, None
        if problem:
            text.close()
            raise FileUnreadable(f"{path.name}: {problem}")
        _bound_to_rows(lines, len(header), limit)
        told = found is not None
        if found is None:
            found = (
                Scan("a file without a header row")
                if names is not None
                else Scan("the source's reader is rows")
                if self.config.reader == "rows"
                else scan(
                    path,
                    encoding=self.config.encoding,
                    delimiter=self.config.delimiter,
                    quotechar=self.config.quotechar,
                    field_limit=limit,
                )
            )
        line_reader: LineReader | None = None
        closing: io.IOBase = text
        if found.why is None:
            text.close()
            counter, binary = _csv_bytes(path)
            closing = binary
            line_reader = LineReader(binary, delimiter=self.config.delimiter, crlf=found.crlf)
            line_reader.skip_header()
        elif self.config.reader != "rows" and not told:  # once a file: why it is read row by row
            log.info("source.reader.rows", source=self.name, origin=path.name, reason=found.why)
        return _OpenFile(
            path,
            path.name,
            header,
            reader,
            closing,
            counter,
            last_line=reader.line_num,  # 0 when the file has no header row
            skip_until=skip_until,
            opened_as=(opened.st_size, opened.st_mtime_ns),
            lines=line_reader,
            found=found,
        )

    def _read_chunk(
        self, f: _OpenFile
    ) -> tuple[Sequence[tuple[int, list[str]]], list[Reject], bool]:
        rows, rejects, eof = self._parse_chunk(f)
        now = os.fstat(f.counter.raw.fileno())
        if (now.st_size, now.st_mtime_ns) != f.opened_as:
            # Written to while we read: this chunk may hold half a row of the new data.
            # The chunks before it were read while the file was as claimed; keep those.
            f.broken = (
                f"{f.origin}: the file changed while syncd read it ({f.opened_as[0]} bytes "
                f"when claimed, {now.st_size} now); reading stopped at line {f.last_line} "
                "and the rows before the last chunk were kept. Drop the whole file again "
                "once it is complete (write name.part, then rename it; rows already "
                "delivered are not sent twice)"
            )
            return [], [], True
        return rows, rejects, eof

    def _parse_chunk(
        self, f: _OpenFile
    ) -> tuple[Sequence[tuple[int, list[str]]], list[Reject], bool]:
        if f.lines is not None:
            return self._parse_lines(f, f.lines)
        rows: list[tuple[int, list[str]]] = []
        rejects: list[Reject] = []
        width = len(f.header)
        limit = self.config.chunk_rows
        # Every row of a re-sync passes here, most of them unchanged: the loop keeps its
        # state in locals (a row costs a tuple and an append beside the parse itself).
        reader, append, skip_until = f.reader, rows.append, f.skip_until
        line = f.last_line  # the physical line the last row read ended on
        try:
            for values in reader:
                start, line = line + 1, reader.line_num
                if start <= skip_until or not values:
                    continue  # committed before a restart, or a blank line
                if len(values) != width:
                    kept, why = shaped(values, width)
                    if kept is not None:
                        values = kept
                    else:
                        rejects.append(Reject(self.name, why or "", start, f.origin, row=values))
                        if len(rows) + len(rejects) >= limit:
                            return rows, rejects, False
                        continue
                append((start, values))
                if len(rows) + len(rejects) >= limit:
                    return rows, rejects, False
        except csv.Error as exc:
            # Never read on after a row that could not be parsed whole: the reader
            # would resume inside a quoted cell and take its lines for leads.
            f.broken = (
                f"{f.origin} line {line + 1}: unreadable CSV row ({exc}); reading stopped "
                "there and the rows before it were kept. Fix the file (or raise the source's "
                "max_field_bytes) and drop the rest again"
            )
        except compressed.STREAM_ERRORS as exc:
            f.broken = (
                f"{f.origin} line {line + 1}: {compressed.damaged(exc)}; reading stopped "
                "there and the rows before it were kept. Drop the whole file again "
                "(rows already delivered are not sent twice)"
            )
        finally:
            f.last_line = line
        return rows, rejects, True

    def _parse_lines(
        self, f: _OpenFile, lines: LineReader
    ) -> tuple[Sequence[tuple[int, list[str]]], list[Reject], bool]:
        """Return the next chunk of a file the line reader reads (csv_lines), counted and
        cut where the row reader cuts it, its rows kept as the bytes of their lines."""
        try:
            return lines.chunk(
                self.config.chunk_rows, len(f.header), f.skip_until, self.name, f.origin
            )
        except OSError as exc:
            f.broken = (
                f"{f.origin} line {lines.line + 1}: cannot read the file ({exc}); reading "
                "stopped there and the rows before it were kept. Drop the whole file again "
                "(rows already delivered are not sent twice)"
            )
            return [], [], True
        finally:
            f.last_line = lines.line

    def describe(self, origin: str) -> FileFacts:
        """Return what a claimed file is, read again whole (a do-not-call list records
        each version it loads)."""
        digest, lines, first = hashlib.sha256(), 0, b""
        counter, fh = _csv_bytes(self.processing / origin)
        keep = HEADER_FIELDS * (2 * field_limit(self.config) + 3)  # of the first line
        with counter, fh:
            mtime = os.fstat(counter.raw.fileno()).st_mtime
            filled = False  # the line being read has a character that is not blank
            start = bytearray()  # its first bytes, until the first such line is known
            # In pieces, not lines: a file of one huge line must not be held whole.
            while piece := fh.readline(SNIFF_BYTES):
                digest.update(piece)
                filled = filled or bool(piece.strip())
                if not first and len(start) < keep:
                    start += piece
                if piece.endswith(b"\n"):
                    first = first or (bytes(start[:keep]) if filled else b"")
                    lines, filled = lines + filled, False
                    start.clear()
            if filled:
                lines, first = lines + 1, first or bytes(start[:keep])
        encoding = "utf-8-sig" if codecs.lookup(self.config.encoding).name == "utf-8" else None
        text = first.decode(encoding or self.config.encoding, "replace")
        cells = next(csv.reader([text], delimiter=self.config.delimiter), [])
        headerless = bool(self.data_header and self.data_header(tuple(c.strip() for c in cells)))
        return FileFacts(digest.hexdigest(), mtime, max(lines - (0 if headerless else 1), 0))

    # -- filing away -----------------------------------------------------------

    def _finisher(self, path: Path) -> Callable[[], Awaitable[None]]:
        async def finish() -> None:
            rejects = await self.load_rejects(path.name) if self.load_rejects else []
            await anyio.to_thread.run_sync(self._file_done, path, rejects)

        return finish

    def _file_done(self, path: Path, rejects: list[tuple[int | None, str, str, str]]) -> None:
        header: list[str] = []
        if rejects:
            header = _read_header(path, self.config)
            _write_rejects(self.done / f"{path.name}{REJECTS_SUFFIX}", header, rejects)
        if path.exists():
            os.replace(path, self.done / path.name)
            if self.config._links_into is None:  # a dry run's link must not touch the file
                os.utime(self.done / path.name)  # its time in done/ counts from now

    def _failer(self, path: Path, reason: str) -> Callable[[], Awaitable[None]]:
        async def fail() -> None:
            await self.fail_origin(path.name, reason)

        return fail

    async def fail_origin(self, origin: str, reason: str) -> None:
        def move() -> None:
            source = self.processing / origin
            write_private_text(
                self.failed / f"{origin}.error.txt",
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n{reason}\n",
            )
            if source.exists():
                os.replace(source, self.failed / origin)

        await anyio.to_thread.run_sync(move)

    async def close(self) -> None:
        return None


def _entries(inbox: Path) -> list[Path]:
    """Return the inbox's entries a writer may have dropped: not hidden, not a ``.part``
    still being written, not a folder (``processing/``, ``done/``, ``failed/``)."""
    try:
        found = list(inbox.iterdir())
    except OSError:  # gone, or not a folder: nothing dropped
        return []
    return [
        p
        for p in found
        if not p.name.startswith(".")
        and not p.name.endswith(".part")
        and not (p.is_dir() and not p.is_symlink())
    ]


def ignored_in(inbox: Path, pattern: str) -> list[str]:
    """Return the names of the files in ``inbox`` a source with ``pattern`` never reads
    (not a drop, compressed or not)."""
    return sorted(p.name for p in _entries(inbox) if not compressed.is_drop_name(p.name, pattern))


def _regular(path: Path) -> bool:
    """Return True for a regular file that is not a link (``lstat``: links are not followed)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _kind(path: Path) -> str:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def _printable(name: str) -> str:
    """Return a file name as UTF-8 text: undecodable bytes read as Windows-1252 (what a
    Windows share writes), else shown as ``\\xNN``; a UTF-8 name is returned unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        raw = os.fsencode(name)
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace")


def _renamed_printable(path: Path) -> Path:
    """Return ``path`` renamed in place to its printable name when it is not UTF-8."""
    name = _printable(path.name)
    if name == path.name:
        return path
    target = path.with_name(_unique_name(name, path.parent))
    os.rename(path, target)
    return target


def _unique_name(name: str, *dirs: Path) -> str:
    # A daily export keeps its name; a second drop of the same name must not overwrite.
    if not any((d / name).exists() for d in dirs):
        return name
    stem, dot, ext = name.rpartition(".")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    base = f"{stem}-{stamp}" if dot else f"{name}-{stamp}"
    candidate, n = (f"{base}.{ext}" if dot else base), 1
    while any((d / candidate).exists() for d in dirs):
        n += 1
        candidate = f"{base}-{n}.{ext}" if dot else f"{base}-{n}"
    return candidate


def _check_head(head: bytes, encoding: str, name: str, whole: bool) -> None:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and "16" not in encoding:
        raise FileUnreadable(f"{name}: the file is UTF-16; set the source's encoding to 'utf-16'")
    if b"\x00" in head[:8192] and "16" not in encoding and "32" not in encoding:
        raise FileUnreadable(f"{name}: binary content (NUL bytes), not a CSV text file")
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        decoder.decode(head, final=whole)
    except UnicodeDecodeError as exc:
        raise FileUnreadable(
            f"{name}: not valid {encoding} at byte {exc.start}; "
            "set the source's encoding (e.g. 'cp1252' or 'latin-1')"
        ) from None


def _header_problem(header: tuple[str, ...], required: set[str]) -> str | None:
    if not header or not any(header):
        return "no header row"
    if any(not h for h in header):
        return f"the header has an empty column name (columns: {', '.join(header)})"
    seen: set[str] = set()
    for h in header:
        if h in seen:
            return f"the header names column {h!r} twice"
        seen.add(h)
    missing = sorted(required - seen)
    if missing:
        return (
            "missing column(s) "
            + ", ".join(repr(m) for m in missing)
            + " that the route mapping needs; the header has: "
            + ", ".join(header)
        )
    return None


def _read_header(path: Path, config: CsvDropConfig) -> list[str]:
    encoding = "utf-8-sig" if codecs.lookup(config.encoding).name == "utf-8" else config.encoding
    counter, binary = _csv_bytes(path)
    with counter, io.TextIOWrapper(binary, encoding=encoding, errors="replace", newline="") as fh:
        lines = _header_lines(fh, field_limit(config))
        try:
            return [h.strip() for h in next(csv.reader(lines, delimiter=config.delimiter), [])]
        except csv.Error:
            return []  # read whole before, so not met; the rejects go without the names


def _write_rejects(
    target: Path, header: list[str], rejects: list[tuple[int | None, str, str, str]]
) -> None:
    part = target.with_name(target.name + ".part")
    with open_private(part, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["line", "reason", *header])
        for line, sink, reason, row_json in rejects:
            row = json.loads(row_json) if row_json else []
            values = row if isinstance(row, list) else [row.get(h, "") for h in header]
            text = f"[{sink}] {reason}" if sink else reason
            cells = [
                v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                if isinstance(v, str)
                else str(v)
                for v in values
            ]
            writer.writerow(
                [
                    line if line is not None else "",
                    neutralise(text),
                    *(neutralise(c) for c in cells),
                ]
            )
    os.replace(part, target)
