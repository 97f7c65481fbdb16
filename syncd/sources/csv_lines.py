"""The CSV source's line reader: a plain export without quotes, read in blocks of bytes.

Most CRM exports are one row a line with no quoted cell. Such a file is parsed by
splitting: its lines at the newline, a line's cells at the delimiter, which is what
``csv.reader`` does with them. The line reader does that a block at a time in C
(``bytes.split``) and hands the pull each chunk's rows as the bytes of their lines
(``core.raw_rows.RawRows``): a re-sync hashes them all and builds the cells of the
few it maps. Memory stays flat (one block and one chunk's lines at a time).

A file is read so only when every byte of it is known to mean the same to both
readers; ``scan`` reads it once first (in blocks, in C) and says why not
otherwise: compressed, another encoding, a delimiter or quote that is not one ASCII
character, a quote character anywhere (a quoted cell may hold a delimiter, a newline
or a doubled quote), a NUL byte, a carriage return that is not part of CRLF line
ends used throughout, a line longer than the field limit. The row reader
(``csv_drop.CsvDropSource._parse_chunk``) reads such a file, and the pull logs why
(``source.reader.rows``). ``tests/test_csv_lines.py`` compares both readers' rows,
rejects and cursors on a mixed hostile sample.
"""

from __future__ import annotations

import codecs
import io
from dataclasses import dataclass
from pathlib import Path

from syncd.core.model import Reject
from syncd.core.raw_rows import RawRows
from syncd.sources import compressed

BLOCK_BYTES = 1 << 20


def shaped(values: list[str], width: int) -> tuple[list[str] | None, str | None]:
    """Return a row of the wrong number of cells as it is read (trailing empty cells a
    spreadsheet left are dropped), or why it is refused. One rule for both readers."""
    if len(values) > width and not any(v.strip() for v in values[width:]):
        return values[:width], None  # trailing empty cells from a spreadsheet
    return None, f"row has {len(values)} fields, the header has {width}"


@dataclass(frozen=True, slots=True)
class Scan:
    """What reading a file whole once found: why the line reader must not read it (the
    row reader does), or None; and whether its lines end in CRLF."""

    why: str | None
    crlf: bool = False


def scan(path: Path, *, encoding: str, delimiter: str, quotechar: str, field_limit: int) -> Scan:
    """Return whether the line reader may read ``path``, reading it once in blocks."""
    if codecs.lookup(encoding).name != "utf-8":
        return Scan(f"encoding {encoding} (the line reader reads UTF-8)")
    if not (delimiter.isascii() and quotechar.isascii()):
        return Scan("a delimiter or quote character that is not ASCII")
    quote, delim = quotechar.encode(), delimiter.encode()
    if delim in (b"\r", b"\n", b"\0"):
        return Scan("a line end as the delimiter")
    with path.open("rb") as fh:
        if compressed.format_of(fh.read(512)) is not None:
            return Scan("a compressed file")
        fh.seek(0)
        newlines = returns = crlf = 0
        tail = b""  # the last line's start, carried into the next block
        while block := fh.read(BLOCK_BYTES):
            if quote in block:
                return Scan(f"a quote character ({quotechar}): the row reader reads quoted cells")
            if b"\0" in block:
                return Scan("a NUL byte")
            newlines += block.count(b"\n")
            returns += block.count(b"\r")
            crlf += (tail[-1:] == b"\r" and block[:1] == b"\n") + block.count(b"\r\n")
            lines = (tail + block).split(b"\n")
            tail = lines.pop()
            if len(tail) > field_limit or (lines and max(map(len, lines)) > field_limit):
                return Scan(f"a line longer than {field_limit} bytes")
    if returns and not returns == crlf == newlines:
        return Scan("carriage returns other than CRLF line ends throughout")
    return Scan(None, crlf=returns > 0)


class LineReader:
    """Reads the data lines of a file ``scan`` passed, a chunk at a time."""

    def __init__(self, stream: io.BufferedIOBase, *, delimiter: str, crlf: bool) -> None:
        self.stream = stream
        self.delimiter = delimiter
        self.delim = delimiter.encode()
        self.newline = b"\r\n" if crlf else b"\n"
        self.pending: list[bytes] = []  # whole lines read and not yet handed over
        self.pos = 0  # the next of them
        self.tail = b""  # the start of a line not read whole yet
        self.eof = False
        self.line = 0  # the physical line of the last line handed over (or skipped)

    def skip_header(self) -> None:
        """Pass the header line (read by the row reader's opening, with its checks)."""
        self._fill()
        if self.pos < len(self.pending):
            self.pos += 1
            self.line = 1

    def _fill(self) -> bool:
        """Read the next block's whole lines into ``pending``; False at the end."""
        if self.pos < len(self.pending):
            return True
        self.pending, self.pos = [], 0
        while not self.pending:
            if self.eof:
                return False
            block = self.stream.read(BLOCK_BYTES)
            if not block:
                self.eof = True
                if self.tail:  # the last line, with no line end
                    self.pending, self.tail = [self.tail], b""
                    return True
                return False
            data = self.tail + block
            cut = data.rfind(self.newline)
            if cut < 0:
                self.tail = data
                continue
            self.tail = data[cut + len(self.newline) :]
            self.pending = data[:cut].split(self.newline)
        return True

    def chunk(
        self, limit: int, width: int, skip_until: int, source: str, origin: str
    ) -> tuple[RawRows, list[Reject], bool]:
        """Return up to ``limit`` rows and rejects (as the row reader counts them) and
        whether the file is read to its end; lines up to ``skip_until`` are passed over."""
        lines: list[int] = []
        raw: list[bytes] = []
        rejects: list[Reject] = []
        cells = width - 1  # delimiters in a row of the header's width
        delim = self.delim
        while len(raw) + len(rejects) < limit:
            if not self._fill():
                return RawRows(lines, raw, self.delimiter), rejects, True
            take = self.pending[self.pos : self.pos + limit - len(raw) - len(rejects)]
            first = self.line + 1
            self.pos += len(take)
            self.line += len(take)
            regular = [line.count(delim) == cells for line in take]
            if first > skip_until and all(regular) and b"" not in take:
                lines.extend(range(first, first + len(take)))
                raw.extend(take)
                continue
            # blank lines, lines already committed, or rows of another width: one by one
            for i, text in enumerate(take):
                at = first + i
                if at <= skip_until or not text:
                    continue
                if regular[i]:
                    lines.append(at)
                    raw.append(text)
                    continue
                values = text.decode("utf-8", "surrogateescape").split(self.delimiter)
                kept, why = shaped(values, width)
                if kept is None:
                    rejects.append(Reject(source, why or "", at, origin, row=values))
                else:
                    lines.append(at)
                    raw.append(self.delimiter.join(kept).encode("utf-8", "surrogateescape"))
            # A line passed over or blank is not counted: the chunk may take more lines.
        return RawRows(lines, raw, self.delimiter), rejects, False
