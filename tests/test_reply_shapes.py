"""The pure parts of reply reading, table-tested: failure lists, body text, NO_PROXY."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from syncd.net.http import UnreadableReply, body_text, bypassed, read_json
from syncd.sinks.jodo.failures import match_failures, private_free

SENT = [
    ("L1", {"leadnumber": "L1", "mobilenumber": "00919820000001", "name": "Asha Rao"}),
    ("L2", {"leadnumber": "L2", "mobilenumber": "00919820000002", "name": "Ravi Iyer"}),
    ("L3", {"leadnumber": "L3", "mobilenumber": "00919820000002", "name": "Meera Iyer"}),
]
IDS = ["leadnumber", "leadnumber", "customercode", "mobilenumber"]


@pytest.mark.parametrize(
    ("body", "refused", "unplaced"),
    [
        ({"statuscode": "001"}, {}, 0),
        ({"statuscode": "001", "faileddata": []}, {}, 0),
        (
            {"statuscode": "001", "faileddata": [{"leadnumber": "L1", "reason": "bad number"}]},
            {"L1": "bad number"},
            0,
        ),
        (
            {"statuscode": "001", "failedData": [{"LeadNumber": "L1", "Message": "too long"}]},
            {"L1": "too long"},
            0,
        ),
        (
            {"statuscode": "001", "errors": ["L1"]},
            {"L1": "listed as failed by the dialer, no reason given"},
            0,
        ),
        ({"statuscode": "001", "failed": {"00919820000001": "DND"}}, {"L1": "DND"}, 0),
        (
            {"statuscode": "001", "failed": [{"mobilenumber": "00919820000001", "error": "x"}]},
            {"L1": "x"},
            0,
        ),
        # one number held by two leads names neither for sure
        ({"statuscode": "001", "faileddata": [{"mobilenumber": "00919820000002"}]}, {}, 1),
        ({"statuscode": "001", "faileddata": [{"row": 7, "reason": "x"}]}, {}, 1),
        ({"statuscode": "001", "failedcount": 2}, {}, 2),
        ({"statuscode": "001", "failed": 0}, {}, 0),
        ({"statuscode": "001", "successcount": "1"}, {}, 2),
        ({"statuscode": "001", "successcount": 3}, {}, 0),
    ],
)
def test_a_failure_list_refuses_exactly_the_records_it_names(
    body: dict[str, Any], refused: dict[str, str], unplaced: int
) -> None:
    found = match_failures(body, SENT, IDS)
    assert {k: v.split(": ", 1)[1] for k, v in found.refused.items()} == refused
    assert found.unplaced == unplaced


def test_a_dialers_reason_loses_the_personal_data_it_echoes() -> None:
    said = private_free(
        "Invalid mobile 00919820000001 for 'Asha Rao' <asha@x.in>", SENT[0][1].values()
    )
    assert "9820000001" not in said and "Asha" not in said and "asha@x.in" not in said
    assert said.startswith("Invalid mobile")


def reply(body: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": content_type})


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'\xef\xbb\xbf{"a": "\xc3\xa9"}', "application/json"),
        (b'\xef\xbb\xbf{"a": "\xc3\xa9"}', "application/json; charset=iso-8859-1"),  # BOM wins
        ('{"a": "é"}'.encode("latin-1"), "text/plain; charset=ISO-8859-1"),
        ('{"a": "é"}'.encode("utf-16"), "text/html"),
        (b'{"a": "\xc3\xa9"}', "text/html; charset=no-such-charset"),
    ],
)
def test_json_is_read_whatever_the_label_bom_or_charset(raw: bytes, content_type: str) -> None:
    response = reply(raw, content_type)
    assert read_json(response, "jodo", "ImportProcessData") == {"a": "é"}
    assert not body_text(response).startswith("\ufeff")


@pytest.mark.parametrize("raw", [b"", b"null", b"<html><body>502</body></html>", b'{"a": 1'])
def test_a_body_that_is_not_json_is_unreadable_and_not_quoted(raw: bytes) -> None:
    with pytest.raises(UnreadableReply) as unreadable:
        read_json(reply(raw), "jodo", "ImportProcessData")
    assert '"a"' not in str(unreadable.value)


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "direct"),
    [
        ("127.0.0.1", 80, "127.0.0.1", True),
        ("dialer.corp.example", 443, ".corp.example", True),
        ("dialer.corp.example", 443, "corp.example", True),
        ("dialer.example", 443, "corp.example", False),
        ("dialer.example", 443, "*", True),
        ("dialer.example", 8443, "dialer.example:8443", True),
        ("dialer.example", 443, "dialer.example:8443", False),
        ("dialer.example", 443, "", False),
    ],
)
def test_no_proxy_lists_hosts_domains_and_ports(
    host: str, port: int, no_proxy: str, direct: bool
) -> None:
    assert bypassed(host, port, no_proxy) is direct


def test_proxy_variables_without_a_scheme_are_http_and_socks_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from syncd.net.http import environment_proxies

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    monkeypatch.setenv("ALL_PROXY", "socks5://proxy.corp:1080")
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert environment_proxies() == {"https": "http://proxy.corp:3128", "no": "localhost"}
