"""Write N realistic CRM leads as CSV: mixed phone formats, some invalid, some duplicates.

python bench/gen_leads.py 1000000 leads.csv [--seed 1]
python bench/gen_leads.py 1000000 day2.csv --change 0.01 --new 0.005   # a re-export
python bench/gen_leads.py 200000 leads.csv --invalid 0.2   # a fifth of the numbers unreadable
python bench/gen_leads.py 200000 leads.csv --scattered-keys  # keys not in the file's order
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

HEADER = [
    "lead_id",
    "first_name",
    "last_name",
    "mobile",
    "alt_mobile",
    "email",
    "city",
    "callback_at",
    "product",
]
FIRST = ["Asha", "Ravi", "Meera", "Arjun", "Priya", "Vikram", "Neha", "Kiran", "Sunil", "Divya"]
LAST = ["Sharma", "Patel", "Iyer", "Khan", "Reddy", "Das", "Nair", "Gupta", "Mehta", "Rao"]
CITIES = ["Mumbai", "Pune", "Delhi", "Chennai", "Kolkata", "Bengaluru"]


def phone(rng: random.Random, i: int, invalid: float = 0.02) -> str:
    digits = f"9{(i * 7919 + 1234567) % 10**9:09d}"
    style = rng.random()
    if style < invalid:
        return rng.choice(["12345", "n/a", "", "+91 99"])  # invalid
    if style < 0.40:
        return digits
    if style < 0.70:
        return f"+91 {digits[:5]} {digits[5:]}"
    if style < 0.90:
        return f"0091-{digits}"
    return f"0{digits}"


def key(i: int, scattered: bool = False) -> str:
    """Return lead ``i``'s key: in the file's order, or scattered (a bijection of the first
    2**32 numbers): an export keyed by e-mail address or UUID, or sorted by date."""
    return f"L{(i * 2654435761) % 2**32:010d}" if scattered else f"L{i:08d}"


def row(
    rng: random.Random, i: int, variant: int = 0, invalid: float = 0.02, scattered: bool = False
) -> list[str]:
    first, last = FIRST[i % 10], LAST[(i // 10) % 10]
    callback = f"2026-12-{1 + i % 27:02d} {9 + i % 9:02d}:00:00" if i % 5 == 0 else ""
    return [
        key(i, scattered),
        first,
        last if not variant else f"{last}-{variant}",
        phone(rng, i, invalid),
        "",
        f"{first.lower()}.{i}@example.com",
        CITIES[i % 6],
        callback,
        f"P{i % 13}",
    ]


def generate(
    n: int,
    path: Path,
    *,
    seed: int = 1,
    change: float = 0.0,
    new: float = 0.0,
    invalid: float = 0.02,
    scattered: bool = False,
) -> None:
    """Write the leads; ``invalid``: the share of unreadable numbers (under 0.4: the rest
    keep their formats' shares); ``scattered``: keys not in the file's order (``key``)."""
    rng = random.Random(seed)
    change_rng = random.Random(seed + 1)
    part = path.with_name(path.name + ".part")
    with part.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(n):
            variant = 1 if change and change_rng.random() < change else 0
            values = row(rng, i, variant, invalid, scattered)
            writer.writerow(values)
            if i % 200 == 0:  # the CRM exported about 0.5% twice
                writer.writerow(values)
        for j in range(int(n * new)):
            writer.writerow(row(rng, n + j, invalid=invalid, scattered=scattered))
    part.rename(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int)
    parser.add_argument("path", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--change", type=float, default=0.0)
    parser.add_argument("--new", type=float, default=0.0)
    parser.add_argument("--invalid", type=float, default=0.02, help="share of unreadable numbers")
    parser.add_argument("--scattered-keys", action="store_true", help="keys not in file order")
    args = parser.parse_args()
    generate(
        args.n,
        args.path,
        seed=args.seed,
        change=args.change,
        new=args.new,
        invalid=args.invalid,
        scattered=args.scattered_keys,
    )


if __name__ == "__main__":
    main()
