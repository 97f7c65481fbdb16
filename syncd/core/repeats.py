"""Which keys of a file repeat, and the line of each one's last row: pure, no I/O.

Last row wins across a whole file, not only within the chunk a row is read in: a row
whose key comes again later must be superseded in its own chunk, before anything of
it is queued (a push may run before the later chunk is read). The CSV source reads a
file once ahead (``sources.csv_drop``) and feeds each chunk's keys and lines here; the
pull hands the result to ``core.reconcile.triage``.

Memory stays small for a file of millions of rows: only the repeated keys are kept,
with their last line. Whether a key was met before is asked of a bitmap indexed by the
key's hash, one bit a key, not of a set of the keys (a set of a million hashes
alone takes ~80 MB in Python; the bitmap at most ``MAX_BITS`` / 8 bytes). The bitmap
may say "met" of a key that was not (two keys share a bit): that key is then kept
with the line of the row at hand, which is its only row so far, and a row is
superseded only by a *later* line (``later_line``), so such an entry supersedes
nothing. A key that does repeat is always found (its bit was set by its first row):
the answer is exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

MIN_BITS = 1 << 16
MAX_BITS = 1 << 27  # a 16 MB bitmap: one key in ~130 shares a bit at 1M rows


def bitmap_bits(file_bytes: int) -> int:
    """Return the bitmap's size for a file of ``file_bytes``: a power of two near one bit
    a byte (a row takes tens of bytes, so few keys share a bit), within the bounds."""
    bits = MIN_BITS
    while bits < file_bytes and bits < MAX_BITS:
        bits <<= 1
    return bits


class RepeatFinder:
    """Finds the keys met more than once, fed a file's rows in order (see module doc)."""

    __slots__ = ("_mask", "_seen", "last")

    def __init__(self, bits: int) -> None:
        if bits < 8 or bits & (bits - 1):
            raise ValueError("the bitmap's size is a power of two, at least 8 bits")
        self._seen = bytearray(bits >> 3)
        self._mask = bits - 1
        # key -> line of its last row so far, for every key met again (and the few whose
        # bit another key set: kept at their own line, which supersedes nothing)
        self.last: dict[str, int] = {}

    def add(self, keys: Sequence[str], lines: Sequence[int]) -> None:
        """Take the next rows of the file: their keys (as ``reconcile.row_keys`` gives
        them) and lines, in file order. A row without a key is no lead: passed over."""
        seen, mask, last = self._seen, self._mask, self.last
        # Every row of every file passes here: the loop keeps to locals and C calls.
        # hash() is salted per process: the bitmap lives and dies within one pass.
        for hashed, key, line in zip(map(hash, keys), keys, lines, strict=True):
            at = hashed & mask
            byte, bit = at >> 3, 1 << (at & 7)
            held = seen[byte]
            if held & bit:
                last[key] = line
            else:
                seen[byte] = held | bit
        last.pop("", None)  # rows without a key are refused, not leads: none supersedes

    def result(self) -> dict[str, int]:
        """Return the repeated keys with the line of their last row, and free the bitmap."""
        self._seen = bytearray()
        return self.last


def later_line(last_lines: Mapping[str, int], key: str, line: int) -> int | None:
    """Return the line of a later row of ``key`` in the file, when a row at ``line`` has one."""
    last = last_lines.get(key)
    return last if last is not None and last > line else None
