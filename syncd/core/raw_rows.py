"""A chunk's rows kept as the raw bytes of their lines (issue 27: the columnar pull).

The CSV source's line reader (``syncd.sources.csv_lines``) hands over a chunk of a
file without a quote character as the bytes of each row's line: a re-sync hashes
every row and maps only the few that changed, so a row's cells are made into
Python strings only when something asks for them. Pure: no I/O.

Byte for byte what the row reader (``csv.reader`` over the decoded text) gives on
such a line: its cells are the line split at the delimiter, decoded as UTF-8 with
``surrogateescape`` (which gives the bytes back exactly), so the raw hash of the
line (its cells joined with ``\\x1f``) is ``core.mapping.row_hash`` of those cells.
``tests/test_csv_lines.py`` compares the two readers on a mixed hostile sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import overload

Row = tuple[int, list[str]]  # (line, values), as core.reconcile names it
SEPARATOR = b"\x1f"  # between the cells of a row in its raw hash (core.mapping.row_hash)


class RawRows(Sequence[Row]):
    """Rows of one chunk as (line, raw bytes of its cells joined by the delimiter).

    A sequence of (line, values) like any chunk's rows; ``hashes`` and ``column``
    give a whole chunk's raw hashes and one column's cells without building rows.
    """

    __slots__ = ("delimiter", "lines", "raw", "text_delimiter")

    def __init__(self, lines: list[int], raw: list[bytes], delimiter: str) -> None:
        if len(lines) != len(raw):
            raise ValueError("one line number per row")
        self.lines = lines
        self.raw = raw
        self.text_delimiter = delimiter
        self.delimiter = delimiter.encode("utf-8")

    def __len__(self) -> int:
        return len(self.raw)

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> list[Row]: ...

    def __getitem__(self, index: int | slice) -> Row | list[Row]:
        if isinstance(index, slice):
            return list(zip(self.lines[index], map(self.values, self.raw[index]), strict=True))
        return self.lines[index], self.values(self.raw[index])

    def part(self, start: int, stop: int) -> RawRows:
        """Return rows ``start`` to ``stop`` as raw rows too: what a mapping worker is
        sent, its lines' bytes (one bytes object a row to pickle, not a list of cells,
        and the cells made in the worker, not on the event loop)."""
        return RawRows(self.lines[start:stop], self.raw[start:stop], self.text_delimiter)

    def __iter__(self) -> Iterator[Row]:
        return zip(self.lines, map(self.values, self.raw), strict=True)

    def values(self, raw: bytes) -> list[str]:
        """Return a row's cells as the row reader gives them."""
        return raw.decode("utf-8", "surrogateescape").split(self.text_delimiter)

    def hashes(self, fingerprint: bytes) -> list[str]:
        """Return each row's ``core.mapping.row_hash`` under ``fingerprint``, in row order."""
        seeded = hashlib.blake2b(fingerprint, digest_size=16).copy
        out: list[str] = []
        append = out.append
        if self.delimiter == SEPARATOR:
            for raw in self.raw:
                h = seeded()
                h.update(raw)
                append(h.hexdigest())
            return out
        delimiter = self.delimiter
        for raw in self.raw:
            h = seeded()
            h.update(raw.replace(delimiter, SEPARATOR))
            append(h.hexdigest())
        return out

    def column(self, index: int) -> list[str]:
        """Return the cells of one column, in row order (unstripped, as the row reader's)."""
        delimiter = self.delimiter
        if index == 0:
            cells = [raw.partition(delimiter)[0] for raw in self.raw]
        else:
            cells = [raw.split(delimiter, index + 1)[index] for raw in self.raw]
        return [cell.decode("utf-8", "surrogateescape") for cell in cells]
