"""Needles put on a node and then deleted or damaged on disk, for the tests that compare two
read paths on the same bytes (test_native.py, test_native_fast_path.py)."""

from __future__ import annotations

import os
from pathlib import Path

from store import needle
from store.node import StoreNode
from store.volume import UNIT

# Where a damaged needle is hit: header (magic, flags, cookie, key, size), data, footer.
DAMAGES = ("none", "magic", "flags", "key", "size", "data", "footer")

# (alt_key, data, one of DAMAGES, deleted afterwards)
Item = tuple[int, bytes, str, bool]


async def put_damaged(
    node: StoreNode, dat: Path, vid: int, key: int, cookie: int, items: list[Item]
) -> None:
    """Puts each item's needle under (key, alt_key), deletes it if asked, and flips one bit
    of the byte its damage names in the volume file `dat`."""
    for alt, data, damage, delete in items:
        await node.put(vid, key, alt, cookie, data)
        loc = node.volume(vid).generation.map.get(key, alt)
        assert loc is not None
        at = loc[0] * UNIT
        if delete:
            await node.delete(vid, key, alt)
        where = {
            "magic": at,
            "flags": at + needle.FLAGS_OFFSET,
            "key": at + 16,
            "size": at + 28,
            "data": at + needle.HEADER_BYTES + len(data) // 2,
            "footer": at + needle.HEADER_BYTES + len(data) + 2,
        }.get(damage)
        if where is not None and not (damage == "data" and not data):
            fd = os.open(dat, os.O_RDWR)
            try:
                byte = os.pread(fd, 1, where)
                os.pwrite(fd, bytes([byte[0] ^ 0x10]), where)
            finally:
                os.close(fd)
