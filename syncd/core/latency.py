"""How long leads take from being read to the dialer, kept as counts per bucket.

A bucket is a quarter of a doubling wide (each bound 19 % above the last), so an hour
of deliveries is a few dozen counts whatever their number, counts of two passes (or of
two replicas) add up, and a quantile read back is within one bucket of the truth.
Bucket 0 ends at one second; below it the buckets go on (negative numbers) down to
about a millisecond, so a lead POSTed and pushed at once has a speed to lead that
reads in tenths of a second (`MIN_BUCKET` holds everything up to 1 ms). Hours
recorded before the sub-second buckets counted everything up to 1 s in bucket 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

STEPS_PER_DOUBLING = 4
MAX_BUCKET = 4 * 40  # 2**40 s: anything later is clamped (a clock gone wrong)
MIN_BUCKET = -4 * 10  # 2**-10 s, about a millisecond: anything quicker is counted here


def bucket(seconds: float) -> int:
    """Return the bucket of a duration: the smallest ``b`` with ``seconds <= upper(b)``."""
    if not seconds > upper(MIN_BUCKET):  # also NaN and negative (a clock set back)
        return MIN_BUCKET
    b = math.ceil(math.log2(seconds) * STEPS_PER_DOUBLING - 1e-9)
    return max(MIN_BUCKET, min(b, MAX_BUCKET))


def upper(b: int) -> float:
    """Return the largest duration bucket ``b`` holds, in seconds."""
    return float(2 ** (b / STEPS_PER_DOUBLING))


def lower(b: int) -> float:
    """Return the duration bucket ``b`` starts after (0 for the first)."""
    return 0.0 if b <= MIN_BUCKET else upper(b - 1)


def histogram(durations: Iterable[float]) -> dict[int, int]:
    """Return the counts per bucket of ``durations``."""
    return dict(Counter(bucket(d) for d in durations))


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """Return the ``q`` quantile (0..1) of a histogram, None when it is empty.

    Within its bucket the value is interpolated, as if the bucket's durations were
    spread evenly: the error is at most the bucket's width.
    """
    total = sum(n for n in counts.values() if n > 0)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for b in sorted(counts):
        n = counts[b]
        if n <= 0:
            continue
        if seen + n >= rank:
            low, high = lower(b), upper(b)
            return low + (high - low) * max(rank - seen, 0) / n
        seen += n
    return upper(max(counts))
