"""Compressed drops: a CRM export zipped or gzipped on its way is read, or refused with a
reason — never left in the inbox unmentioned."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Simulated, drop_csv, jodo_config, run_cli
from tests.support.reliability import export, keys


def delivered(jodo: Simulated) -> set[str]:
    return set(jodo.sim.received())


def zipped(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_a_gzipped_export_is_read_like_the_csv_inside(tmp_path: Path, jodo: Simulated) -> None:
    config = jodo_config(tmp_path, jodo.url)
    inbox = tmp_path / "inbox"
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0  # an empty inbox
    drop_csv(inbox, "monday.csv.gz", gzip.compress(export(120).encode()))  # type: ignore[arg-type]

    waiting = run_cli("status", "--json", "-c", str(config))
    result = run_cli("run", "--once", "-c", str(config))

    [source] = json.loads(waiting.stdout)["sources"]
    assert source["waiting"] == 1  # counted before it is read
    assert result.returncode == 0, result.stderr[-2000:]
    assert delivered(jodo) == keys(120)
    assert [p.name for p in (inbox / "done").iterdir()] == ["monday.csv.gz"]


def test_a_zip_holding_one_csv_is_read_and_its_rejects_land_beside_it(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    inbox = tmp_path / "inbox"
    text = export(30, extra_rows=["BAD1,A,B,not-a-number,b@x.in,"])
    drop_csv(inbox, "export.zip", zipped({"export/leads.csv": text}))  # type: ignore[arg-type]

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr[-2000:]
    assert delivered(jodo) == keys(30)
    rejects = (inbox / "done" / "export.zip.rejects.csv").read_text()
    assert "BAD1" in rejects and rejects.startswith("line,reason,id,first")


def test_bzip2_and_xz_exports_are_read_too(tmp_path: Path, jodo: Simulated) -> None:
    config = jodo_config(tmp_path, jodo.url)
    inbox = tmp_path / "inbox"
    drop_csv(inbox, "a.csv.bz2", bz2.compress(export(3).encode()))  # type: ignore[arg-type]
    drop_csv(inbox, "b.csv.xz", lzma.compress(export(4, start=3).encode()))  # type: ignore[arg-type]

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr[-2000:]
    assert delivered(jodo) == keys(7)


def test_a_tar_archive_is_refused_for_what_it_is(tmp_path: Path, jodo: Simulated) -> None:
    config = jodo_config(tmp_path, jodo.url)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = export(2).encode()
        info = tarfile.TarInfo("leads.csv")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    drop_csv(tmp_path / "inbox", "leads.tgz", buffer.getvalue())  # type: ignore[arg-type]

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 1
    note = (tmp_path / "inbox" / "failed" / "leads.tgz.error.txt").read_text()
    assert "a tar archive compressed with gzip" in note
    assert not delivered(jodo)


def test_gzip_content_under_a_csv_name_is_read_not_called_binary(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    drop_csv(tmp_path / "inbox", "leads.csv", gzip.compress(export(5).encode()))  # type: ignore[arg-type]

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr[-2000:]
    assert delivered(jodo) == keys(5)


def test_archives_syncd_cannot_read_go_to_failed_with_the_reason_and_block_nothing(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    inbox = tmp_path / "inbox"
    drop_csv(inbox, "two.zip", zipped({"a.csv": export(2), "b.csv": export(2, start=2)}))  # type: ignore[arg-type]
    drop_csv(inbox, "packed.7z", b"7z\xbc\xaf\x27\x1c" + bytes(200))  # type: ignore[arg-type]
    drop_csv(inbox, "empty.zip", zipped({}))  # type: ignore[arg-type]
    drop_csv(inbox, "good.csv", export(4, start=100))

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 1  # drops refused: said in the exit code
    assert delivered(jodo) == keys(4, start=100)  # the readable drop went through
    failed = inbox / "failed"
    assert "holds 2 files" in (failed / "two.zip.error.txt").read_text()
    assert "7-Zip" in (failed / "packed.7z.error.txt").read_text()
    assert "holds no CSV" in (failed / "empty.zip.error.txt").read_text()
    assert {p.name for p in inbox.iterdir() if p.is_file()} == set()  # nothing left unmentioned
    for name in ("two.zip", "packed.7z", "empty.zip"):
        assert name in result.stdout + result.stderr


def test_a_gzip_cut_short_keeps_the_rows_before_and_says_where_it_stopped(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url, chunk_rows=100)
    whole = gzip.compress(export(2000).encode())
    drop_csv(tmp_path / "inbox", "cut.csv.gz", whole[: len(whole) * 2 // 3])  # type: ignore[arg-type]

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 1
    note = (tmp_path / "inbox" / "failed" / "cut.csv.gz.error.txt").read_text()
    assert "compressed data ends early" in note, note
    got = delivered(jodo)
    assert got and got < keys(2000)  # the rows read before the break went, no phantom lead
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kept", [11, 15, 30])
def test_a_gzip_cut_before_its_first_row_goes_to_failed_not_done_as_empty(
    tmp_path: Path, jodo: Simulated, kept: int
) -> None:
    # Cut within its first bytes (a copy stopped at once), it decompresses to nothing:
    # before, it was taken for an empty export, filed in done/ and said nowhere.
    config = jodo_config(tmp_path, jodo.url)
    whole = gzip.compress(export(3000).encode())
    drop_csv(tmp_path / "inbox", "cut.csv.gz", whole[:kept])  # type: ignore[arg-type]

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 1, result.stdout
    note = (tmp_path / "inbox" / "failed" / "cut.csv.gz.error.txt").read_text()
    assert "compressed data ends early" in note, note
    assert not (tmp_path / "inbox" / "done" / "cut.csv.gz").exists()
