"""Hostile files in the inbox: odd names, links, pipes; what syncd writes stays private."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from pathlib import Path

from syncd.sources.base import Chunk
from syncd.sources.csv_drop import CsvDropConfig, CsvDropSource
from tests.conftest import Simulated, cli_env, drop_csv, jodo_config, run_cli, settled
from tests.support.reliability import export


def delivered(jodo: Simulated) -> set[str]:
    return set(jodo.sim.received())


def test_a_file_name_that_is_not_utf8_is_read_and_blocks_nothing(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    inbox = tmp_path / "inbox"
    latin1 = os.fsencode(inbox) + b"/Exportaci\xf3n.csv"  # written by a Windows share
    with open(latin1, "wb") as fh:
        fh.write(export(3).encode())
    settled(latin1)
    drop_csv(inbox, "later.csv", export(2, start=3))

    first = run_cli("run", "--once", "-c", str(config))
    second = run_cli("run", "--once", "-c", str(config))  # every later run works too

    assert first.returncode == 0, first.stderr[-2000:]
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Traceback" not in first.stderr + second.stderr
    assert len(delivered(jodo)) == 5  # both files' leads, once each
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["Exportación.csv", "later.csv"]


def test_a_link_in_the_inbox_is_refused_unread_and_its_target_never_shown(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    inbox = tmp_path / "inbox"
    secret = tmp_path / "ameyo-password"
    secret.write_text("id,phone\nhunter2-secret,1\n")
    (inbox / "leads.csv").symlink_to(secret)
    os.mkfifo(inbox / "pipe.csv")  # a writer's named pipe: opening it would hang
    drop_csv(inbox, "real.csv", export(2))

    result = run_cli("run", "--once", "-c", str(config))
    status = run_cli("status", "-c", str(config))

    assert result.returncode == 1  # two drops refused: said in the exit code
    assert len(delivered(jodo)) == 2  # the real drop went through
    failed = inbox / "failed"
    assert (failed / "leads.csv").is_symlink() and secret.exists()  # the link moved, not its file
    note = (failed / "leads.csv.error.txt").read_text()
    assert "not a regular file (a symbolic link)" in note
    assert "named pipe" in (failed / "pipe.csv.error.txt").read_text()
    state = (tmp_path / "state" / "state.db").read_bytes()
    for text in (result.stdout, result.stderr, status.stdout, note):
        assert "hunter2" not in text
    assert b"hunter2" not in state


def test_rejects_and_error_notes_are_private_to_syncd(tmp_path: Path, jodo: Simulated) -> None:
    config = jodo_config(tmp_path, jodo.url)
    inbox = tmp_path / "inbox"
    drop_csv(inbox, "mixed.csv", export(2, extra_rows=["B1,not-a-phone,Bad,Row,b@example.com,"]))
    drop_csv(inbox, "binary.csv", "id,phone\n" + "\x00" * 100)

    run_cli("run", "--once", "-c", str(config))

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(inbox / "done" / "mixed.csv.rejects.csv") == 0o600
    assert mode(inbox / "failed" / "binary.csv.error.txt") == 0o600
    assert mode(inbox / "done") == mode(inbox / "failed") == mode(inbox / "processing") == 0o700


def test_a_missing_inbox_is_an_error_not_an_empty_success(tmp_path: Path, jodo: Simulated) -> None:
    config = jodo_config(tmp_path, jodo.url)
    (tmp_path / "inbox").rmdir()

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 1
    assert "does not exist" in result.stdout + result.stderr
    assert not (tmp_path / "inbox").exists()  # not created behind the user's back


def test_control_characters_never_reach_the_dialer(tmp_path: Path, jodo: Simulated) -> None:
    config = jodo_config(tmp_path, jodo.url)
    padding = "".join(f"P{i},98{i:08d},Pad,Row,p{i}@example.in,\n" for i in range(300))  # > 8 KB
    rows = "N1,9812345678,Fir\x00st,La\x1bst,n1@example.in,\nK\x00EY,9812345679,A,B,k@x.in,\n"
    drop_csv(tmp_path / "inbox", "nul.csv", "id,phone,first,last,email,callback\n" + padding + rows)

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr[-2000:]
    records = jodo.sim.records("VoiceProcess")
    [n1] = [r for r in records if "N1" in r.values()]
    assert "\x00" not in str(n1) and "\x1b" not in str(n1)
    assert "First" in str(n1) and "Last" in str(n1)
    assert len(records) == 301  # the padding and N1; the key with a NUL was refused
    rejects = (tmp_path / "inbox" / "done" / "nul.csv.rejects.csv").read_text()
    assert "holds control characters (U+0000)" in rejects


def test_a_huge_quoted_cell_ends_the_file_there_and_no_phantom_lead_is_called(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    # 2 MB in one quoted cell (over the source's 1 MB field limit), holding lines that
    # look like rows: a reader that resumes inside the cell would call them.
    inside = "".join(f"X{i},98{i:08d},Not,A Lead,x@example.in,\n" for i in range(40_000))
    text = (
        "id,phone,first,last,email,callback\n"
        "L1,9812345671,Real,One,a@example.in,\n"
        f'L2,9812345672,"{inside}",Two,b@example.in,\n'
        "L3,9812345673,Real,Three,c@example.in,\n"
    )
    drop_csv(tmp_path / "inbox", "huge.csv", text)

    result = run_cli("run", "--once", "-c", str(config))

    called = {r["leadnumber"] for r in jodo.sim.records("VoiceProcess")}
    assert not any(k.startswith("X") for k in called)  # nobody who is not a lead
    assert called == {"L1"}  # the row before the broken one was kept
    assert result.returncode == 1
    note = (tmp_path / "inbox" / "failed" / "huge.csv.error.txt").read_text()
    assert "huge.csv line 3: unreadable CSV row" in note and "reading stopped there" in note


def test_every_refused_row_can_be_listed_not_only_the_last_ten(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    bad = [f"B{i},not-a-phone,Bad,Row,b{i}@example.in," for i in range(15)]
    drop_csv(tmp_path / "inbox", "dirty.csv", export(2, extra_rows=bad))
    run_cli("run", "--once", "-c", str(config))

    listed = run_cli("rejects", "--source", "crm", "-c", str(config))
    status = run_cli("status", "-c", str(config))

    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.strip().splitlines()
    assert rows[0].startswith("at,source,sink,origin,line,key,reason")
    assert len(rows) == 1 + 15 and "15 refused row(s)" in listed.stderr
    assert "syncd rejects [--source NAME]" in status.stdout


def test_rejects_defuses_every_cell_a_spreadsheet_would_run_and_dates_each_row(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    evil_key = "-1+cmd|' /C calc'!A0"
    rows = [f'"{evil_key}",not-a-phone,Bad,Row,b@example.in,']
    drop_csv(tmp_path / "inbox", "=HYPERLINK(1).csv", export(1, extra_rows=rows))
    run_cli("run", "--once", "-c", str(config))

    listed = run_cli("rejects", "-c", str(config))

    assert listed.returncode == 0, listed.stderr
    [row] = list(csv.reader(io.StringIO(listed.stdout)))[1:]
    at, _source, _sink, origin, _line, key = row[:6]
    assert origin == "'=HYPERLINK(1).csv" and key == "'" + evil_key
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00", at), at


def test_a_file_written_in_place_is_read_only_once_it_stops_changing(
    tmp_path: Path, jodo: Simulated
) -> None:
    # A writer that ignores the .part convention: its first run saw half the file and
    # filed it in done/, and the second half was never read (500 of 1,000 leads).
    config = jodo_config(tmp_path, jodo.url)
    export_path = tmp_path / "inbox" / "w.csv"
    whole = export(1000)
    half = whole[: whole.index("\nL500,") + 1]
    export_path.write_text(half)  # the writer is still at it: modified just now

    early = run_cli("run", "--once", "-c", str(config))
    sent_early, left_in_inbox = len(jodo.sim.received()), export_path.exists()
    with export_path.open("a") as fh:
        fh.write(whole[len(half) :])
    settled(export_path)  # the writer finished a while ago
    later = run_cli("run", "--once", "-c", str(config))

    assert early.returncode == 0, early.stderr[-2000:]
    assert "not read yet" in early.stdout and "still being written?" in early.stdout
    assert sent_early == 0 and left_in_inbox
    assert later.returncode == 0, later.stderr[-2000:]
    assert len(jodo.sim.received()) == 1000
    assert (tmp_path / "inbox" / "done" / "w.csv").read_text() == whole


async def test_a_file_that_changes_while_it_is_read_stops_there_and_says_so(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    drop_csv(inbox, "w.csv", export(6))
    config = CsvDropConfig.model_validate({"name": "crm", "inbox": inbox, "chunk_rows": 2})
    source = CsvDropSource(config, required_columns={"id", "phone"})
    chunks: list[Chunk] = []
    async for chunk in source.chunks(None):
        chunks.append(chunk)
        if len(chunks) == 1:  # a writer appends after syncd claimed the file
            with (inbox / "processing" / "w.csv").open("a") as fh:
                fh.write("L6,First6,Last6,98000000")  # half a row: its number cut short
        if chunk.after_commit:
            await chunk.after_commit()

    keys = [values[0] for c in chunks for _, values in c.rows]
    assert keys == ["L0", "L1"]  # read while the file was as claimed; nothing after
    failed = [c.failed for c in chunks if c.failed]
    assert len(failed) == 1 and "the file changed while syncd read it" in failed[0]
    assert (inbox / "failed" / "w.csv").exists()
    note = (inbox / "failed" / "w.csv.error.txt").read_text()
    assert "Drop the whole file again once it is complete" in note


def test_a_file_dropped_again_after_a_failure_lists_only_its_own_refused_rows(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    inbox = tmp_path / "inbox"
    drop_csv(inbox, "leads.csv", "id,phone\x00\n")  # binary: set aside whole
    assert run_cli("run", "--once", "-c", str(config)).returncode == 1
    drop_csv(inbox, "leads.csv", export(3, extra_rows=["BAD1,A,B,not-a-number,b@x.in,"]))

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr[-2000:]
    assert delivered(jodo) == {"L0", "L1", "L2"}
    [rejects] = (inbox / "done").glob("*.rejects.csv")
    text = rejects.read_text()
    assert "BAD1" in text
    assert "binary content" not in text  # the first drop's failure is not a row of this one
    assert "binary content" in (inbox / "failed" / "leads.csv.error.txt").read_text()


def test_a_formula_hidden_behind_a_control_character_reaches_the_dialer_defused(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    rows = [
        "T1,\t=1+1,Last,9812345670,t1@example.in,",  # a tab hides it from a naive check
        "T2,\x1b@SUM(A1),Last,9812345671,t2@example.in,",  # an escape, stripped at read
        "T3,Asha,\t-1+cmd,9812345672,t3@example.in,",
        "T4,Plain,-,9812345673,t4@example.in,",  # a placeholder nothing hid: as written
    ]
    drop_csv(
        tmp_path / "inbox",
        "hidden.csv",
        "id,first,last,phone,email,callback\n" + "\n".join(rows) + "\n",
    )

    result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr[-2000:]
    by_key = {
        next(v for v in r.values() if str(v) in {"T1", "T2", "T3", "T4"}): r
        for r in jodo.sim.records("VoiceProcess")
    }
    assert len(by_key) == 4
    shown = {key: [str(v) for v in record.values()] for key, record in by_key.items()}
    assert "'=1+1" in shown["T1"] and "=1+1" not in shown["T1"]
    assert "'@SUM(A1)" in shown["T2"]
    assert "'-1+cmd" in shown["T3"] and "Asha" in shown["T3"]
    assert "-" in shown["T4"]


def test_reading_the_store_needs_no_secret_of_the_config(tmp_path: Path, jodo: Simulated) -> None:
    config = jodo_config(tmp_path, jodo.url)
    drop_csv(tmp_path / "inbox", "a.csv", export(3, extra_rows=["BAD1,A,B,x,b@x.in,"]))
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    no_secrets = {k: v for k, v in cli_env().items() if k != "TEST_JODO_APIKEY"}

    for argv in (["rejects"], ["status"], ["explain", "L1"], ["audit"]):
        result = run_cli(*argv, "-c", str(config), env=no_secrets)
        assert result.returncode == 0, (argv, result.stderr[-1000:])
        assert "TEST_JODO_APIKEY" not in result.stderr, argv


def test_an_export_named_in_capitals_is_read_and_files_that_match_nothing_are_named(
    tmp_path: Path, jodo: Simulated
) -> None:
    config = jodo_config(tmp_path, jodo.url)
    inbox = tmp_path / "inbox"
    drop_csv(inbox, "DATA.CSV", export(3))  # an Excel export on Windows
    drop_csv(inbox, "notes.txt", "call them back\n")
    drop_csv(inbox, "data2.csv.txt", export(2, start=10))

    result = run_cli("run", "--once", "-c", str(config))
    status = run_cli("status", "--json", "-c", str(config))

    assert result.returncode == 0, result.stderr[-2000:]
    assert delivered(jodo) == {"L0", "L1", "L2"}
    ignored = [e for e in result.stderr.splitlines() if "source.inbox.ignored" in e]
    assert any("notes.txt" in e for e in ignored) and any("data2.csv.txt" in e for e in ignored)
    assert all("pattern" in e for e in ignored)
    [source] = json.loads(status.stdout)["sources"]
    assert source["ignored"] == 2
