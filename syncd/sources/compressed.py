"""Drops compressed on their way: the CSV inside a gzip, bzip2 or xz file, or inside a zip
holding one CSV, is read as a stream; any other archive is named and refused.

A CRM's export job or a person often compresses a large export before it crosses a share.
Left unread in the inbox it would be lost without a word, and read as text it is "binary
content". The kind is told by the file's first bytes, not its name: a gzip file named
``.csv`` is read too, and a ``.zip`` that is not one is refused for what it is.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zipfile
import zlib
from fnmatch import fnmatchcase
from typing import IO, cast

# Readable as one stream each, with the standard library; the key is the format's name.
_STREAMS: dict[str, bytes] = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ\x00"}
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_REFUSED: dict[str, bytes] = {
    "7-Zip": b"7z\xbc\xaf\x27\x1c",
    "RAR": b"Rar!\x1a\x07",
    "zstd": b"\x28\xb5\x2f\xfd",
}
_TAR_MAGIC = (257, b"ustar")  # offset and magic of a tar header (a .tar.gz, once opened)
SUFFIXES = (".gz", ".gzip", ".bz2", ".xz", ".zip", ".7z", ".rar", ".zst", ".tgz")
SUPPORTED = "a CSV, or one compressed with gzip, bzip2 or xz, or a zip holding one CSV"

# What a damaged or cut-short compressed stream raises while it is read.
STREAM_ERRORS: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, lzma.LZMAError)


class ArchiveRefused(Exception):
    """The drop is an archive syncd does not read; the message says what it is and what to do."""


def is_drop_name(name: str, pattern: str) -> bool:
    """Return True when ``name`` matches the source's pattern, compressed or not:
    ``leads.csv.gz`` and ``leads.zip`` are drops of a source whose pattern is ``*.csv``."""
    # Case does not matter: Windows and Excel write LEADS.CSV as readily as leads.csv.
    lowered, pattern = name.lower(), pattern.lower()
    if fnmatchcase(lowered, pattern):
        return True
    for suffix in SUFFIXES:
        if lowered.endswith(suffix):
            stem = lowered[: -len(suffix)]
            return fnmatchcase(stem, pattern) or fnmatchcase(f"{stem}.csv", pattern)
    return False


def format_of(head: bytes) -> str | None:
    """Return the compression or archive format the first bytes show; None for plain text."""
    for name, magic in {**_STREAMS, **_REFUSED}.items():
        if head.startswith(magic):
            return name
    if head.startswith(_ZIP):
        return "zip"
    offset, magic = _TAR_MAGIC
    if head[offset : offset + len(magic)] == magic:
        return "tar"
    return None


def opened(raw: IO[bytes]) -> IO[bytes]:
    """Return the CSV bytes of a drop opened as ``raw`` (seekable, at its start): the file
    itself when plain, else a stream decompressing it. Raise ArchiveRefused when it is an
    archive syncd does not read."""
    head = raw.read(512)
    raw.seek(0)
    kind = format_of(head)
    if kind is None:
        return raw
    if kind == "gzip":
        stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    elif kind == "bzip2":
        stream = cast(IO[bytes], bz2.BZ2File(raw, mode="rb"))
    elif kind == "xz":
        stream = cast(IO[bytes], lzma.LZMAFile(raw, mode="rb"))
    elif kind == "zip":
        return _zip_member(raw)
    else:
        raise ArchiveRefused(
            f"a {kind} archive: syncd reads {SUPPORTED}; drop the CSV inside it instead"
        )
    inner = _peek(stream)
    if format_of(inner) == "tar":
        raise ArchiveRefused(
            f"a tar archive compressed with {kind}: syncd reads {SUPPORTED}; "
            "drop the CSV inside it instead"
        )
    return stream


def _peek(stream: IO[bytes]) -> bytes:
    """Return the first bytes of a decompressing stream, leaving it where it was."""
    try:
        peek = getattr(stream, "peek", None)
        return bytes(peek(512)[:512]) if peek else b""
    except STREAM_ERRORS:
        return b""  # damaged from the start: reading it says so, with the line


def _zip_member(raw: IO[bytes]) -> IO[bytes]:
    try:
        archive = zipfile.ZipFile(raw)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveRefused(f"a damaged zip archive ({exc}); export it again") from None
    members = [
        m
        for m in archive.infolist()
        if not m.is_dir() and not m.filename.startswith("__MACOSX/")
        and not m.filename.rsplit("/", 1)[-1].startswith("._")
    ]  # fmt: skip
    if not members:
        raise ArchiveRefused("a zip archive that holds no CSV file; export it again")
    if len(members) > 1:
        names = ", ".join(m.filename for m in members[:3]) + (", …" if len(members) > 3 else "")
        raise ArchiveRefused(
            f"a zip archive that holds {len(members)} files ({names}): syncd reads a zip "
            "holding one CSV; drop each file on its own"
        )
    [member] = members
    if member.flag_bits & 0x1:
        raise ArchiveRefused(
            f"a zip archive whose file {member.filename} is encrypted: drop it unencrypted"
        )
    try:
        return archive.open(member)
    except (NotImplementedError, zipfile.BadZipFile, RuntimeError) as exc:
        raise ArchiveRefused(f"a zip archive syncd cannot open ({exc}); use plain zip") from None


def damaged(exc: BaseException) -> str:
    """Return what a damaged compressed stream's error means to the person who dropped it."""
    if isinstance(exc, EOFError):
        return "the compressed data ends early (the file was cut short while copied?)"
    return f"the compressed data is damaged ({exc})"


def read_head(stream: IO[bytes], size: int) -> tuple[bytes, bool]:
    """Return up to ``size`` first bytes and whether they end where the data ends; a
    damaged stream gives what could be read before the damage (the reading reports it).
    Raise the damage when not one byte could be read: nothing later would report it,
    and the drop would pass for an empty export."""
    parts: list[bytes] = []
    got = 0
    try:
        while got < size:
            block = stream.read(min(8192, size - got))
            if not block:
                return b"".join(parts), True
            parts.append(block)
            got += len(block)
    except STREAM_ERRORS:
        if not parts:
            raise
        return b"".join(parts), False
    return b"".join(parts), False
