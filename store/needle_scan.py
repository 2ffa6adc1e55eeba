"""Sequential reading of the needles in a range of a volume file.

Shared by the loader (index the tail past the checkpoint), verify (check every needle) and
compaction (replay the tail written while it copied). Reads in large chunks; each needle is
checked (header, footer magic, checksum) before it is handed out. A file that can read into
a buffer (`read_into`, as store.storage.OsVolumeFile) is read into one buffer the scan
reuses, so a needle's `raw` holds only until the scan goes on: use or copy it first.

Two kinds of damage are told apart:
- corrupt: the framing holds (header and footer magic where the header's size says) but the
  checksum does not match. The scan reports it and goes on after it.
- broken: the framing does not hold (bad header magic, a size running past the range, no
  footer magic). Nothing after it can be located, so the scan stops there: at the tail of a
  file this is a torn write.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Protocol

from store import needle
from store.errors import CorruptNeedle

SCAN_CHUNK_BYTES: Final = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ScannedNeedle:
    offset: int
    header: needle.NeedleHeader
    raw: memoryview  # the whole needle, padding included (may be short of padding at EOF);
    # valid until the scan yields its next item

    @property
    def length(self) -> int:
        return self.header.length


@dataclass(frozen=True, slots=True)
class Damage:
    offset: int
    broken: bool  # framing lost: the scan stopped here
    message: str
    length: int = 0  # bytes skipped (corrupt needles only)


class Readable(Protocol):
    """All a scan needs of a file (store.storage.VolumeFile has it; so has a volume read
    through a store's HTTP API, f4.store_source)."""

    def read(self, length: int, offset: int) -> bytes: ...


def scan(
    file: Readable, start: int, end: int, *, chunk_bytes: int = SCAN_CHUNK_BYTES
) -> Iterator[ScannedNeedle | Damage]:
    """Yields the needles in [start, end) in file order, and Damage where checks fail."""
    read_into = getattr(file, "read_into", None)
    scratch = bytearray()

    def read(length: int, offset: int) -> bytes | memoryview:
        # Into the one buffer: fresh pages per chunk cost a fault each, and on a VM whose
        # host takes back freed memory a slow one (ARCHITECTURE.md, "What a durable PUT
        # costs depends on the page cache's memory").
        nonlocal scratch
        if read_into is None:
            return file.read(length, offset)
        if len(scratch) < length:
            scratch = bytearray(length)  # views of the old one stay valid
        view = memoryview(scratch)[:length]
        return view[: read_into(view, offset)]

    pos = start
    buf: bytes | memoryview = b""
    buf_start = start
    while pos < end:
        rel = pos - buf_start
        if len(buf) - rel < needle.HEADER_BYTES:
            buf = read(min(chunk_bytes, end - pos), pos)
            buf_start, rel = pos, 0
            if len(buf) < needle.HEADER_BYTES:
                yield Damage(pos, True, "truncated needle header")
                return
        try:
            header = needle.parse_header(memoryview(buf)[rel : rel + needle.HEADER_BYTES])
        except CorruptNeedle as e:
            yield Damage(pos, True, str(e))
            return
        length = header.length
        if pos + length > end:
            # The padding of the very last needle may be missing only if the file was cut;
            # a needle always ends aligned, so anything shorter is a torn write.
            yield Damage(pos, True, "needle runs past the end of the range")
            return
        if len(buf) - rel < length:
            buf = read(max(length, min(chunk_bytes, end - pos)), pos)
            buf_start, rel = pos, 0
            if len(buf) < length:
                yield Damage(pos, True, "needle runs past the end of the file")
                return
        raw = memoryview(buf)[rel : rel + length]
        try:
            needle.verify(raw)
        except CorruptNeedle as e:
            footer_at = needle.HEADER_BYTES + header.data_size
            framing_holds = bytes(raw[footer_at : footer_at + 4]) == needle.FOOTER_MAGIC
            if not framing_holds:
                yield Damage(pos, True, str(e))
                return
            yield Damage(pos, False, str(e), length)
            pos += length
            continue
        yield ScannedNeedle(pos, header, raw)
        pos += length
