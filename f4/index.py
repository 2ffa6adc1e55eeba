"""A volume's f4 index: blob -> (stripe, block, offset, length, cookie), and stripe placement.

Written as INDEX_COPIES identical files on distinct nodes (replicated, not encoded); a
reader loads the copy with the highest generation whose checksum verifies. Rebuilds that
move a block write a new generation. Layout (little-endian; docs/formats/f4.md):

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


def index_nodes(store: BlockStore, volume: int) -> list[str]:
    """The nodes that hold a volume's index copies: INDEX_COPIES consecutive nodes."""
    nodes = store.nodes()
    first = volume % len(nodes)
    chosen = [nodes[(first + i) % len(nodes)] for i in range(min(INDEX_COPIES, len(nodes)))]
    return chosen


def write(store: BlockStore, index: VolumeIndex) -> None:
    """Writes every copy (each atomically). Copies on unreachable nodes are skipped, but at
    least one must be written."""
    raw = encode(index)
    written = 0
    for node in index_nodes(store, index.volume):
        try:
            store.put(node, index_name(index.volume), [raw])
            written += 1
        except BlockUnreachable:
            continue
    if not written:
        raise IndexUnavailable(f"no index copy of volume {index.volume} could be written")


def load(store: BlockStore, volume: int) -> VolumeIndex:
    """The newest verified copy; IndexUnavailable when none is readable."""
    best: VolumeIndex | None = None
    for node in index_nodes(store, volume):
        try:
            candidate = decode(store.get(node, index_name(volume)))
        except (BlockMissing, BlockUnreachable, F4FormatError):
            continue
        if candidate.volume == volume and (best is None or candidate.generation > best.generation):
            best = candidate
    if best is None:
        raise IndexUnavailable(f"no readable index copy of volume {volume}")
    return best


def newest_generation(store: BlockStore, volume: int) -> int | None:
    """The highest generation any readable copy's header names (a 32-byte read per copy, no
    decode): when it equals the loaded index's, reloading would find nothing newer."""
    newest: int | None = None
    for node in index_nodes(store, volume):
        try:
            raw = store.get_range(node, index_name(volume), 0, _HEADER.size)
            magic, _version, copy_volume, generation, *_ = _HEADER.unpack_from(raw)
        except (BlockMissing, BlockUnreachable, F4FormatError, struct.error):
            continue
        if magic == MAGIC and copy_volume == volume and (newest is None or generation > newest):
            newest = generation
    return newest
