"""Bad input, generated: CSV exports, config files and vendor replies never cause a traceback.

Every CSV row is either a lead or a refused row with its reason (nothing lost);
a file that cannot be read at all is set aside with the reason; cells written
back to CSV cannot run as spreadsheet formulas; a config problem is a ConfigError;
a vendor reply is parsed or becomes a typed VendorError.
"""

from __future__ import annotations

import asyncio
import bz2
import codecs
import csv
import gzip
import io
import json
import lzma
import os
import sqlite3
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from syncd.config import Settings, apply_env_overlay, load_settings, validate_settings
from syncd.core.csvsafe import neutralise, runs_as_formula, unhidden
from syncd.core.summary import RunSummary
from syncd.errors import ConfigError, VendorError
from syncd.net.http import lenient_json, post, reply_was_cut
from syncd.net.retry import parse_retry_after
from syncd.run.pull import Puller
from syncd.state import open_store
from tests.conftest import cli_env, drop_csv, run_cli, settled
from tests.support.reliability import jodo_sink, settings_for, write_config

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
HEADER = ["id", "first", "last", "phone", "email", "callback"]
FORMULAS = ["=cmd|' /C calc'!A0", "+1+2", "-2+3", "@SUM(A1:A9)", '=HYPERLINK("x")', "\t=1", "\r=1"]
# keys a CRM may hold: each a key, or refused (core.keys), never delivered otherwise
KEYS = [*FORMULAS, "=KEYF(1)", " =1+1", "\u200b=1", "A\x07B", "C\tD", "-12", "+91 98200 12345"]

# -- CSV exports ----------------------------------------------------------------------

cells = st.one_of(
    st.sampled_from(["", "L1", "9820012345", "+91 98200 12345", "2026-11-22 10:00", "x"]),
    st.sampled_from(FORMULAS),
    st.text(max_size=12),
    st.tuples(st.sampled_from('xé€\U0001f600,"\n'), st.integers(1000, 200_000)).map(
        lambda t: t[0] * t[1]
    ),  # huge (cheap to generate)
    st.from_regex(r"98[0-9]{8}", fullmatch=True),
)
small_cells = st.one_of(st.sampled_from(FORMULAS), st.text(max_size=12))
rows = st.lists(cells, min_size=0, max_size=9)  # ragged: fewer or more cells than the header
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"])


@st.composite
def exports(draw: st.DrawFn) -> tuple[bytes, int, bool]:
    """Return (file bytes, data rows written, cut short) for a generated CRM export.

    Rows are a mix of plausible leads (a key, a valid phone, any other cells) and
    junk (any cells, any count); the header is the mapped columns in any order,
    sometimes with extra (or broken) column names.
    """
    extras = draw(st.lists(st.text(max_size=8), max_size=2)) if draw(st.booleans()) else []
    header = draw(st.permutations(HEADER)) + extras
    body: list[list[str]] = []
    for i in range(draw(st.integers(0, 15))):
        if draw(st.booleans()):
            values = {name: draw(small_cells) for name in header}
            values["id"] = draw(st.sampled_from([f"K{i}", f"K{i}", f"K{i % 3}", "", *KEYS]))
            values["phone"] = draw(st.from_regex(r"98[0-9]{8}", fullmatch=True) | small_cells)
            values["callback"] = draw(st.sampled_from(["", "", "2026-11-22 10:00", "tomorrow"]))
            body.append([values[name] for name in header])
        else:
            body.append(draw(rows))
    out = io.StringIO()
    # A bare CR inside a cell is only quoted when CR is part of the line terminator.
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    quoting = csv.QUOTE_ALL if ending == "\n" else csv.QUOTE_MINIMAL
    writer = csv.writer(out, lineterminator=ending, quoting=quoting)
    writer.writerow(header)
    written = 0
    for r in body:
        writer.writerow(r)
        written += 1 if r else 0  # an empty list is a blank line, which is no row
    text = out.getvalue()
    encoding = draw(st.sampled_from(["utf-8"] * 3 + ["utf-8-sig"]) | encodings)
    raw = text.encode(encoding, errors="replace")
    cut = draw(st.integers(0, 9)) == 0
    if cut:
        raw = raw[: draw(st.integers(0, len(raw)))]  # cut off mid-row (or mid-character)
    if draw(st.integers(0, 14)) == 0:
        raw = raw.replace(b",", b",\x00", 1)  # a NUL byte
    packing = draw(st.sampled_from([None] * 6 + list(PACKERS)))
    if packing is not None:
        raw = PACKERS[packing](raw)  # compressed on its way: read as the CSV inside
        if draw(st.integers(0, 4)) == 0:
            raw, cut = raw[: draw(st.integers(0, len(raw)))], True  # a copy cut short
    return raw, written, cut


def _zipped(raw: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.csv", raw)
    return out.getvalue()


PACKERS = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress, "zip": _zipped}


def pull(raw: bytes, work: Path) -> tuple[RunSummary, Path]:
    config = write_config(work, [jodo_sink("http://127.0.0.1:9")], chunk_rows=7)
    export = work / "inbox" / "export.csv"
    export.write_bytes(raw)
    settled(export)
    return pull_settings(settings_for(config)), work / "state" / "state.db"


def pull_settings(settings: Settings) -> RunSummary:
    """Return the summary of pulling every source of ``settings`` once (no push)."""

    async def go() -> RunSummary:
        store = await open_store(str(settings.state.path))
        summary = RunSummary("test-run")
        puller = Puller(settings, store, summary)
        try:
            await puller.pull_all()
        finally:
            puller.close()
            await store.close()
        return summary

    return asyncio.run(go())


@FAST
@given(exports())
@example(
    (codecs.BOM_UTF8 + b"id,first,last,phone,email,callback\n=cmd|x,a,b,98200123,,\n", 1, False)
)
@example((b"id,first,last,phone,email,callback\nL1,a\x00b,c,9820012345,,\n", 1, False))
@example((b'id,first,last,phone,email,callback\n"\t=K(1)",a,b,9820012345,,\n', 1, False))
@example((b"id,first,last,phone,email,callback\nL1,a,b,9820012345,,,,\nL2,a\n", 2, False))
def test_any_export_is_read_into_leads_and_refusals_or_set_aside_with_a_reason(
    export: tuple[bytes, int, bool],
) -> None:
    raw, written, cut = export
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        summary, db = pull(raw, work)
        inbox = work / "inbox"
        done, failed = inbox / "done" / "export.csv", inbox / "failed" / "export.csv"
        assert done.exists() != failed.exists(), "the file is filed away exactly once"
        assert not (inbox / "export.csv").exists()
        assert not list((inbox / "processing").iterdir())
        with sqlite3.connect(db) as conn:
            keys = [k for (k,) in conn.execute("SELECT key FROM leads")]
            reasons = [r for (r,) in conn.execute("SELECT reason FROM rejects")]
        assert all(r.strip() for r in reasons), "every refusal has a reason"
        event("set aside" if failed.exists() else "read")
        if failed.exists():
            assert (inbox / "failed" / "export.csv.error.txt").read_text().strip()
            assert summary.files_failed
            return
        counts = summary.routes["crm->jodo"]
        assert counts.balanced
        # Nothing lost: every row read is a lead or a refusal, and the rows read are the
        # rows written (an export cut short may lose its torn last row, never more).
        assert counts.read == counts.new + counts.rejected
        assert len(keys) == counts.new
        bad_keys = [k for k in keys if runs_as_formula(k) or not k.isprintable()]
        assert not bad_keys, f"a key that is no key became a lead: {bad_keys!r}"
        event("with leads" if counts.new else "no leads")
        event("with refusals" if counts.rejected else "no refusals")
        assert counts.read <= written if cut else counts.read == written
        rejects_file = inbox / "done" / "export.csv.rejects.csv"
        if counts.rejected:
            with rejects_file.open(encoding="utf-8", newline="") as fh:
                table = list(csv.reader(fh))
            assert len(table) - 1 == counts.rejected
            for row in table:
                for cell in row:
                    assert neutralise(cell) == cell, f"formula reached the rejects file: {cell!r}"


# -- hostile drops: names, links, cells, NULs, files still being written ----------------

TWISTS = ["latin1 name", "phantom rows in a cell", "NUL deep in a name", "link", "still written",
          "formula name"]  # fmt: skip
FORMULA_NAMES = ['=HYPERLINK("x")+1.csv', "+cmd|calc.csv", "-1+2.csv", "@SUM(A1).csv"]
PHANTOM = "PHANTOM"


@st.composite
def hostile_drops(draw: st.DrawFn) -> tuple[bytes, str]:
    """Return (file bytes, twist): a plain UTF-8 export given one hostile twist of issue 13."""
    twist = draw(st.sampled_from(TWISTS))
    lines = [",".join(HEADER)]
    n = draw(st.integers(1, 12))
    lines += [f"K{i},First{i},Last{i},98200{i:05d},," for i in range(n)]
    if twist == "phantom rows in a cell":
        # A quoted cell past the CSV field limit, holding lines that look like leads.
        fake = "".join(f"\n{PHANTOM}{j},F,L,98211{j:05d},," for j in range(draw(st.integers(1, 5))))
        filler = "x" * draw(st.integers(140_000, 300_000))
        at = draw(st.integers(1, len(lines)))
        lines.insert(at, f'K-big,"{filler}{fake}",Last,9820099999,,')
    if twist == "formula name":  # a refused row: its origin (the file name) is exported
        lines.append("K-bad,Fir,Last,12345,,")
    if twist == "NUL deep in a name":
        pad = [f"P{i},{'p' * 200},Last,98300{i:05d},," for i in range(50)]  # past 8 KB
        lines += [*pad, "K-nul,Fir\x00st,Last,9820088888,,"]
    return ("\n".join(lines) + "\n").encode(), twist


def drop_hostile(raw: bytes, twist: str, work: Path) -> Path:
    """Put the drop in the inbox the way the twist says; return where its bytes are."""
    inbox = work / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    if twist == "link":
        target = work / "outside.csv"
        target.write_bytes(raw)
        (inbox / "export.csv").symlink_to(target)
        return target
    name = b"Exportaci\xf3n.csv" if twist == "latin1 name" else b"export.csv"
    if twist == "formula name":
        name = FORMULA_NAMES[len(raw) % len(FORMULA_NAMES)].encode()
    path = os.fsencode(inbox) + b"/" + name
    with open(path, "wb") as fh:
        fh.write(raw)
    if twist != "still written":  # else: modified just now, as by a writer still at it
        settled(path)
    return Path(os.fsdecode(path))


@FAST
@given(hostile_drops())
def test_a_hostile_drop_never_becomes_a_phantom_lead_and_never_blocks_the_inbox(
    drop: tuple[bytes, str],
) -> None:
    raw, twist = drop
    event(twist)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # max_field_bytes at its floor: the CSV field limit is then 128 KiB
        config = write_config(
            work, [jodo_sink("http://127.0.0.1:9")], chunk_rows=7, source={"max_field_bytes": 1024}
        )
        drop_hostile(raw, twist, work)
        drop_csv(
            work / "inbox",
            "plain.csv",
            "id,first,last,phone,email,callback\nZ1,Zed,Zee,9829999999,,\n",
        )
        summary = pull_settings(settings_for(config))
        inbox = work / "inbox"
        with sqlite3.connect(work / "state" / "state.db") as conn:
            stored = dict(conn.execute("SELECT key, lead_json FROM leads").fetchall())

        assert "Z1" in stored, "a hostile drop blocked the plain file beside it"
        assert not [k for k in stored if k.startswith(PHANTOM)], (
            "a line inside a cell became a lead"
        )
        assert not [k for k, v in stored.items() if "\\u0000" in v or "\x00" in v]
        assert not list((inbox / "processing").iterdir())
        if twist == "link":
            assert (inbox / "failed" / "export.csv").is_symlink()
            assert set(stored) == {"Z1"}  # nothing read through the link
        elif twist == "still written":
            assert (inbox / "export.csv").exists() and set(stored) == {"Z1"}
            assert any("still being written" in w for w in summary.files_waiting)
        elif twist == "phantom rows in a cell":
            assert (inbox / "failed" / "export.csv").exists()  # reading stopped at that row
        elif twist == "formula name":
            [done] = [p for p in (inbox / "done").iterdir() if p.name in FORMULA_NAMES]
            assert any(k.startswith("K") for k in stored)
            with (inbox / "done" / f"{done.name}.rejects.csv").open(encoding="utf-8") as fh:
                cells = [cell for row in csv.reader(fh) for cell in row]
            assert cells and all(neutralise(c) == c for c in cells), cells
            exported = run_cli("rejects", "-c", str(config), env=cli_env())
            assert exported.returncode == 0, exported.stderr
            for row in csv.reader(io.StringIO(exported.stdout)):
                assert all(neutralise(c) == c for c in row), f"a formula was exported: {row}"
        else:
            name = "Exportación.csv" if twist == "latin1 name" else "export.csv"
            assert (inbox / "done" / name).exists()
            assert any(k.startswith("K") for k in stored)


@FAST
@given(st.sampled_from(FORMULAS), st.text(max_size=20))
def test_a_neutralised_cell_never_starts_a_formula(formula: str, tail: str) -> None:
    cell = neutralise(formula + tail)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert neutralise(cell) == cell


@pytest.mark.parametrize(
    "cell",
    ["\x01=1+1", "\x1b=6+6", " \t=2+2", "\n=3+3", "\u200b=4+4", "\ufeff=BOM()", " =5+5",
     "\xa0@SUM(1)"],
)  # fmt: skip
def test_a_formula_behind_blanks_control_or_invisible_characters_is_defused(cell: str) -> None:
    # A spreadsheet skips some of these before it reads the cell; others it shows as
    # nothing. Only the OWASP characters were checked before, at the cell's very start.
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize(
    ("raw", "cleaned"), [("\u200b=ZWSP()", "\u200b=ZWSP()"), ("\ufeff=BOM()", "\ufeff=BOM()")]
)
def test_a_formula_behind_an_invisible_character_does_not_reach_the_dialer(
    raw: str, cleaned: str
) -> None:
    assert unhidden(raw, cleaned) == "'" + cleaned


@pytest.mark.parametrize("cell", ["Asha Sharma", " plain", "\tplain", "+91 98200 12345", ""])
def test_a_cell_with_no_formula_behind_its_blanks_is_left_as_it_is(cell: str) -> None:
    expected = "'" + cell if cell.startswith("\t") else cell  # a lone tab start: as before
    assert neutralise(cell) == expected


@FAST
@given(st.from_regex(r"[+-]?[0-9][0-9 ().-]{0,15}", fullmatch=True))
def test_numbers_and_phone_numbers_are_left_as_they_are(number: str) -> None:
    assert neutralise(number) == number


# -- config files -----------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
section_names = st.sampled_from(
    ["state", "log", "run", "health", "sources", "sinks", "routes", "writebacks", "other"]
)
sink_tables = st.fixed_dictionaries(
    {"name": st.text(max_size=6), "kind": st.sampled_from(["jodo", "ameyo", "ucontact", "x"])},
    optional={
        "url": st.text(max_size=10),
        "apikey": st.sampled_from(["env:NOPE", "file:/nonexistent", "literal"]),
        "batch_size": values,
        "rate_limit_per_s": values,
        "max_in_flight": values,
        "breaker_failures": values,
        "dial_format": st.text(max_size=10),
        "auth": values,
    },
)


@FAST
@given(st.dictionaries(section_names, values, max_size=5), st.lists(sink_tables, max_size=2))
def test_any_configuration_is_either_valid_or_a_config_error(
    raw: dict[str, Any], sinks: list[dict[str, Any]]
) -> None:
    if sinks:
        raw = {**raw, "sinks": sinks}
    try:
        validate_settings(raw, environ={})
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@FAST
@given(st.dictionaries(st.text(max_size=30).map(lambda s: "SYNCD_" + s), st.text(max_size=30)))
def test_any_environment_overlay_is_either_valid_or_a_config_error(env: dict[str, str]) -> None:
    try:
        validate_settings(apply_env_overlay({}, env), environ={})
    except ConfigError:
        pass


@FAST
@given(st.binary(max_size=300))
@example(b'x = "\xff"\n')
@example(b"[[sinks]]\nname = 1\n")
def test_any_config_file_is_either_valid_or_a_config_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "syncd.toml"
        path.write_bytes(content)
        try:
            load_settings(path, environ={})
        except ConfigError as exc:
            assert str(exc)


# -- vendor replies ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
)
jodo_like = st.fixed_dictionaries(
    {},
    optional={
        "status": json_values,
        "statuscode": json_values,
        "statusdesc": json_values,
        "data": json_values,
        "method": json_values,
    },
)
reply_texts = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    jodo_like.map(json.dumps),
    st.sampled_from(["", "null", "<html><body>502</body></html>", "[" * 5000, '{"a":1,}']),
)


@FAST
@given(reply_texts)
def test_any_jodo_reply_is_parsed_or_a_vendor_error(text: str) -> None:
    from syncd.sinks.jodo.client import JodoClient, raise_for_status

    try:
        body = JodoClient._parse(None, "ImportProcessData", text)  # type: ignore[arg-type]
    except VendorError:
        return
    assert isinstance(body, dict)
    try:
        code = raise_for_status("ImportProcessData", body)
    except VendorError as exc:
        assert str(exc)
    else:
        assert code in (1, 3, 14)


@FAST
@given(reply_texts)
def test_any_ameyo_reply_is_parsed_or_a_vendor_error(text: str) -> None:
    from syncd.sinks.ameyo.client import parse_body
    from syncd.sinks.ameyo.replies import error_text, result_list

    try:
        body = parse_body("uploadContacts", text)
    except VendorError:
        return
    error_text(body)
    result_list(body)


@FAST
@given(reply_texts)
def test_any_ucontact_reply_is_parsed_or_a_vendor_error(text: str) -> None:
    from syncd.sinks.ucontact.client import read_flag, read_json, token_from

    for call in (
        lambda: read_flag(text, "Dialers/uploadbase"),
        lambda: read_json(text, "Cdr/getrecords"),
        lambda: token_from(text, legacy=False),
        lambda: token_from(text, legacy=True),
    ):
        try:
            call()
        except VendorError:
            pass


@FAST
@given(st.text(max_size=60))
def test_any_retry_after_header_is_a_bounded_delay_or_ignored(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or 0 <= seconds <= 86_400


@FAST
@given(st.text(max_size=300))
def test_lenient_json_raises_only_value_errors(text: str) -> None:
    try:
        lenient_json(text)
    except ValueError:
        pass


@FAST
@given(st.integers(0, 3 * 4096), st.integers(1, 64), st.sampled_from(["gzip", "identity"]))
def test_any_reply_is_read_up_to_its_cap_and_a_longer_one_is_said_cut(
    size: int, chunk: int, encoding: str
) -> None:
    """A reply of any size, sent in any pieces, compressed or not (a proxy's endless page,
    a hostile server): syncd keeps at most the cap and knows when it cut."""
    import httpx

    cap = 4096
    raw = (b"x" * size) if encoding == "identity" else gzip.compress(b"x" * size)

    async def pieces() -> Any:
        for i in range(0, len(raw), chunk * 64):
            yield raw[i : i + chunk * 64]

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Encoding": "gzip"} if encoding == "gzip" else {}
        return httpx.Response(200, headers=headers, content=pieces())

    async def read() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            return await post(http, "http://dialer.test/x", cap=cap, content=b"{}")

    response = asyncio.run(read())
    assert len(response.content) <= cap
    assert reply_was_cut(response) == (size > cap)
    if size <= cap:
        assert response.content == b"x" * size
