"""CSV writeback: outcomes appended to files in an outbox folder for a CRM importer.

Rows go to ``<prefix>-<UTC time>-<n>.csv.part`` (header first); the file is renamed
to ``.csv`` once it reaches ``rotate_bytes`` or is ``rotate_s`` old, or at a stop or
reload of the daemon, so an importer that reads ``*.csv`` never sees half a file.
The size of the part file is committed with the marks of the rows in it: after a
crash, rows beyond that size (written, never marked) are cut off and written again,
so each version lands in the published files exactly once. Cells are neutralised
against formula injection.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog
from pydantic import Field, field_validator, model_validator

from syncd.config import TimeZoneName
from syncd.core.csvsafe import neutralise
from syncd.core.private import folder_problem, private_dir
from syncd.errors import CheckFailed
from syncd.writeback.base import (
    DEFAULT_COLUMNS,
    BaseWritebackConfig,
    Item,
    WritebackStopped,
    local_time,
)

log = structlog.get_logger("syncd.writeback.csv")


class CsvWritebackConfig(BaseWritebackConfig):
    kind: Literal["csv"] = "csv"
    outbox: Path
    prefix: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")  # default: the name
    columns: list[str] = Field(default_factory=list)  # default: DEFAULT_COLUMNS[what]
    rotate_bytes: int = Field(10_000_000, ge=1)
    rotate_s: float = Field(300.0, ge=0)  # 0: publish at the end of every pass
    timezone: TimeZoneName = "UTC"
    delimiter: str = ","
    bom: bool = False  # a UTF-8 byte order mark, for Excel
    # The files hold phone numbers: private by default; "0640" lets the importer's group read.
    file_mode: str = Field("0600", pattern=r"^0?[0-7]{3}$")

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        value = {"tab": "\t", "\\t": "\t"}.get(value, value)
        if len(value) != 1 or value in '"\r\n':
            raise ValueError("must be a single character (or 'tab')")
        return value

    @model_validator(mode="after")
    def _columns(self) -> CsvWritebackConfig:
        self.check_names(self.columns, "columns")
        return self


class CsvWriteback:
    """Appends batches to the current part file and publishes it when due."""

    def __init__(self, config: CsvWritebackConfig) -> None:
        self.name = config.name
        self.config = config
        self.outbox = Path(config.outbox)
        self.prefix = config.prefix or config.name
        self.columns = tuple(config.columns) or DEFAULT_COLUMNS[config.what]
        self._name_pattern = re.compile(
            rf"^{re.escape(self.prefix)}-\d{{8}}T\d{{6}}Z-\d+\.csv\.part$"
        )
        self._part: Path | None = None
        self._size = 0  # bytes in the part file after the last write
        self._marked = 0  # bytes whose rows are marked written in the store
        self._created = 0.0

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self, state: str | None) -> None:
        await anyio.to_thread.run_sync(self._recover, state)

    async def probe(self) -> str:
        """Raise CheckFailed unless syncd can write in the outbox (or create it)."""
        problem = await anyio.to_thread.run_sync(
            lambda: folder_problem(self.outbox, may_create=True)
        )
        if problem is not None:
            raise CheckFailed(
                f"outbox: {problem}",
                settings=("outbox",),
                action="give the user syncd runs as write access there (under systemd, "
                "also ReadWritePaths=)",
            )
        made = "writable" if self.outbox.is_dir() else "can be created"
        return f"outbox {self.outbox} {made}"

    def _recover(self, state: str | None) -> None:
        try:
            private_dir(self.outbox)
            data: dict[str, Any] = json.loads(state) if state else {}
            part = self.outbox / str(data["part"]) if data.get("part") else None
            if part is not None and part.exists():
                size = int(data.get("size", 0))
                if part.stat().st_size > size:
                    # Rows written but never marked: they come again from the store.
                    os.truncate(part, size)
                self._part, self._size, self._marked = part, size, size
                self._created = float(data.get("created") or time.time())
            for orphan in self.outbox.iterdir():
                if self._name_pattern.match(orphan.name) and orphan != self._part:
                    orphan.unlink()  # a part never marked at all
        except OSError as exc:
            raise WritebackStopped(f"cannot use the outbox {self.outbox}: {exc}") from exc

    def state(self) -> str | None:
        part = self._part.name if self._part else None
        return json.dumps({"part": part, "size": self._size, "created": self._created})

    async def close(self) -> None:
        return None

    # -- writing -------------------------------------------------------------------------

    async def write(self, items: Sequence[Item]) -> None:
        body = self._rows(items)
        await anyio.to_thread.run_sync(self._append, body)

    def _rows(self, items: Sequence[Item]) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=self.config.delimiter, lineterminator="\r\n")
        for item in items:
            writer.writerow([self._cell(item.values.get(c)) for c in self.columns])
        return buffer.getvalue().encode("utf-8")

    def _cell(self, value: object) -> str:
        if isinstance(value, datetime):
            local = local_time(value, self.config.timezone)
            return local.isoformat(timespec="seconds") if local else ""
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        return neutralise(value)

    def _header(self) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=self.config.delimiter, lineterminator="\r\n").writerow(
            self.columns
        )
        bom = codecs.BOM_UTF8 if self.config.bom else b""
        return bom + buffer.getvalue().encode("utf-8")

    def _append(self, body: bytes) -> None:
        if self._part is None:
            self._part, self._created = self._new_part(), time.time()
            self._size = self._marked = 0
        part = self._part
        try:
            with part.open("r+b" if part.exists() else "w+b") as fh:
                fh.truncate(self._marked)  # drop what a failed earlier write left behind
                fh.seek(self._marked)
                if self._marked == 0:
                    fh.write(self._header())
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
                self._size = fh.tell()
        except OSError as exc:
            raise WritebackStopped(f"cannot write {part}: {exc.strerror or exc}") from exc

    def _cut_unmarked(self) -> None:
        part = self._part
        try:
            if part is not None and part.exists():
                os.truncate(part, self._marked)
        except OSError as exc:
            raise WritebackStopped(f"cannot write {part}: {exc.strerror or exc}") from exc
        self._size = self._marked

    def _new_part(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        n = 1
        while True:
            part = self.outbox / f"{self.prefix}-{stamp}-{n}.csv.part"
            if not part.exists() and not part.with_suffix("").exists():
                part.touch(mode=0o600)
                os.chmod(part, int(self.config.file_mode, 8))  # whatever the umask
                _fsync_dir(self.outbox)  # the state will name this file: it must survive
                return part
            n += 1

    # -- publishing --------------------------------------------------------------------

    async def committed(self) -> None:
        self._marked = self._size
        if self._part is not None and self._marked >= self.config.rotate_bytes:
            await anyio.to_thread.run_sync(self._publish)

    async def end_pass(self) -> None:
        if self._part is None:
            return
        if self._size > self._marked:
            # Rows written whose marks were not saved (the store failed mid-pass): they
            # are still pending and come again; the state saved now must not keep them.
            await anyio.to_thread.run_sync(self._cut_unmarked)
        if self._marked == 0:
            return
        if time.time() - self._created >= self.config.rotate_s:
            await anyio.to_thread.run_sync(self._publish)

    async def publish(self) -> None:
        """At a stop: publish the current file whatever its age (the next start may be far)."""
        await anyio.to_thread.run_sync(self._publish)

    def _publish(self) -> None:
        part = self._part
        if part is None:
            return
        if self._marked == 0:
            # A part no row of which was marked (its first write failed): nothing to publish.
            try:
                part.unlink(missing_ok=True)
            except OSError as exc:
                raise WritebackStopped(f"cannot remove {part}: {exc.strerror or exc}") from exc
            self._part, self._size, self._created = None, 0, 0.0
            return
        final = part.with_suffix("")  # name.csv.part -> name.csv
        try:
            os.truncate(part, self._marked)  # only rows marked written are published
            os.rename(part, final)
            _fsync_dir(self.outbox)
        except OSError as exc:
            raise WritebackStopped(f"cannot publish {final}: {exc.strerror or exc}") from exc
        log.info("writeback.csv.published", writeback=self.name, file=final.name)
        self._part, self._size, self._marked, self._created = None, 0, 0, 0.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
