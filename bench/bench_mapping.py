"""Benchmark: CPU per row of the pull's mapping, as its worker processes run it.

Maps N rows of ``gen_leads`` through the real ``normalize_rows`` (``Mapper.map_row``,
the gate's screens, the lead's JSON and hash) in one process, in chunks as the pull
hands them to a worker, and prints the process's CPU µs per row (``time.process_time``:
other load on the machine barely moves it) with a digest of every output row, so a
change that must not alter results can show that it did not.

    python bench/bench_mapping.py --rows 100000 [--gate] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_leads import HEADER, row

from syncd.config import RouteConfig
from syncd.core import phones
from syncd.core.mapping import NormalizedRow, normalize_rows

CHUNK = 5000  # rows a worker maps per call (about the pull's chunk over two workers)
NOW = 1_796_000_000.0  # the run's clock (consent ages against it): fixed, for the digest

# The route of bench/bench_sync.py (and its --gate policy, without the do-not-call list,
# which the pull checks outside the workers).
MAP = {
    "key": "lead_id",
    "phone": "mobile",
    "alt_phones": ["alt_mobile"],
    "first_name": "first_name",
    "last_name": "last_name",
    "email": "email",
    "call_at": "callback_at",
    "fields": {"city": "city", "product": "product"},
}
POLICY = {
    "windows": {"all": "00:00-24:00"},
    "dnc_column": "product",
    "dnc_values": ["never-a-product"],
    "consent_column": "callback_at",
}


def route_json(gate: bool, block_types: bool = False) -> str:
    data: dict[str, object] = {"source": "crm", "sink": "jodo", "default_region": "IN"}
    data["map"] = MAP
    if gate:
        data["policy"] = POLICY | ({"block_number_types": ["premium_rate"]} if block_types else {})
    return RouteConfig.model_validate(data).model_dump_json()


def rows(n: int, seed: int) -> list[tuple[int, list[str]]]:
    rng = random.Random(seed)
    return [(i + 2, row(rng, i)) for i in range(n)]


def map_all(route: str, data: Sequence[tuple[int, list[str]]]) -> list[NormalizedRow]:
    out: list[NormalizedRow] = []
    for i in range(0, len(data), CHUNK):
        out += normalize_rows(route, tuple(HEADER), data[i : i + CHUNK], NOW)
    return out


def digest(out: list[NormalizedRow]) -> str:
    h = hashlib.blake2b(digest_size=12)
    for r in out:
        h.update(repr(r).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gate", action="store_true", help="with the safety gate's screens")
    parser.add_argument(
        "--block-types", action="store_true", help="with --gate: numbers' types screened too"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs; the fastest is reported")
    parser.add_argument("--backend", default="auto", choices=phones.BACKENDS)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    args = parser.parse_args()
    choice = phones.use_backend(args.backend, ["IN"])
    route = route_json(args.gate, args.block_types)
    data = rows(args.rows, args.seed)
    map_all(route, data[:CHUNK])  # the mapper is built and the caches warm, as in a worker
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(map_all, route, data)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    timings = []
    for _ in range(args.repeat):
        start = time.process_time()
        out = map_all(route, data)
        timings.append(time.process_time() - start)
    per_row = [t / args.rows * 1e6 for t in timings]
    refused = sum(1 for r in out if r[4] is not None)
    gate = ("on, number types" if args.block_types else "on") if args.gate else "off"
    print(
        f"mapping {args.rows:,} rows (gate {gate}, {choice.name}): "
        f"cpu {min(per_row):.2f} µs/row (runs: {', '.join(f'{p:.2f}' for p in per_row)}); "
        f"refused {refused:,}; digest {digest(out)}"
    )


if __name__ == "__main__":
    main()
