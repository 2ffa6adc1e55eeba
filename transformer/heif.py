"""HEIF items (ISO/IEC 23008-12 on ISO/IEC 14496-12's `meta` box): the part of the container
check that finds a HEIC's picture and makes sure its data is in the file.

The boxes read, big-endian, each after a FullBox header (version u8, flags u24):

    hdlr   pre_defined u32 | handler_type 4cc ('pict')
    pitm   item_ID (u16 in version 0, else u32): the primary item
    iinf   entry_count (u16 in version 0, else u32), then that many `infe` boxes:
    infe   v2: item_ID u16 | protection u16 | item_type 4cc | ...
           v3: item_ID u32 | protection u16 | item_type 4cc | ...
           v0, v1: item_ID u16 | protection u16 | names (no type)
    iref   per reference, a box named by its type ('dimg': derived from):
           from_item_ID | reference_count u16 | to_item_ID x reference_count
           (item ids u16 in version 0, u32 in version 1)
    iloc   versions 0, 1, 2:

        +-------------+-------------+------------------+------------------------+------------+
        | offset_size | length_size | base_offset_size | index_size (v1, v2)    | item_count |
        |     u4      |     u4      |        u4        | reserved (v0); u4      | u16; u32 v2|
        +-------------+-------------+------------------+------------------------+------------+
        then per item:
        +---------+-----------------------------+----------+-------------+--------------+
        | item_ID | reserved u12 | method u4    | data_ref | base_offset | extent_count |
        | u16;    | (v1, v2 only)               | u16      | base_offset | u16          |
        | u32 v2  |                             |          | _size bytes |              |
        +---------+-----------------------------+----------+-------------+--------------+
        then per extent: extent_index (index_size bytes) | extent_offset | extent_length
        (offset_size and length_size bytes; every size is 0, 4 or 8).

An extent is [base_offset + extent_offset, + extent_length) in the file (construction method
0) or in the payload of the `idat` box (method 1); a length of 0 means "to the end" of it.
Method 2 (offsets into another item) is refused, and so is data in another file
(data_reference_index != 0): neither occurs in the photos phones and cameras write.

A grid item's data (ImageGrid) is version u8 (0) | flags u8 | rows - 1 u8 | columns - 1 u8 |
output width and height (u16, or u32 when flags & 1); it is derived ('dimg') from one tile
per cell, in rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from transformer.bmff import FULL_BOX_BYTES, Box, BoxReader, Fields, corrupt, printable

PICTURE_HANDLER: Final = b"pict"
_HDLR_BYTES: Final = FULL_BOX_BYTES + 4 + 4  # pre_defined, handler_type
_INFE_BYTES_MAX: Final = FULL_BOX_BYTES + 4 + 2 + 4  # the longest item_ID, protection, type
_PITM_BYTES_MAX: Final = FULL_BOX_BYTES + 4
# The most an iloc of heif_entries_max items and as many extents can take: beyond it, the
# box holds more than the limit and is refused before it is read.
_ILOC_HEAD_BYTES_MAX: Final = FULL_BOX_BYTES + 1 + 1 + 4
_ILOC_ITEM_BYTES_MAX: Final = 4 + 2 + 2 + 8 + 2  # item_ID, method, data_ref, base, count
_ILOC_EXTENT_BYTES_MAX: Final = 8 + 8 + 8  # index, offset, length
_FIELD_SIZES: Final = frozenset({0, 4, 8})
_FILE_OFFSETS: Final = 0
_IDAT_OFFSETS: Final = 1
_GRID_BYTES_MAX: Final = 1 + 1 + 1 + 1 + 4 + 4
_GRID_WIDE_SIDES: Final = 0x01
# Derived items whose pixels are all another item's: they need no data of their own.
_DATALESS_TYPES: Final = frozenset({b"iden"})


@dataclass(frozen=True, slots=True)
class ItemLocation:
    method: int  # _FILE_OFFSETS or _IDAT_OFFSETS
    extents: tuple[tuple[int, int], ...]  # [start, end) in the file or the idat payload


def check_items(reader: BoxReader, meta: Box) -> None:
    """Checks a HEIF's top-level `meta` box (see the module docstring). Raises Rejected
    ("corrupt_file")."""
    where = "the meta box"
    hdlr = meta.one(b"hdlr", where)
    if bytes(reader.payload(hdlr, _HDLR_BYTES, "hdlr")[8:12]) != PICTURE_HANDLER:
        raise corrupt("the HEIF's meta box does not describe a picture")
    primary = _primary_item(reader, meta.one(b"pitm", where))
    types = _item_types(reader, meta.one(b"iinf", where))
    idat = meta.optional(b"idat", where)
    locations = _locations(reader, meta.one(b"iloc", where), idat)
    derived_from = _derivations(reader, meta.optional(b"iref", where))
    if primary not in types:
        raise corrupt("the HEIF's primary item is not in its item list")
    # The primary item and, followed through, the items it is derived from.
    pending, seen = [primary], {primary}
    while pending:
        item = pending.pop()
        kind = types.get(item)
        if kind is None:
            raise corrupt(f"HEIF item {item}, which the picture needs, is not listed")
        location = locations.get(item)
        if (location is None or not location.extents) and kind not in _DATALESS_TYPES:
            raise corrupt(f"HEIF item {item} ({printable(kind)}) has no data")
        parts = derived_from.get(item, ())
        if kind == b"grid" and location is not None:
            rows, columns = _grid_shape(reader, location, idat)
            if rows * columns != len(parts):
                raise corrupt(f"the HEIF grid has {rows}x{columns} cells but {len(parts)} tiles")
        for part in parts:
            if part not in seen:
                seen.add(part)
                pending.append(part)


def _version(reader: BoxReader, box: Box) -> int:
    return reader.payload(box, 1, printable(box.kind))[0]


def _primary_item(reader: BoxReader, pitm: Box) -> int:
    version = _version(reader, pitm)
    fields = Fields(reader.payload(pitm, min(pitm.payload_bytes, _PITM_BYTES_MAX), "pitm"), "pitm")
    fields.uint(FULL_BOX_BYTES)
    return fields.uint(2 if version == 0 else 4)


def _item_types(reader: BoxReader, iinf: Box) -> dict[int, bytes]:
    """item_ID -> item_type (b"" for the typeless versions 0 and 1 of infe)."""
    entries_max = reader.limits.heif_entries_max
    count_bytes = 2 if _version(reader, iinf) == 0 else 4
    head = Fields(reader.payload(iinf, FULL_BOX_BYTES + count_bytes, "iinf"), "iinf")
    head.uint(FULL_BOX_BYTES)
    count = head.uint(count_bytes)
    if count > entries_max:
        raise corrupt(f"the HEIF lists more than {entries_max} items")
    entries = iinf.all(b"infe")
    if len(entries) != count:
        raise corrupt(f"the HEIF's item list says {count} items but holds {len(entries)}")
    types: dict[int, bytes] = {}
    for infe in entries:
        version = _version(reader, infe)
        fields = Fields(
            reader.payload(infe, min(infe.payload_bytes, _INFE_BYTES_MAX), "infe"), "infe"
        )
        fields.uint(FULL_BOX_BYTES)
        item = fields.uint(4 if version >= 3 else 2)
        fields.uint(2)  # item_protection_index
        kind = fields.kind() if version >= 2 else b""
        if item in types:
            raise corrupt(f"HEIF item {item} is listed twice")
        types[item] = kind
    return types


def _locations(reader: BoxReader, iloc: Box, idat: Box | None) -> dict[int, ItemLocation]:
    """item_ID -> where its data is, every extent checked to lie inside the file or idat."""
    entries_max = reader.limits.heif_entries_max
    bytes_max = _ILOC_HEAD_BYTES_MAX + entries_max * (_ILOC_ITEM_BYTES_MAX + _ILOC_EXTENT_BYTES_MAX)
    if iloc.payload_bytes > bytes_max:
        raise corrupt(f"the HEIF's item locations are more than {entries_max} entries")
    fields = Fields(reader.payload(iloc, iloc.payload_bytes, "iloc"), "iloc")
    version = fields.uint(1)
    fields.uint(3)  # flags
    if version > 2:
        raise corrupt(f"the HEIF's iloc box has an unknown version {version}")
    sizes = fields.uint(1)
    offset_size, length_size = sizes >> 4, sizes & 0x0F
    sizes = fields.uint(1)
    base_offset_size, index_size = sizes >> 4, (sizes & 0x0F if version in (1, 2) else 0)
    if not {offset_size, length_size, base_offset_size, index_size} <= _FIELD_SIZES:
        raise corrupt("the HEIF's iloc box has a field size other than 0, 4 or 8")
    id_bytes = 4 if version == 2 else 2
    count = fields.uint(id_bytes)
    if count > entries_max:
        raise corrupt(f"the HEIF locates more than {entries_max} items")
    file_bytes = reader.src.size
    idat_bytes = idat.payload_bytes if idat is not None else None
    extents_total = 0
    locations: dict[int, ItemLocation] = {}
    for _ in range(count):
        item = fields.uint(id_bytes)
        method = fields.uint(2) & 0x0F if version in (1, 2) else _FILE_OFFSETS
        data_reference = fields.uint(2)
        base = fields.uint(base_offset_size)
        extent_count = fields.uint(2)
        extents_total += extent_count
        if extents_total > entries_max:
            raise corrupt(f"the HEIF's items have more than {entries_max} extents")
        if item in locations:
            raise corrupt(f"HEIF item {item} is located twice")
        if data_reference != 0:
            raise corrupt(f"HEIF item {item} has its data in another file")
        if method == _FILE_OFFSETS:
            limit, where = file_bytes, "the file"
        elif method == _IDAT_OFFSETS and idat_bytes is not None:
            limit, where = idat_bytes, "the idat box"
        elif method == _IDAT_OFFSETS:
            raise corrupt(f"HEIF item {item} has its data in an idat box there is not")
        else:
            raise corrupt(f"HEIF item {item} has construction method {method}, not supported")
        extents: list[tuple[int, int]] = []
        for _ in range(extent_count):
            fields.uint(index_size)
            start = base + fields.uint(offset_size)
            length = fields.uint(length_size)
            end = limit if length == 0 else start + length
            if start > limit or end > limit:
                raise corrupt(f"HEIF item {item} lies past the end of {where}")
            extents.append((start, end))
        locations[item] = ItemLocation(method, tuple(extents))
    return locations


def _derivations(reader: BoxReader, iref: Box | None) -> dict[int, tuple[int, ...]]:
    """item_ID -> the items it is derived from ('dimg' references), in order."""
    if iref is None:
        return {}
    entries_max = reader.limits.heif_entries_max
    id_bytes = 2 if _version(reader, iref) == 0 else 4
    head_bytes = id_bytes + 2
    references_total = 0
    derived_from: dict[int, tuple[int, ...]] = {}
    for dimg in iref.all(b"dimg"):
        head = Fields(reader.payload(dimg, head_bytes, "dimg"), "dimg")
        item, count = head.uint(id_bytes), head.uint(2)
        references_total += count
        if references_total > entries_max:
            raise corrupt(f"the HEIF has more than {entries_max} item references")
        fields = Fields(reader.payload(dimg, head_bytes + count * id_bytes, "dimg"), "dimg")
        fields.uint(head_bytes)
        if item in derived_from:
            raise corrupt(f"HEIF item {item} is derived twice")
        derived_from[item] = tuple(fields.uint(id_bytes) for _ in range(count))
    return derived_from


def _grid_shape(reader: BoxReader, location: ItemLocation, idat: Box | None) -> tuple[int, int]:
    """(rows, columns) of a grid item, from the first bytes of its data."""
    base = idat.body if location.method == _IDAT_OFFSETS and idat is not None else 0
    head = bytearray()
    for start, end in location.extents:
        take = min(end - start, _GRID_BYTES_MAX - len(head))
        head += reader.src.read(base + start, take)
    fields = Fields(memoryview(bytes(head)), "grid")
    version, flags = fields.uint(1), fields.uint(1)
    rows, columns = fields.uint(1) + 1, fields.uint(1) + 1
    side_bytes = 4 if flags & _GRID_WIDE_SIDES else 2
    fields.uint(2 * side_bytes)  # output width and height: present, whatever they say
    if version != 0:
        raise corrupt(f"the HEIF grid has an unknown version {version}")
    return rows, columns
