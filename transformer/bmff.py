"""Structure check of ISO base media files (ISO/IEC 14496-12): HEIC (HEIF, ISO/IEC 23008-12),
MP4 and QuickTime MOV, before any decoder or ffprobe reads them.

A box, big-endian:

    0        4        8                   8 or 16
    +--------+--------+-------------------+---------------------+-----------------+
    |  size  |  type  | largesize         | usertype            | payload         |
    |  u32   |  4cc   | u64, if size == 1 | 16 bytes, if 'uuid' |                 |
    +--------+--------+-------------------+---------------------+-----------------+

size counts the whole box, header included; 0 means "to the end of the file", which only a
top-level box may say (it is then the last one). A FullBox starts its payload with a version
(u8) and flags (u24).

What is checked (docs/formats/containers.md has the tables):

- every box read lies within its parent and the file: the top level, and inside the boxes
  that hold only boxes (MOVIE_CONTAINERS, HEIF_CONTAINERS); `ftyp` comes first (a classic
  QuickTime file may have none): this module;
- HEIF: one top-level `meta` with `hdlr` 'pict', `pitm`, `iinf` and `iloc`; every extent of
  every item lies inside the file (construction method 0) or the `idat` (method 1); the
  primary item and the items it is derived from (`iref` 'dimg', followed through) exist and
  have data, and a grid has one tile per cell (heif.py);
- MP4 and MOV: a `moov`, and for every track the bytes of every chunk (its `stco`/`co64`
  offset plus the sizes, from `stsz`/`stz2`, of the samples `stsc` puts in it) lie inside
  the file, so a file cut inside `mdat` fails even with its index at the front (movie.py).

container.py runs the three. Work is bounded by MediaLimits (container_parts_max boxes,
container_depth_max levels, heif_entries_max and mp4_table_entries_max entries); only box
headers and the tables parsed are read, never the media data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Final

from common.photo import Format
from transformer.byte_source import ByteSource
from transformer.errors import Rejected
from transformer.limits import MediaLimits

_SIZE_TYPE: Final = struct.Struct(">I4s")
_LARGESIZE: Final = struct.Struct(">Q")
BOX_HEADER_BYTES: Final = _SIZE_TYPE.size  # size and type
LARGE_BOX_HEADER_BYTES: Final = BOX_HEADER_BYTES + _LARGESIZE.size
USERTYPE_BYTES: Final = 16
FULL_BOX_BYTES: Final = 4  # version (u8) and flags (u24)
_SIZE_TO_END: Final = 0
_SIZE_IS_LARGE: Final = 1

# Boxes that hold only boxes (after a FullBox header for meta and iref, and after the entry
# count too for iinf). Movie boxes are read in every format; HEIF's item boxes in HEIC only:
# a QuickTime `meta` is no FullBox, so `meta` is only entered in HEIF.
MOVIE_CONTAINERS: Final = frozenset(
    {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex", b"moof",
     b"traf", b"mfra"}
)  # fmt: skip
HEIF_CONTAINERS: Final = frozenset({b"meta", b"iinf", b"iprp", b"ipco", b"iref"})
_FULL_BOX_CONTAINERS: Final = frozenset({b"meta", b"iref"})


def corrupt(why: str) -> Rejected:
    """The rejection of a file whose structure is broken; `why` is a short clause."""
    return Rejected("corrupt_file", f"The file is truncated or corrupt: {why}.")


def printable(kind: bytes) -> str:
    """A box type for a message: ASCII, anything else as '?'."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in kind)


@dataclass(frozen=True, slots=True)
class Box:
    """A box that lies within its parent: offsets in the file, children if it is a container
    that was entered."""

    kind: bytes
    start: int  # the header
    body: int  # the payload, after the header
    end: int  # just past the box
    children: tuple[Box, ...] = ()

    @property
    def payload_bytes(self) -> int:
        return self.end - self.body

    def all(self, kind: bytes) -> list[Box]:
        return [child for child in self.children if child.kind == kind]

    def one(self, kind: bytes, where: str) -> Box:
        """The only child of type `kind`; Rejected if there is none or more than one."""
        found = self.optional(kind, where)
        if found is None:
            raise corrupt(f"{where} has no {printable(kind)} box")
        return found

    def optional(self, kind: bytes, where: str) -> Box | None:
        """The child of type `kind` if there is one; Rejected if there are several."""
        found = self.all(kind)
        if len(found) > 1:
            raise corrupt(f"{where} has more than one {printable(kind)} box")
        return found[0] if found else None


class BoxReader:
    """Reads the box tree of one file, counting the boxes against the limits."""

    def __init__(self, src: ByteSource, limits: MediaLimits, containers: frozenset[bytes]):
        self.src = src
        self.limits = limits
        self.containers = containers
        self.boxes_read = 0

    def read_file(self) -> Box:
        """The whole file as a pseudo-box whose children are the top-level boxes."""
        size = self.src.size
        return Box(b"", 0, 0, size, self.boxes_in(0, size, depth=1))

    def boxes_in(self, start: int, end: int, *, depth: int) -> tuple[Box, ...]:
        """The boxes tiling [start, end), `depth` levels down (1 is the top level)."""
        boxes: list[Box] = []
        pos = start
        while pos < end:
            if depth > self.limits.container_depth_max:
                raise corrupt(f"boxes nest more than {self.limits.container_depth_max} levels deep")
            self.boxes_read += 1
            if self.boxes_read > self.limits.container_parts_max:
                raise corrupt(f"the file has more than {self.limits.container_parts_max} boxes")
            box = self._box_at(pos, end, top_level=depth == 1)
            if box.kind in self.containers:
                first = self._children_start(box)
                box = replace(box, children=self.boxes_in(first, box.end, depth=depth + 1))
            boxes.append(box)
            pos = box.end
        return tuple(boxes)

    def _box_at(self, pos: int, end: int, *, top_level: bool) -> Box:
        parent = "the file" if top_level else "its parent box"
        if end - pos < BOX_HEADER_BYTES:
            raise corrupt(f"a box header runs past the end of {parent}")
        size, kind = _SIZE_TYPE.unpack(self.src.read(pos, BOX_HEADER_BYTES))
        header = BOX_HEADER_BYTES
        if size == _SIZE_IS_LARGE:
            if end - pos < LARGE_BOX_HEADER_BYTES:
                raise corrupt(f"a box header runs past the end of {parent}")
            (size,) = _LARGESIZE.unpack(self.src.read(pos + header, _LARGESIZE.size))
            header = LARGE_BOX_HEADER_BYTES
        elif size == _SIZE_TO_END:
            if not top_level:
                raise corrupt(f"box {printable(kind)} inside another claims the rest of the file")
            size = end - pos
        if kind == b"uuid":
            header += USERTYPE_BYTES
        if size < header:
            raise corrupt(f"box {printable(kind)} is shorter than its own header")
        if size > end - pos:
            raise corrupt(f"box {printable(kind)} runs past the end of {parent}")
        return Box(kind, pos, pos + header, pos + size)

    def _children_start(self, box: Box) -> int:
        skip = 0
        if box.kind in _FULL_BOX_CONTAINERS:
            skip = FULL_BOX_BYTES
        elif box.kind == b"iinf":
            version = self.payload(box, 1, "iinf")[0]
            skip = FULL_BOX_BYTES + (2 if version == 0 else 4)  # the entry count
        if skip > box.payload_bytes:
            raise corrupt(f"box {printable(box.kind)} is too short")
        return box.body + skip

    def payload(self, box: Box, length: int, what: str) -> memoryview:
        """The first `length` bytes of `box`'s payload; Rejected if it is shorter."""
        if length > box.payload_bytes:
            raise corrupt(f"the {what} box is shorter than its fields")
        return self.src.read(box.body, length)


class Fields:
    """Big-endian unsigned fields of 0 to 8 bytes, read in order from a box's payload; a
    field past its end is Rejected (the box is shorter than its contents say)."""

    def __init__(self, data: memoryview, what: str) -> None:
        self.data = data
        self.what = what
        self.pos = 0

    def uint(self, nbytes: int) -> int:
        end = self.pos + nbytes
        if end > len(self.data):
            raise corrupt(f"the {self.what} box is shorter than its fields")
        value = int.from_bytes(self.data[self.pos : end], "big")
        self.pos = end
        return value

    def kind(self) -> bytes:
        return self.uint(4).to_bytes(4, "big")


def read_boxes(src: ByteSource, fmt: Format, limits: MediaLimits) -> tuple[BoxReader, Box]:
    """The box tree of a file sniffed as HEIC, MP4 or MOV (a pseudo-box whose children are
    the top-level boxes), with the reader that read it, after the checks that hold for every
    box and for `ftyp`. Raises Rejected("corrupt_file"), and only Rejected, for any bytes."""
    containers = MOVIE_CONTAINERS | HEIF_CONTAINERS if fmt == Format.HEIC else MOVIE_CONTAINERS
    reader = BoxReader(src, limits, containers)
    top = reader.read_file()
    ftyps = [i for i, box in enumerate(top.children) if box.kind == b"ftyp"]
    if ftyps != [0] and not (fmt == Format.MOV and not ftyps):
        raise corrupt("the file does not start with its one ftyp box")
    return reader, top
