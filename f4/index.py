"""A volume's f4 index: blob -> (stripe, block, offset, length, cookie), and stripe placement.

Written as INDEX_COPIES identical files (replicated, not encoded) on the volume's placement
(`index_nodes`): nodes in INDEX_COPIES distinct racks when the cell has that many, else
distinct nodes; a pure function of the volume id, the node list, the racks and the nodes
that are down. Readers and writers find it by walking it (`walk_placement`): a node that
does not answer is passed over and the walk's next node by the same rule holds its copy, so
a volume whose node is lost for good has its 3 copies again after a rebuild. A reader
loads the copy with the highest generation whose checksum verifies; it tries the placement
first and every other node when a placed copy is missing, unreadable or behind (copies
written under another placement, before a rebuild moved them, or on a replacement while a
node was down, are still found; a node back with a stale copy loses to the newer
generation). Rebuilds that move a block write a new generation. Layout (little-endian;
docs/formats/f4.md):

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
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Final, TypeVar

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
T = TypeVar("T")

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


def index_nodes(
    store: BlockStore,
    volume: int,
    *,
    racks: RackOf | None = None,
    down: Collection[str] = (),
) -> list[str]:
    """The nodes that should hold a volume's index copies. Walking the node list from node
    (volume mod n), each node whose rack holds no copy yet, until INDEX_COPIES are chosen;
    with fewer racks than that, the walk's next distinct nodes fill up. Without racks every
    node is a rack of its own: INDEX_COPIES consecutive nodes (also the result whenever
    consecutive nodes already sit in distinct racks). `down`: nodes the walk passes over
    (lost, or not answering); the walk still starts at (volume mod n) of the whole list, so
    the copies on the other nodes stay where they were and only a down node's copy moves,
    to the walk's next node by the same rule."""
    nodes = store.nodes()
    first = volume % len(nodes)
    walk = [n for n in nodes[first:] + nodes[:first] if n not in down]
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


def walk_placement(
    store: BlockStore,
    volume: int,
    probe: Callable[[str], T | None],
    *,
    racks: RackOf | None = None,
) -> tuple[dict[str, T | None], set[str]]:
    """The placement over the nodes that answer, found by walking it: `probe` is called on
    each placed node; a node whose probe raises BlockUnreachable is down, and the placement
    is taken again without it (`index_nodes(down=...)`), its replacement probed in turn.
    Returns (placed node -> the probe's result, None when the copy there is missing or
    unreadable, in placement order; the down nodes met). Every reader and writer of index
    copies uses this rule, so a copy written while a node was down is the first one read
    while it still is."""
    down: set[str] = set()
    seen: dict[str, T | None] = {}
    while True:
        placed = index_nodes(store, volume, racks=racks, down=down)
        fresh = [n for n in placed if n not in seen]
        if not fresh:
            return {n: seen[n] for n in placed}, down
        for node in fresh:
            try:
                seen[node] = probe(node)
            except BlockUnreachable:
                down.add(node)
                seen[node] = None
            except (BlockMissing, F4FormatError, struct.error):
                seen[node] = None


def write(store: BlockStore, index: VolumeIndex, *, racks: RackOf | None = None) -> None:
    """Writes every copy of the placement over the nodes that answer (each atomically): a
    node that does not answer is passed over and the walk's next node takes its copy
    (`walk_placement`). At least one must be written. Copies elsewhere are left alone
    (`remove_misplaced` takes them away once the placement is complete)."""
    raw = encode(index)

    def put(node: str) -> bool:
        store.put(node, index_name(index.volume), [raw])
        return True

    written, _down = walk_placement(store, index.volume, put, racks=racks)
    if not any(written.values()):
        raise IndexUnavailable(f"no index copy of volume {index.volume} could be written")


def _read_copy(store: BlockStore, volume: int, node: str) -> VolumeIndex | None:
    copy = decode(store.get(node, index_name(volume)))
    return copy if copy.volume == volume else None


def _read_copies(store: BlockStore, volume: int, nodes: list[str]) -> list[VolumeIndex]:
    copies = []
    for node in nodes:
        try:
            copy = _read_copy(store, volume, node)
        except (BlockMissing, BlockUnreachable, F4FormatError):
            continue
        if copy is not None:
            copies.append(copy)
    return copies


def placed_copies(
    store: BlockStore, volume: int, *, racks: RackOf | None = None
) -> dict[str, VolumeIndex | None]:
    """The copies on the placement over the nodes that answer (`walk_placement`): placed
    node -> its verified copy, None when missing or unreadable."""
    return walk_placement(store, volume, lambda n: _read_copy(store, volume, n), racks=racks)[0]


def load(store: BlockStore, volume: int, *, racks: RackOf | None = None) -> VolumeIndex:
    """The newest verified copy; IndexUnavailable when none is readable. Reads the copies
    of the placement over the nodes that answer (`walk_placement`: a down node's copy is
    looked for on its replacement); when one of them is missing, unreadable or of an older
    generation than another, reads every other answering node's copy too (a copy written
    under another placement, or on a replacement before the node came back)."""
    placed, down = walk_placement(
        store, volume, lambda n: _read_copy(store, volume, n), racks=racks
    )
    copies = [c for c in placed.values() if c is not None]
    if len(copies) < len(placed) or len({c.generation for c in copies}) > 1:
        others = [n for n in store.nodes() if n not in placed and n not in down]
        copies += _read_copies(store, volume, others)
    if not copies:
        raise IndexUnavailable(f"no readable index copy of volume {volume}")
    return max(copies, key=lambda c: c.generation)


def peek_generation(store: BlockStore, volume: int, node: str) -> int | None:
    """The generation a copy's header names (a 32-byte read, no decode), None when the
    copy is missing or not a copy of `volume`; raises BlockUnreachable."""
    raw = store.get_range(node, index_name(volume), 0, _HEADER.size)
    magic, _version, copy_volume, generation, *_ = _HEADER.unpack_from(raw)
    if magic != MAGIC or copy_volume != volume:
        return None
    return int(generation)


def _peek_generation(store: BlockStore, volume: int, node: str) -> int | None:
    """peek_generation, None for any fault."""
    try:
        return peek_generation(store, volume, node)
    except (BlockMissing, BlockUnreachable, F4FormatError, struct.error):
        return None


def newest_generation(store: BlockStore, volume: int, *, racks: RackOf | None = None) -> int | None:
    """The highest generation any readable copy's header names: when it equals the loaded
    index's, reloading would find nothing newer. Peeks at the copies of the placement over
    the nodes that answer (a 32-byte read each); only when none of them answers, at every
    other node's."""
    placed, down = walk_placement(
        store, volume, lambda n: peek_generation(store, volume, n), racks=racks
    )
    found = [g for g in placed.values() if g is not None]
    if not found:
        others = (n for n in store.nodes() if n not in placed and n not in down)
        found = [g for g in (_peek_generation(store, volume, n) for n in others) if g is not None]
    return max(found, default=None)


def remove_misplaced(store: BlockStore, index: VolumeIndex, *, racks: RackOf | None = None) -> int:
    """Removes the copies on nodes outside the placement over the nodes that answer
    (`walk_placement`) whose generation is not newer than `index`'s; the caller has checked
    that every placed copy is of `index`'s generation. Unreachable nodes are skipped (a
    down node's copy is removed, or superseded, after it answers again). Returns how many
    were removed."""
    placed = walk_placement(
        store, index.volume, lambda n: peek_generation(store, index.volume, n), racks=racks
    )[0]
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
