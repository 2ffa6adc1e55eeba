"""HEIC files built box by box, so that a test can break exactly one thing in them.

`Heif` describes a file (its items, the primary one, the derivations, how `iloc` is
written); `build` lays it out as ftyp, meta (hdlr, pitm, iinf, iloc, iref, iprp, idat) and
mdat, computing the file offsets of the items whose data lives in mdat. The coded pictures
come from pillow-heif (one HEVC image per tile, its hvcC and its bitstream), so the files
built here decode: a test that breaks one of them fails for the thing it broke.

`grid_heic` is how phones store a photo: a grid item (its ImageGrid in idat) derived from
HEVC tiles, with an Exif item beside it.
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass, field, replace

import numpy as np
import pillow_heif
from PIL import Image

from tests.transformer import images


def box(kind: bytes, *parts: bytes, size: int | None = None) -> bytes:
    """A box of `parts`; `size` overrides the size field (to lie about it)."""
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body) if size is None else size) + kind + body


def large_box(kind: bytes, *parts: bytes, extra: int = 0) -> bytes:
    """A box with a 64-bit largesize, `extra` bytes more than it really has."""
    body = b"".join(parts)
    return struct.pack(">I", 1) + kind + struct.pack(">Q", 16 + len(body) + extra) + body


def full_box(kind: bytes, version: int, *parts: bytes, flags: int = 0) -> bytes:
    return box(kind, struct.pack(">I", version << 24 | flags), *parts)


@dataclass(frozen=True)
class Item:
    item_id: int
    kind: bytes  # item_type: b"hvc1", b"grid", b"Exif"
    data: bytes
    in_idat: bool = False  # construction method 1, else 0 (in mdat)
    properties: tuple[bytes, ...] = ()  # property boxes (hvcC, ispe) associated with it
    # What iloc says, when a test wants it to lie: (offset delta, length delta) of the extent.
    extent_skew: tuple[int, int] = (0, 0)
    method: int | None = None  # override the construction method written


@dataclass(frozen=True)
class Heif:
    items: tuple[Item, ...]
    primary: int
    dimg: tuple[tuple[int, tuple[int, ...]], ...] = ()  # (derived item, its sources)
    iloc_version: int = 1
    handler: bytes = b"pict"
    without: frozenset[bytes] = field(default_factory=frozenset)  # meta children to leave out
    unlocated: frozenset[int] = field(default_factory=frozenset)  # items iloc leaves out
    mdat_large: bool = False  # write mdat with a 64-bit largesize


def _ftyp() -> bytes:
    return box(b"ftyp", b"heic", struct.pack(">I", 0), b"mif1", b"heic", b"miaf")


def _iloc(heif: Heif, mdat_body: int) -> bytes:
    version = heif.iloc_version
    located = [item for item in heif.items if item.item_id not in heif.unlocated]
    id_format = ">I" if version == 2 else ">H"
    out = [bytes([0x44, 0x00]), struct.pack(id_format, len(located))]  # offsets, lengths: 4
    mdat_pos = mdat_body
    idat_pos = 0
    for item in heif.items:
        in_idat = item.in_idat
        offset = idat_pos if in_idat else mdat_pos
        if in_idat:
            idat_pos += len(item.data)
        else:
            mdat_pos += len(item.data)
        if item.item_id in heif.unlocated:
            continue
        method = item.method if item.method is not None else int(in_idat)
        out.append(struct.pack(id_format, item.item_id))
        if version in (1, 2):
            out.append(struct.pack(">H", method))
        skew_offset, skew_length = item.extent_skew
        out.append(struct.pack(">HH", 0, 1))  # data_reference_index, extent_count
        out.append(struct.pack(">II", offset + skew_offset, len(item.data) + skew_length))
    return full_box(b"iloc", version, *out)


def _iprp(heif: Heif) -> bytes:
    properties: list[bytes] = []
    associations: list[bytes] = []
    for item in heif.items:
        indexes = []
        for prop in item.properties:
            properties.append(prop)
            indexes.append(len(properties) | 0x80)  # 1-based, essential
        associations.append(struct.pack(">HB", item.item_id, len(indexes)) + bytes(indexes))
    ipma = full_box(b"ipma", 0, struct.pack(">I", len(associations)), *associations)
    return box(b"iprp", box(b"ipco", *properties), ipma)


def _meta(heif: Heif, mdat_body: int) -> bytes:
    children = {
        b"hdlr": full_box(b"hdlr", 0, bytes(4), heif.handler, bytes(12), b"\0"),
        b"pitm": full_box(b"pitm", 0, struct.pack(">H", heif.primary)),
        b"iinf": full_box(
            b"iinf",
            0,
            struct.pack(">H", len(heif.items)),
            *(
                full_box(b"infe", 2, struct.pack(">HH", item.item_id, 0), item.kind, b"\0")
                for item in heif.items
            ),
        ),
        b"iloc": _iloc(heif, mdat_body),
        b"iref": full_box(
            b"iref",
            0,
            *(
                box(
                    b"dimg",
                    struct.pack(">HH", derived, len(parts)),
                    *(struct.pack(">H", part) for part in parts),
                )
                for derived, parts in heif.dimg
            ),
        ),
        b"iprp": _iprp(heif),
        b"idat": box(b"idat", *(item.data for item in heif.items if item.in_idat)),
    }
    if not heif.dimg:
        del children[b"iref"]
    if not any(item.in_idat for item in heif.items):
        del children[b"idat"]
    kept = [body for kind, body in children.items() if kind not in heif.without]
    return full_box(b"meta", 0, *kept)


def build(heif: Heif) -> bytes:
    """The bytes of `heif`: ftyp, meta, mdat (with the items not in idat, in item order)."""
    mdat_data = b"".join(item.data for item in heif.items if not item.in_idat)
    mdat_header = 16 if heif.mdat_large else 8
    head = _ftyp()
    # The offsets have a fixed width, so meta's size does not depend on their values.
    meta_bytes = len(_meta(heif, 0))
    meta = _meta(heif, len(head) + meta_bytes + mdat_header)
    mdat = large_box(b"mdat", mdat_data) if heif.mdat_large else box(b"mdat", mdat_data)
    return head + meta + mdat


# -- coded pictures from pillow-heif ------------------------------------------------------------


@dataclass(frozen=True)
class Coded:
    """One HEVC picture: its hvcC property box, its bitstream and its size."""

    hvcc: bytes
    data: bytes
    width: int
    height: int


def ispe(width: int, height: int) -> bytes:
    return full_box(b"ispe", 0, struct.pack(">II", width, height))


def coded(pixels: np.ndarray) -> Coded:
    """`pixels` ((h, w, 3) uint8) encoded by pillow-heif, taken apart: with no EXIF, the
    only item's bitstream is the whole of mdat."""
    out = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(pixels)).save(out, quality=80)
    data = out.getvalue()
    at = data.index(b"hvcC") - 4
    (hvcc_size,) = struct.unpack_from(">I", data, at)
    mdat = data.index(b"mdat") - 4
    (mdat_size,) = struct.unpack_from(">I", data, mdat)
    assert mdat + mdat_size == len(data)
    height, width = pixels.shape[:2]
    return Coded(data[at : at + hvcc_size], data[mdat + 8 :], width, height)


def grid_description(rows: int, columns: int, width: int, height: int) -> bytes:
    """ImageGrid: version 0, flags 0 (16-bit sides), rows - 1, columns - 1, output size."""
    return struct.pack(">BBBBHH", 0, 0, rows - 1, columns - 1, width, height)


@functools.cache
def single(width: int = 256, height: int = 192) -> Heif:
    """One HEVC picture as the primary item, with an Exif item."""
    picture = coded(images.scene(width, height))
    return Heif(
        items=(
            Item(1, b"hvc1", picture.data, properties=(picture.hvcc, ispe(width, height))),
            Item(2, b"Exif", bytes(4) + images.exif_bytes(gps=True)),
        ),
        primary=1,
    )


GRID_ID = 10
EXIF_ID = 20


@functools.cache
def grid(rows: int = 2, columns: int = 2, tile: tuple[int, int] = (128, 96)) -> Heif:
    """A phone-like photo: a grid item (its description in idat) over rows x columns HEVC
    tiles of `tile` pixels, and an Exif item. Tiles are items 1.., row by row."""
    tile_width, tile_height = tile
    width, height = columns * tile_width, rows * tile_height
    scene = images.scene(width, height)
    tiles: list[Item] = []
    for row in range(rows):
        for column in range(columns):
            y, x = row * tile_height, column * tile_width
            picture = coded(np.ascontiguousarray(scene[y : y + tile_height, x : x + tile_width]))
            props = (picture.hvcc, ispe(tile_width, tile_height))
            tiles.append(Item(len(tiles) + 1, b"hvc1", picture.data, properties=props))
    description = grid_description(rows, columns, width, height)
    return Heif(
        items=(
            Item(GRID_ID, b"grid", description, in_idat=True, properties=(ispe(width, height),)),
            *tiles,
            Item(EXIF_ID, b"Exif", bytes(4) + images.exif_bytes(gps=True)),
        ),
        primary=GRID_ID,
        dimg=((GRID_ID, tuple(t.item_id for t in tiles)),),
    )


def grid_heic() -> bytes:
    return build(grid())


def with_item(heif: Heif, item_id: int, **changes: object) -> Heif:
    """`heif` with the fields of one item replaced."""
    items = tuple(
        replace(item, **changes) if item.item_id == item_id else item  # type: ignore[arg-type]
        for item in heif.items
    )
    return replace(heif, items=items)
