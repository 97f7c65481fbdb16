"""The minimal prototype issue 27 measures syncd against, on bench_sync's CSV exports.

Stream the CSV, hash each raw row, diff against a SQLite table of (key, hash), validate
the changed rows' phones (rphonenumbers, mobile then alternate), POST them to the Jodo
simulator in batches (``--concurrency`` at a time), commit the hashes per chunk. No
mapping config, no safety gate, no outbox, no audit, no retries: the floor of the same
work, not a rival. Run by `bench_sync.py --against-prototype` in the same sitting.

    python bench/prototype_csv.py --csv day1.csv --state proto.db --port 9443
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import sqlite3
import time
from pathlib import Path

import httpx

CHUNK = 20_000


def record(row: list[str], col: dict[str, int]) -> dict[str, str] | None:
    """Return the dialer's record of a row, None when no phone of it is valid."""
    import rphonenumbers  # type: ignore[import-untyped]

    for raw in (row[col["mobile"]], row[col["alt_mobile"]]):
        try:
            number = rphonenumbers.parse(raw, "IN")
        except rphonenumbers.NumberParseException:
            continue
        if rphonenumbers.is_valid_number(number):
            return {
                "leadnumber": row[col["lead_id"]],
                "mobilenumber": "00"
                + rphonenumbers.format_number(number, rphonenumbers.PhoneNumberFormat.E164)[1:],
                "fname": row[col["first_name"]],
                "lname": row[col["last_name"]],
                "email": row[col["email"]],
                "city": row[col["city"]],
                "product": row[col["product"]],
            }
    return None


async def post(
    client: httpx.AsyncClient, url: str, limit: asyncio.Semaphore, batch: list[dict[str, str]]
) -> None:
    """POST one batch of records to the Jodo simulator (``limit`` bounds those in flight)."""
    body = {
        "method": "ImportProcessData",
        "apikey": "test_org",
        "servicekey": "VoiceProcess",
        "reqdatetime": time.strftime("%Y-%m-%d %H:%M:%S"),
        "media": 12,
        "updateparam": "crmuniquefield",
        "data": batch,
    }
    async with limit:
        reply = await client.post(url, data={"data": json.dumps(body)})
    reply.raise_for_status()


async def run(args: argparse.Namespace) -> dict[str, int]:
    state = sqlite3.connect(args.state)
    state.execute("CREATE TABLE IF NOT EXISTS leads (key TEXT PRIMARY KEY, hash BLOB)")
    url = f"http://127.0.0.1:{args.port}/CustomerWebServices/handleCustomerWS"
    limit = asyncio.Semaphore(args.concurrency)
    read = pushed = refused = 0

    with Path(args.csv).open(encoding="utf-8", newline="") as fh:  # noqa: ASYNC230 (a floor)
        reader = csv.reader(fh)
        header = next(reader)
        col = {name: i for i, name in enumerate(header)}
        key = col["lead_id"]
        async with httpx.AsyncClient(timeout=60) as client:
            while chunk := [r for _, r in zip(range(CHUNK), reader, strict=False)]:
                hashes = {
                    r[key]: hashlib.blake2b("\x1f".join(r).encode(), digest_size=16).digest()
                    for r in chunk
                }
                keys = list(hashes)
                marks = ",".join("?" * len(keys))
                stored = dict(
                    state.execute(f"SELECT key, hash FROM leads WHERE key IN ({marks})", keys)
                )
                changed = [r for r in chunk if stored.get(r[key]) != hashes[r[key]]]
                records = [rec for r in changed if (rec := record(r, col)) is not None]
                refused += len(changed) - len(records)
                batches = [
                    records[i : i + args.batch_size]
                    for i in range(0, len(records), args.batch_size)
                ]
                await asyncio.gather(*(post(client, url, limit, b) for b in batches))
                with state:
                    state.executemany(
                        "INSERT INTO leads VALUES (?, ?)"
                        " ON CONFLICT (key) DO UPDATE SET hash = excluded.hash",
                        [(r[key], hashes[r[key]]) for r in changed],
                    )
                read += len(chunk)
                pushed += len(records)
    state.close()
    return {"rows": read, "pushed": pushed, "refused": refused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps({"event": "prototype.finished", **asyncio.run(run(args))}), flush=True)


if __name__ == "__main__":
    main()
