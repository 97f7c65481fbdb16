"""What a stop leaves behind: writeback files the CRM can read, polls that end at a safe point."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from syncd.simulators.jodo.api import DialPlan, JodoSimulator, create_app
from syncd.simulators.server import running
from tests.conftest import daemon_config, drop_csv
from tests.test_daemon import leads_csv, wait_until


def rows_in(paths: list[Path]) -> list[dict[str, str]]:
    return [row for p in paths for row in csv.DictReader(io.StringIO(p.read_text("utf-8")))]


def test_sigterm_publishes_the_csv_writeback_file_being_written(
    tmp_path: Path, start_daemon: Any
) -> None:
    # rotate_s is an hour: without the stop, the rows would sit in the .part file that
    # the CRM never reads until an hour after the next start.
    sim = JodoSimulator(dial=DialPlan(interval_s=0, recording_delay_s=None), agents={"ann": 1})
    outbox = tmp_path / "crm-outcomes"
    with running(create_app(sim)) as url:
        config = daemon_config(tmp_path, url)
        text = config.read_text(encoding="utf-8").replace(
            'kind = "jodo"\n', 'kind = "jodo"\npoll = { interval_s = 0.5 }\n', 1
        )
        text += (
            '\n[[writebacks]]\nname = "crm-files"\nkind = "csv"\n'
            f'outbox = "{outbox}"\nrotate_s = 3600\nschedule = {{ interval_s = 0.5 }}\n'
        )
        config.write_text(text, encoding="utf-8")
        daemon = start_daemon(config)
        daemon.wait_for("daemon.ready")
        drop_csv(tmp_path / "inbox", "leads.csv", leads_csv(0, 6))
        wanted = {f"L{i:05d}" for i in range(6)}

        def in_part_file() -> set[str]:
            return {row["key"] for row in rows_in(list(outbox.glob("*.csv.part")))}

        wait_until(lambda: in_part_file() == wanted, timeout=30, message=lambda: daemon.events)
        assert not list(outbox.glob("*.csv")), "rotate_s = 3600 published a file early"

        assert daemon.stop() == 0

    published = rows_in(sorted(outbox.glob("*.csv")))
    assert sorted(row["key"] for row in published) == sorted(wanted)
    assert not list(outbox.glob("*.part"))
    assert [e for e in daemon.events if e.get("event") == "writeback.csv.published"]
    assert not [e for e in daemon.events if e.get("event") == "writeback.unpublished"]
