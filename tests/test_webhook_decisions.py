"""The webhook source's pure decisions: who may post, replays, what a body holds, what
the sender is told. No I/O: tables of cases."""

from __future__ import annotations

import json
from typing import Any

import pytest

from syncd.config import load_settings
from syncd.core.model import Reject
from syncd.core.signing import sign
from syncd.sources.webhook import (
    Answer,
    Batch,
    BodyRefused,
    Refusal,
    Replays,
    WebhookSourceConfig,
    answer,
    batch_keys,
    next_group,
    parse_leads,
    public_reason,
    refusal,
    to_chunk,
)

NOW = 1_800_000_000.0
SECRET = "whsec-0123456789"


def hmac_config(**extra: Any) -> WebhookSourceConfig:
    return WebhookSourceConfig(name="form", secret=SECRET, **extra)


def signed(body: bytes, stamp: float = NOW) -> dict[str, str]:
    when = str(int(stamp))
    return {"X-Syncd-Timestamp": when, "X-Syncd-Signature": sign(SECRET.encode(), when, body)}


BODY = b'{"id": "1", "phone": "9845012345"}'


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (signed(BODY), None),
        (signed(BODY, NOW - 299), None),
        (signed(BODY, NOW + 299), None),  # a sender's clock a little ahead
        ({}, "unsigned"),
        ({"X-Syncd-Timestamp": str(int(NOW))}, "unsigned"),
        (signed(BODY, NOW - 301), "timestamp outside the tolerance of 300 s"),
        (signed(BODY, NOW + 301), "timestamp outside the tolerance of 300 s"),
        (
            {**signed(BODY), "X-Syncd-Timestamp": "1.8e9"},
            "timestamp outside the tolerance of 300 s",
        ),
        ({**signed(BODY), "X-Syncd-Signature": "sha256=00"}, "bad signature"),
        ({**signed(BODY), "X-Syncd-Signature": signed(BODY)["X-Syncd-Signature"].upper()}, None),
        (signed(BODY + b" "), "bad signature"),  # the signature covers the body's bytes
    ],
)
def test_a_signed_request_passes_only_fresh_and_with_this_bodys_signature(
    headers: dict[str, str], why: str | None
) -> None:
    assert refusal(hmac_config(), headers, BODY, NOW) == why


@pytest.mark.parametrize(
    ("authorization", "why"),
    [
        ("Bearer tok-123", None),
        ("Bearer  tok-123 ", None),
        ("bearer tok-123", None),  # an HTTP auth scheme is case-insensitive
        ("Bearer tok-124", "wrong bearer token"),
        ("Bearer tök", "wrong bearer token"),
        ("Basic dG9rLTEyMw==", "no bearer token"),
        ("", "no bearer token"),
    ],
)
def test_a_bearer_token_is_compared_whole(authorization: str, why: str | None) -> None:
    config = WebhookSourceConfig(name="form", token="tok-123")
    headers = {"authorization": authorization} if authorization else {}
    assert refusal(config, headers, BODY, NOW) == why


@pytest.mark.parametrize(
    "settings",
    [{}, {"secret": "a", "token": "b"}, {"secret": ""}, {"token": ""}],
)
def test_a_source_takes_exactly_one_way_in(settings: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"exactly one|must not be empty"):
        WebhookSourceConfig(name="form", **settings)


@pytest.mark.parametrize("listen", ["127.0.0.1:70000", "localhost", "http://x:80", "1.2.3.4:"])
def test_a_listen_address_is_host_and_port(listen: str) -> None:
    with pytest.raises(ValueError, match="listen"):
        WebhookSourceConfig(name="form", secret="s", listen=listen)


@pytest.mark.parametrize("listen", ["127.0.0.1:8090", ":8090", "[::1]:8090", "leads.local:0"])
def test_a_listen_address_may_be_any_interface_ipv6_or_a_name(listen: str) -> None:
    assert WebhookSourceConfig(name="form", secret="s", listen=listen).listen == listen


def test_a_secret_comes_from_the_environment_and_its_source_is_not_pulled(tmp_path: Any) -> None:
    path = tmp_path / "syncd.toml"
    path.write_text(
        '[[sources]]\nname = "form"\nkind = "webhook"\nsecret = "env:FORM_SECRET"\n',
        encoding="utf-8",
    )
    settings = load_settings(path, {"FORM_SECRET": "s3cr3t"})
    source = settings.sources[0]
    assert isinstance(source, WebhookSourceConfig)
    assert source.secret is not None and source.secret.get_secret_value() == "s3cr3t"
    assert source.scheduled is False
    assert "s3cr3t" not in repr(source)


def test_a_replay_gets_the_first_answer_and_one_in_flight_is_told_to_wait() -> None:
    replays = Replays(tolerance_s=300)
    assert replays.begin("sig-a", NOW) is None
    seen = replays.begin("sig-a", NOW + 1)
    assert seen is not None and seen.answer is None  # still being committed: 409
    replays.finish("sig-a", Answer(202, {"accepted": [0]}))
    seen = replays.begin("sig-a", NOW + 2)
    assert seen is not None and seen.answer == Answer(202, {"accepted": [0]})


def test_a_signature_is_forgotten_once_it_could_no_longer_pass_and_after_a_429() -> None:
    replays = Replays(tolerance_s=300)
    replays.begin("old", NOW)
    replays.begin("refused", NOW + 500)
    replays.forget("refused")  # nothing was committed: the sender's retry is no replay
    assert replays.begin("refused", NOW + 501) is None
    assert replays.begin("old", NOW + 601) is None  # past 2 x tolerance: a new request


def test_one_object_is_one_lead_and_values_become_cells() -> None:
    body = json.dumps(
        {"id": 7, "phone": 9845012345, "vip": True, "note": None, "alt": ["1", 2], "x": 1.5}
    )
    batch = parse_leads(body.encode(), max_rows=10)
    assert batch.count == 1
    assert batch.rows == [
        (
            0,
            {
                "id": "7",
                "phone": "9845012345",
                "vip": "true",
                "note": "",
                "alt": "1; 2",
                "x": "1.5",
            },
        )
    ]


def test_numbers_are_kept_as_the_sender_wrote_them() -> None:
    body = b'[{"id": 1.10, "phone": "9845012345", "campaign": 1e2, "big": 1e308}]'
    [(_, values)] = parse_leads(body, max_rows=10).rows
    assert (values["id"], values["campaign"], values["big"]) == ("1.10", "1e2", "1e308")


def test_rows_that_are_not_flat_objects_are_refused_by_row_and_field() -> None:
    body = json.dumps([{"id": "1"}, {"id": "2", "who": {"a": 1}}, [1], {"alt": [[1]]}])
    batch = parse_leads(body.encode(), max_rows=10)
    assert [i for i, _ in batch.rows] == [0]
    assert [(r.row, r.field) for r in batch.refusals] == [(1, "who"), (2, None), (3, "alt")]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b'"a lead"', 400),
        (b"[]", 400),
        (json.dumps([{"id": str(i)} for i in range(11)]).encode(), 413),
        (b"[" * 100_000 + b"]" * 100_000, 400),  # nested past what a parser recurses
        (b'{"id": "1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
        (b'{"id": "1", "first": NaN}', 400),  # not JSON, though Python's parser takes it
    ],
)
def test_a_body_without_leads_is_refused_whole(body: bytes, status: int) -> None:
    with pytest.raises(BodyRefused) as caught:
        parse_leads(body, max_rows=10)
    assert caught.value.status == status


def test_the_chunk_holds_every_field_the_routes_read_and_numbers_rows_from_1() -> None:
    batch = Batch(3, rows=[(0, {"phone": "1", "id": "a"}), (2, {"id": "b", "x": "y"})])
    batch.refusals.append(Refusal(1, "who", "must be text"))
    chunk = to_chunk(batch, "form", "post-1", {"id", "phone", "first"})
    assert chunk.header == ("first", "id", "phone", "x")
    assert chunk.rows == [(1, ["", "a", "1", ""]), (3, ["", "b", "", "y"])]
    assert [(r.line, r.reason) for r in chunk.rejects] == [(2, "who: must be text")]


@pytest.mark.parametrize(
    ("reason", "field", "said"),
    [
        (
            "invalid phone '12ab': not a number in column 'phone'",
            "phone",
            "invalid phone …: not a number in field phone",
        ),
        ("missing key (column 'id' is empty)", "id", "missing key (field id is empty)"),
        (
            "key longer than 128 characters in column 'id'",
            "id",
            "key longer than 128 characters in field id",  # a limit, not a value sent
        ),
        (
            "duplicate key 'L-77': superseded by line 3 (last wins)",
            None,
            "duplicate key …: superseded by row 2 (last wins)",
        ),
        (
            "blocked (dnc_list:national): +919845012345 is on the do-not-call list",
            None,
            "blocked (dnc_list:national): … is on the do-not-call list",
        ),
        (
            "blocked (placeholder_number): +91 98450 12345 is a placeholder",
            None,
            "blocked (placeholder_number): … is a placeholder",
        ),
    ],
)
def test_the_sender_is_told_the_field_and_the_reason_without_any_value(
    reason: str, field: str | None, said: str
) -> None:
    assert public_reason(reason) == (field, said)


def test_a_batch_with_refused_rows_is_a_400_that_still_lists_the_rows_committed() -> None:
    batch = Batch(4, rows=[(0, {}), (1, {}), (3, {})], refusals=[Refusal(2, None, "not an object")])
    rejects = [
        ("jodo", Reject("form", "invalid phone '1' in column 'phone'", 2, "post-1")),
        ("", Reject("form", "not an object", 3, "post-1")),  # the source's: listed once
        ("jodo", Reject("dnc", "a list's withdrawal", None, "list")),
    ]
    said = answer(batch, rejects, "form")
    assert said.status == 400
    assert said.document == {
        "accepted": [0, 3],
        "refused": [
            {
                "row": 1,
                "field": "phone",
                "reason": "invalid phone … in field phone",
                "sink": "jodo",
            },
            {"row": 2, "field": None, "reason": "not an object"},
        ],
        "replayed": False,
    }
    assert answer(Batch(1, rows=[(0, {})]), [], "form").status == 202


# -- which POSTs commit together -----------------------------------------------------------


def test_a_batchs_keys_are_read_as_mapping_reads_them() -> None:
    batch = parse_leads(
        json.dumps([{"id": " A1 ", "crm": "X"}, {"id": "A\u00002"}, {"id": ""}, {}]).encode(), 10
    )
    assert batch_keys(batch, {"id"}) == {"A1", "A2"}
    assert batch_keys(batch, {"id", "crm"}) == {"A1", "A2", "X"}


def keys(text: str) -> frozenset[str]:
    return frozenset(text.split())


GROUPS = [
    # (POSTs waiting: their keys, rows; max rows) -> the POSTs the next commit takes
    ([("a", 1), ("b", 1), ("c", 1)], 10, [0, 1, 2]),
    ([("a", 1), ("a", 1), ("b", 1)], 10, [0, 2]),  # a key twice: the later waits its turn
    ([("a b", 2), ("c", 1), ("b d", 2), ("d", 1)], 10, [0, 1]),  # d waits behind b d
    ([("a", 6), ("b", 6), ("c", 1)], 10, [0]),  # full: the rest keep their order
    ([("a", 20), ("b", 1)], 10, [0]),  # the first goes, however large
    ([("", 1), ("", 1)], 10, [0, 1]),  # no keys (every row refused): nothing to clash
    ([], 10, []),
]


@pytest.mark.parametrize(("waiting", "max_rows", "taken"), GROUPS)
def test_concurrent_posts_commit_together_unless_they_share_a_key(
    waiting: list[tuple[str, int]], max_rows: int, taken: list[int]
) -> None:
    assert next_group([(keys(k), n) for k, n in waiting], max_rows) == taken
