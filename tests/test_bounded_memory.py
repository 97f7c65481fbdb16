"""Memory stays flat whatever the outside sends (issue 29): a drop whose one cell is huge,
plain or compressed, costs about what a normal run costs, not the cell's size.

Each run is measured as its own process's peak resident set size (see
tests/support/peak_rss.py); the bound is a memory bound, never a time bound.
"""

from __future__ import annotations

import gzip
import sys
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from syncd.simulators.server import running
from tests.conftest import ROOT, Simulated, cli_env, jodo_config, settled
from tests.support.peak_rss import run_measured
from tests.support.reliability import export, keys, lead_row

MB = 1024 * 1024
CELL_MB = 100
# A normal `run --once` peaks near 71 MB; reading the huge cell's line whole took 273 MB.
PEAK_BOUND = 160 * MB
REPLY_PEAK_BOUND = 110 * MB


def _write_huge_export(fh: IO[bytes]) -> None:
    """Write three leads, then a lead whose first name is one quoted 100 MB cell, then
    two more leads; written a block at a time, never held whole."""
    fh.write(export(3).encode())
    fh.write(b'BIG,"')
    block = b"x" * MB
    for _ in range(CELL_MB):
        fh.write(block)
    fh.write(b'",Last,9800000099,big@example.in,\n')
    fh.write((lead_row(3) + lead_row(4)).encode())


def _plain(path: Path) -> None:
    with path.open("wb") as fh:
        _write_huge_export(fh)


def _gzipped(path: Path) -> None:
    with gzip.open(path, "wb", compresslevel=1) as fh:
        _write_huge_export(fh)


def _zipped(path: Path) -> None:
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("export/big.csv", "w", force_zip64=True) as fh,
    ):
        _write_huge_export(fh)


@pytest.mark.parametrize(
    ("name", "write"),
    [("big.csv", _plain), ("big.csv.gz", _gzipped), ("big.zip", _zipped)],
    ids=["plain", "gzip", "zip"],
)
def test_a_drop_with_one_huge_cell_is_failed_without_taking_the_cell_into_memory(
    tmp_path: Path, jodo: Simulated, name: str, write: Callable[[Path], None]
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    inbox = tmp_path / "inbox"
    part = inbox / f"{name}.part"
    write(part)
    part.rename(inbox / name)
    settled(inbox / name)

    result, peak = run_measured(
        [sys.executable, "-m", "syncd", "run", "--once", "-c", str(config)],
        env=cli_env(),
        cwd=ROOT,
        timeout=600,
        scratch=tmp_path,
    )

    assert result.returncode == 1, result.stderr[-2000:]
    note = (inbox / "failed" / f"{name}.error.txt").read_text()
    assert f"{name} line 5: unreadable CSV row (field larger than field limit (1000000))" in note
    assert set(jodo.sim.received()) == keys(3)  # the rows before the huge one were kept
    assert peak < PEAK_BOUND, f"peak RSS {peak / MB:.0f} MB for a {CELL_MB} MB cell"


# -- replies -----------------------------------------------------------------------------


def _endless_reply(status: int) -> Starlette:
    """A server answering every request ``status`` with a body that never ends."""

    async def endless(request: Request) -> AsyncIterator[bytes]:
        block = b'{"status":"' + b"x" * (MB - 11)
        while not await request.is_disconnected():  # until syncd hangs up
            yield block

    async def answer(request: Request) -> StreamingResponse:
        await request.body()
        body = endless(request)
        return StreamingResponse(body, status_code=status, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


@pytest.mark.parametrize("status", [200, 500])
def test_an_endless_reply_costs_about_the_reply_cap_once(tmp_path: Path, status: int) -> None:
    with running(_endless_reply(status)) as url:
        config = jodo_config(tmp_path, url, max_attempts=1)
        (tmp_path / "inbox" / "leads.csv").write_text(export(3))
        settled(tmp_path / "inbox" / "leads.csv")

        # The deadline ends the outcome poll's tries after the second (the third would
        # come 6 s on): the push and two polls have each read an endless reply twice.
        once = ["run", "--once", "--deadline", "4", "-c", str(config)]
        result, peak = run_measured(
            [sys.executable, "-m", "syncd", *once],
            env=cli_env(),
            cwd=ROOT,
            timeout=600,
            scratch=tmp_path,
        )

    assert result.returncode != 0
    if status == 200:
        assert "answered with more than 16384 KB; not read" in result.stdout + result.stderr
    # A normal run peaks near 71 MB; the 16 MB cap read once fits, copies of it do not.
    assert peak < REPLY_PEAK_BOUND, f"peak RSS {peak / MB:.0f} MB"
