"""Replies read as a careful client reads them (issue 24, part 3).

Each test puts tests/support/reply_rewriter.py between syncd and a real simulator:
the dialer acts as the simulator does, its reply reaches syncd the way a real
server's would (a BOM, a charset, a per-record failure list, a body cut short).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Simulated, cli_env, drop_csv, jodo_config, run_cli
from tests.support.logs import events
from tests.support.reply_rewriter import (
    add_field,
    bom,
    content_type,
    garbage,
    jodo_refuse,
    rewriting,
)

HEADER = "id,first,last,phone,email,callback\n"


def export(n: int) -> str:
    rows = [f"L{i},First{i},Last{i},98200{i:05d},l{i}@x.in," for i in range(n)]
    return HEADER + "".join(r + "\n" for r in rows)


def finished(stderr: str) -> dict[str, object]:
    (line,) = events(stderr, "run.finished")
    return line


def test_a_reply_with_a_byte_order_mark_is_read_and_each_batch_is_sent_once(
    jodo: Simulated, tmp_path: Path
) -> None:
    with rewriting(jodo.url) as rewriter:
        rewriter.after(bom())
        config = jodo_config(tmp_path, rewriter.url, batch_size=50)
        drop_csv(tmp_path / "inbox", "a.csv", export(200))

        result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr
    assert finished(result.stderr)["delivered"] == 200
    assert len(jodo.sim.records()) == 200
    assert (
        rewriter.jodo_calls("ImportProcessData") == 4
    )  # one ImportProcessData per batch: nothing sent again
    assert not events(result.stderr, "http.retry")


def test_json_labelled_as_text_in_another_charset_is_read(jodo: Simulated, tmp_path: Path) -> None:
    with rewriting(jodo.url) as rewriter:
        rewriter.after(add_field("statusdesc", "succès")).after(
            content_type("text/html; charset=ISO-8859-1", encoding="latin-1")
        )
        config = jodo_config(tmp_path, rewriter.url)
        drop_csv(tmp_path / "inbox", "a.csv", export(10))

        result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr
    assert len(jodo.sim.records()) == 10
    assert rewriter.jodo_calls("ImportProcessData") == 1
    explained = run_cli("explain", "L3", "-c", str(config))
    assert "succès" in explained.stdout, explained.stdout


def test_records_a_success_reply_lists_as_failed_are_refused_with_the_dialers_reason(
    jodo: Simulated, tmp_path: Path
) -> None:
    refused = {f"L{i}" for i in (3, 17, 42, 43, 99)}
    before, after = jodo_refuse(refused)
    with rewriting(jodo.url) as rewriter:
        rewriter.before(before).after(after)
        config = jodo_config(tmp_path, rewriter.url, batch_size=50)
        drop_csv(tmp_path / "inbox", "a.csv", export(100))

        result = run_cli("run", "--once", "-c", str(config))

    # README: exit 0 = every lead delivered or refused with a reason.
    assert result.returncode == 0, result.stderr
    totals = finished(result.stderr)
    assert totals["delivered"] == 95 and totals["refused"] == 5, totals
    held = {r["leadnumber"] for r in jodo.sim.records()}
    assert held == {f"L{i}" for i in range(100)} - refused
    assert rewriter.jodo_calls("ImportProcessData") == 2  # no batch sent again

    status = json.loads(run_cli("status", "--json", "-c", str(config)).stdout)
    assert status["counts"]["jodo"]["rejected"] == 5
    assert status["counts"]["jodo"]["delivered"] == 95
    explained = run_cli("explain", "L42", "-c", str(config)).stdout
    assert "Jodo refused the record: Invalid mobile number" in explained, explained
    # The dialer echoed the number in its reason: neither the log nor the reason keep it.
    (line,) = [x for x in explained.splitlines() if "push.rejected" in x]
    assert "9820000042" not in line
    assert "9820000042" not in result.stderr


def test_failed_records_named_only_by_a_count_are_found_by_splitting_the_batch(
    jodo: Simulated, tmp_path: Path
) -> None:
    """A list syncd cannot match is never read as "all delivered"."""
    refused = {"L5"}
    before, after = jodo_refuse(refused, name_by="rowid")  # names a field syncd never sent
    with rewriting(jodo.url) as rewriter:
        rewriter.before(before).after(after)
        config = jodo_config(tmp_path, rewriter.url, batch_size=8)
        drop_csv(tmp_path / "inbox", "a.csv", export(8))

        result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr
    totals = finished(result.stderr)
    assert totals["delivered"] == 7 and totals["refused"] == 1, totals
    assert {r["leadnumber"] for r in jodo.sim.records()} == {f"L{i}" for i in range(8)} - refused
    assert events(result.stderr, "jodo.push.failures_unplaced")
    explained = run_cli("explain", "L5", "-c", str(config)).stdout
    assert "Jodo refused the record: Invalid mobile number" in explained


def test_a_reply_field_syncd_does_not_know_is_logged_once_per_sink_and_field(
    jodo: Simulated, tmp_path: Path
) -> None:
    with rewriting(jodo.url) as rewriter:
        rewriter.after(add_field("warnings", ["queue almost full"]))
        config = jodo_config(tmp_path, rewriter.url, batch_size=10)
        drop_csv(tmp_path / "inbox", "a.csv", export(50))

        result = run_cli("run", "--once", "-c", str(config))

    assert result.returncode == 0, result.stderr
    assert rewriter.jodo_calls("ImportProcessData") == 5
    (noted,) = events(result.stderr, "sink.reply.unknown_field")
    assert noted["field"] == "warnings" and noted["sink"] == "jodo"


def test_a_reply_that_cannot_be_read_is_sent_once_more_then_waits_in_doubt_with_attempts_counted(
    jodo: Simulated, tmp_path: Path
) -> None:
    with rewriting(jodo.url) as rewriter:
        rewriter.after(garbage())
        config = jodo_config(tmp_path, rewriter.url, batch_size=10, max_attempts=3)
        drop_csv(tmp_path / "inbox", "a.csv", export(10))

        result = run_cli("run", "--once", "--deadline", "60", "-c", str(config))

    assert result.returncode == 1, result.stderr
    # Each attempt: the request and one resend; three attempts, then the leads fail.
    assert rewriter.jodo_calls("ImportProcessData") == 3 * 2
    assert finished(result.stderr)["failed"] == 10
    status = json.loads(run_cli("status", "--json", "-c", str(config)).stdout)
    assert status["counts"]["jodo"]["failed"] == 10
    explained = run_cli("explain", "L1", "-c", str(config)).stdout
    assert "in doubt" in explained and "gave up after 3 attempts" in explained, explained
    # The dialer did store them (only its answer was unreadable): nothing was doubled.
    assert len(jodo.sim.records()) == 10


def test_a_reply_cut_short_once_is_sent_once_more_and_delivered(
    jodo: Simulated, tmp_path: Path
) -> None:
    with rewriting(jodo.url) as rewriter:
        rewriter.after(garbage(times=1, method="ImportProcessData"))
        config = jodo_config(tmp_path, rewriter.url, batch_size=10)
        drop_csv(tmp_path / "inbox", "a.csv", export(10))

        result = run_cli("run", "--once", "-c", str(config), env=cli_env())

    assert result.returncode == 0, result.stderr
    assert rewriter.jodo_calls("ImportProcessData") == 2
    assert finished(result.stderr)["delivered"] == 10
    assert len(jodo.sim.records()) == 10
