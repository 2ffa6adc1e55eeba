"""A volume's f4 index: blob -> (stripe, block, offset, length, cookie), and stripe placement.

Written as INDEX_COPIES identical files (replicated, not encoded) on the volume's placement
(`index_nodes`): nodes in INDEX_COPIES distinct racks when the cell has that many, else
distinct nodes; a pure function of the volume id, the node list and the racks. A reader
loads the copy with the highest generation whose checksum verifies; it tries the placement
first and every other node when a placed copy is missing, unreadable or behind (copies
written under another placement, before a rebuild moved them, are still found). Rebuilds
that move a block write a new generation. Layout (little-endian; docs/formats/f4.md):

    header   32 B  magic "F4IX" | version u16 | 2x0 | volume u32 | generation u64 |
                   stripes u32 | entries u32 | nodes u32
    nodes          per node: length u8 | UTF-8 name
    stripes  36 B  each: block_length u64 | 14 x node number u16 (block 0..13)
    entries  40 B  each: key u64 | alt_key u32 | stripe u32 | block u8 | 3x0 | offset u64 |
                   length u32 (sealed record bytes) | cookie u64
    trailer   8 B  xxh3_64 of everything before
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

import xxhash

from f4.block_store import BlockStore, index_name
from f4.erasure import STRIPE_BLOCKS
from f4.errors import BlockMissing, BlockUnreachable, F4FormatError, IndexUnavailable

MAGIC: Final = b"F4IX"
VERSION: Final = 1
INDEX_COPIES: Final = 3

_HEADER = struct.Struct("<4sH2xIQIII")
_STRIPE = struct.Struct(f"<Q{STRIPE_BLOCKS}H")
_ENTRY = struct.Struct("<QIIB3xQIQ")
RackOf = Callable[[str], str]  # node name -> rack name (F4Config.rack_of)

assert _HEADER.size == 32 and _STRIPE.size == 36 and _ENTRY.size == 40


@dataclass(frozen=True, slots=True)
class Entry:
    stripe: int
    block: int
    offset: int
    length: int  # sealed record bytes
    cookie: int


@dataclass(frozen=True, slots=True)
class StripeInfo:
    block_length: int
    nodes: tuple[str, ...]  # node of block 0..13


@dataclass(frozen=True)
class VolumeIndex:
    volume: int
    generation: int
    stripes: tuple[StripeInfo, ...]
    entries: dict[tuple[int, int], Entry] = field(default_factory=dict)

    def with_block_moved(self, stripe: int, block: int, node: str) -> VolumeIndex:
        info = self.stripes[stripe]
        nodes = (*info.nodes[:block], node, *info.nodes[block + 1 :])
        stripes = (*self.stripes[:stripe], replace(info, nodes=nodes), *self.stripes[stripe + 1 :])
        return VolumeIndex(self.volume, self.generation + 1, stripes, self.entries)


def encode(index: VolumeIndex) -> bytes:
    names = sorted({n for s in index.stripes for n in s.nodes})
    number = {n: i for i, n in enumerate(names)}
    out = bytearray(
        _HEADER.pack(
            MAGIC,
            VERSION,
            index.volume,
            index.generation,
            len(index.stripes),
            len(index.entries),
            len(names),
        )
    )
    for n in names:
        raw = n.encode()
        if not 0 < len(raw) < 256:
            raise ValueError(f"node name {n!r} must be 1..255 bytes")
        out += bytes([len(raw)]) + raw
    for s in index.stripes:
        out += _STRIPE.pack(s.block_length, *(number[n] for n in s.nodes))
    for (key, alt), e in sorted(index.entries.items()):
        out += _ENTRY.pack(key, alt, e.stripe, e.block, e.offset, e.length, e.cookie)
    out += xxhash.xxh3_64_intdigest(bytes(out)).to_bytes(8, "little")
    return bytes(out)


def decode(raw: bytes) -> VolumeIndex:
    if len(raw) < _HEADER.size + 8:
        raise F4FormatError("short index")
    if xxhash.xxh3_64_intdigest(raw[:-8]) != int.from_bytes(raw[-8:], "little"):
        raise F4FormatError("index checksum mismatch")
    magic, version, volume, generation, n_stripes, n_entries, n_nodes = _HEADER.unpack_from(raw)
    if magic != MAGIC or version != VERSION:
        raise F4FormatError("bad index header")
    pos = _HEADER.size
    names = []
    for _ in range(n_nodes):
        size = raw[pos]
        names.append(raw[pos + 1 : pos + 1 + size].decode())
        pos += 1 + size
    stripes = []
    for _ in range(n_stripes):
        block_length, *numbers = _STRIPE.unpack_from(raw, pos)
        stripes.append(StripeInfo(block_length, tuple(names[i] for i in numbers)))
        pos += _STRIPE.size
    entries = {}
    for _ in range(n_entries):
        key, alt, stripe, block, offset, length, cookie = _ENTRY.unpack_from(raw, pos)
        entries[(key, alt)] = Entry(stripe, block, offset, length, cookie)
        pos += _ENTRY.size
    if pos != len(raw) - 8:
        raise F4FormatError("index length does not match its counts")
    return VolumeIndex(volume, generation, tuple(stripes), entries)


def index_nodes(store: BlockStore, volume: int, *, racks: RackOf | None = None) -> list[str]:
    """The nodes that should hold a volume's index copies. Walking the node list from node
    (volume mod n), each node whose rack holds no copy yet, until INDEX_COPIES are chosen;
    with fewer racks than that, the walk's next distinct nodes fill up. Without racks every
    node is a rack of its own: INDEX_COPIES consecutive nodes (also the result whenever
    consecutive nodes already sit in distinct racks)."""
    nodes = store.nodes()
    first = volume % len(nodes)
    walk = nodes[first:] + nodes[:first]
    rack_of = racks or str
    chosen: list[str] = []
    used: set[str] = set()
    for node in walk:
        if len(chosen) == INDEX_COPIES:
            break
        rack = rack_of(node)
        if rack not in used:
            chosen.append(node)
            used.add(rack)
    for node in walk:
        if len(chosen) == INDEX_COPIES:
            break
        if node not in chosen:
            chosen.append(node)
    return chosen


def write(store: BlockStore, index: VolumeIndex, *, racks: RackOf | None = None) -> None:
    """Writes every copy of the placement (each atomically). Copies on unreachable nodes are
    skipped, but at least one must be written. Copies elsewhere are left alone
    (`remove_misplaced` takes them away once the placement is complete)."""
    raw = encode(index)
    written = 0
    for node in index_nodes(store, index.volume, racks=racks):
        try:
            store.put(node, index_name(index.volume), [raw])
            written += 1
        except BlockUnreachable:
            continue
    if not written:
        raise IndexUnavailable(f"no index copy of volume {index.volume} could be written")


def _read_copies(store: BlockStore, volume: int, nodes: list[str]) -> list[VolumeIndex]:
    copies = []
    for node in nodes:
        try:
            copy = decode(store.get(node, index_name(volume)))
        except (BlockMissing, BlockUnreachable, F4FormatError):
            continue
        if copy.volume == volume:
            copies.append(copy)
    return copies


def load(store: BlockStore, volume: int, *, racks: RackOf | None = None) -> VolumeIndex:
    """The newest verified copy; IndexUnavailable when none is readable. Reads the
    placement's copies; when one of them is missing, unreadable or of an older generation
    than another, reads every other node's copy too."""
    placed = index_nodes(store, volume, racks=racks)
    copies = _read_copies(store, volume, placed)
    if len(copies) < len(placed) or len({c.generation for c in copies}) > 1:
        copies += _read_copies(store, volume, [n for n in store.nodes() if n not in placed])
    if not copies:
        raise IndexUnavailable(f"no readable index copy of volume {volume}")
    return max(copies, key=lambda c: c.generation)


def _peek_generation(store: BlockStore, volume: int, node: str) -> int | None:
    """The generation a copy's header names (a 32-byte read, no decode), or None."""
    try:
        raw = store.get_range(node, index_name(volume), 0, _HEADER.size)
        magic, _version, copy_volume, generation, *_ = _HEADER.unpack_from(raw)
    except (BlockMissing, BlockUnreachable, F4FormatError, struct.error):
        return None
    if magic != MAGIC or copy_volume != volume:
        return None
    return int(generation)


def newest_generation(store: BlockStore, volume: int, *, racks: RackOf | None = None) -> int | None:
    """The highest generation any readable copy's header names: when it equals the loaded
    index's, reloading would find nothing newer. Peeks at the placement's copies (a 32-byte
    read each); only when none of them answers, at every other node's."""
    placed = index_nodes(store, volume, racks=racks)
    found = [g for g in (_peek_generation(store, volume, n) for n in placed) if g is not None]
    if not found:
        others = (n for n in store.nodes() if n not in placed)
        found = [g for g in (_peek_generation(store, volume, n) for n in others) if g is not None]
    return max(found, default=None)


def remove_misplaced(store: BlockStore, index: VolumeIndex, *, racks: RackOf | None = None) -> int:
    """Removes the copies on nodes outside the placement whose generation is not newer than
    `index`'s; the caller has checked that every placed copy is of `index`'s generation.
    Unreachable nodes are skipped. Returns how many were removed."""
    placed = index_nodes(store, index.volume, racks=racks)
    removed = 0
    for node in store.nodes():
        if node in placed or not store.exists(node, index_name(index.volume)):
            continue
        generation = _peek_generation(store, index.volume, node)
        if generation is not None and generation > index.generation:
            continue
        try:
            store.delete(node, index_name(index.volume))
            removed += 1
        except BlockUnreachable:
            continue
    return removed
