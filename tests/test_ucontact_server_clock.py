"""Whether server_timezone is the uContact server's clock: read off queuesummary's date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.errors import VendorError
from syncd.sinks.ucontact.server_clock import date_received, offset_text, zone_mismatch
from tests.support.ucontact import served, sink_on

NOW = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)  # northern summer: New York is UTC-04:00


def test_the_documents_answer_gives_its_date_as_the_servers_local_time() -> None:
    body = [
        {"queue": "Power<-", "loggedIn": 10, "dateReceived": "Nov 2, 2018 11:31:42 AM"},
        {"internalActionId": "1982468278_6312", "dateReceived": "Nov 2, 2018 11:31:42 AM"},
    ]
    assert date_received(body) == datetime(2018, 11, 2, 11, 31, 42)
    assert date_received({"dateReceived": "Nov 12, 2018 01:05:00 PM"}) == datetime(
        2018, 11, 12, 13, 5
    )


@pytest.mark.parametrize("body", [[], {}, [{"queue": "x"}], [{"dateReceived": "2018-11-02"}], "x"])
def test_an_answer_without_a_readable_date_gives_none(body: object) -> None:
    assert date_received(body) is None


@pytest.mark.parametrize(
    ("local", "zone", "wrong"),
    [
        # the server's clock, a few minutes apart from ours: the same zone
        (datetime(2026, 7, 1, 12, 3), "UTC", None),
        (datetime(2026, 7, 1, 17, 30), "Asia/Kolkata", None),
        (datetime(2026, 7, 1, 8, 0), "America/New_York", None),  # daylight saving time
        (datetime(2026, 7, 1, 17, 45), "Asia/Kathmandu", None),
        (datetime(2026, 7, 1, 11, 55), "UTC", None),  # NTP-kept clocks: seconds apart
        # another zone
        (datetime(2026, 7, 1, 17, 30), "UTC", "reads UTC+05:30 but server_timezone = 'UTC'"),
        (datetime(2026, 7, 1, 12, 0), "Asia/Kolkata", "5 h 30 min off"),
        (datetime(2026, 7, 1, 7, 0), "America/New_York", "UTC-05:00 but"),  # standard time
        (datetime(2026, 7, 1, 12, 0), "America/Montevideo", "is UTC-03:00 now"),
        # zones a quarter of an hour apart: 15 minutes off
        (datetime(2026, 7, 1, 17, 45), "Asia/Kolkata", "reads UTC+05:45 but"),
        (datetime(2026, 7, 1, 17, 30), "Asia/Kathmandu", "would be 15 min off"),
        (datetime(2026, 7, 1, 17, 30), "Etc/GMT-5", "would be 30 min off"),
        # the right zone, a clock ten minutes wrong
        (datetime(2026, 7, 1, 12, 10), "UTC", "10 min ahead of this host's"),
        (datetime(2026, 7, 1, 17, 20), "Asia/Kolkata", "10 min behind this host's"),
    ],
)
def test_a_zone_is_wrong_only_when_the_server_reads_another_offset(
    local: datetime, zone: str, wrong: str | None
) -> None:
    said = zone_mismatch(local, NOW, zone)
    if wrong is None:
        assert said is None
    else:
        assert said is not None and wrong in said, said
        assert "set server_timezone" in said or "fix the server's clock" in said


def test_offsets_read_as_utc_plus_or_minus_hours_and_minutes() -> None:
    assert offset_text(timedelta(hours=5, minutes=30)) == "UTC+05:30"
    assert offset_text(timedelta(hours=-3)) == "UTC-03:00"
    assert offset_text(timedelta()) == "UTC+00:00"


async def test_a_running_sink_that_finds_the_servers_zone_changed_holds_pushes_and_polls(
    tmp_path: Path,
) -> None:
    """Found by a queuesummary after the sink opened: pushes wait (paused) and the call
    records are not read in the wrong zone (their dates would be hours off); both go
    again once the clocks agree."""
    with served(timezone="Asia/Kolkata") as (_sim, url):
        async with sink_on(url, tmp_path, open_it=False, server_timezone="UTC") as sink:
            await sink.client.open_session()
            await sink.read_queue()  # what the keep-alive does every queue_poll_s
            paused = sink.paused()
            with pytest.raises(VendorError, match="call records not read") as polled:
                await sink.poll_outcomes()
            # the clocks agree again (as after the server's own clock was put right)
            sink.cfg = sink.cfg.model_copy(update={"server_timezone": "Asia/Kolkata"})
            await sink.read_queue()
            resumed = sink.paused()
            await sink.poll_outcomes()

    assert paused is not None and "UTC+05:30" in paused
    assert "server_timezone" in str(polled.value)
    assert resumed is None
