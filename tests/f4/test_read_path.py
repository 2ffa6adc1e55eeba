"""The name node's read path off the event loop: page-cache-only reads on a storage node
(fall back to its disk threads when the device would be waited for) and batched key
lookups (nothing cached: a delete by any connection is seen by the next lookup)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from bench.peers.pagecache import evict
from f4 import sidecar
from f4.blob import BlobId, BlobKey
from f4.errors import BlockCorrupt, BlockMissing
from f4.key_lookups import KeyLookups
from f4.keystore import KeyStore
from f4.local_block_store import WouldBlock, read_cached, read_exact
from f4.node_disk import NodeDisks
from tests.f4.helpers import put_block_with_sidecar

BLOCK = "v1.s0.b0.blk"


def _evict(path: Path) -> None:
    assert evict(path), f"{path} stayed in the page cache"


def test_a_cached_read_never_waits_for_the_device(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = random.Random(1).randbytes(1 << 20)
    path.write_bytes(data)
    assert read_cached(path, "f", 4096, 8192) == data[4096 : 4096 + 8192]
    _evict(path)
    with pytest.raises(WouldBlock):
        read_cached(path, "f", 4096, 8192)
    assert read_exact(path, "f", 4096, 8192) == data[4096 : 4096 + 8192]  # the fallback
    # Past the end: the cached read cannot tell a short file, the blocking one says missing.
    with pytest.raises(WouldBlock):
        read_cached(path, "f", len(data) - 10, 20)
    with pytest.raises(BlockMissing):
        read_exact(path, "f", len(data) - 10, 20)
    with pytest.raises(BlockMissing):
        read_cached(tmp_path / "absent", "absent", 0, 1)


def test_a_storage_node_reads_checked_ranges_cached_or_not_alike(tmp_path: Path) -> None:
    chunk = sidecar.CHUNK_BYTES
    data = random.Random(2).randbytes(40 * chunk)
    put_block_with_sidecar(tmp_path, "n00", BLOCK, data)
    disks = NodeDisks(tmp_path, ["n00"])
    want = data[8 * chunk : 12 * chunk]
    assert disks.read_checked("n00", BLOCK, 8 * chunk, 4 * chunk, nowait=True) == want
    _evict(tmp_path / "n00" / BLOCK)
    with pytest.raises(WouldBlock):
        disks.read_checked("n00", BLOCK, 8 * chunk, 4 * chunk, nowait=True)
    assert disks.read_checked("n00", BLOCK, 8 * chunk, 4 * chunk) == want
    # Corruption is found on either path.
    path = tmp_path / "n00" / BLOCK
    raw = bytearray(path.read_bytes())
    raw[9 * chunk] ^= 1
    path.write_bytes(raw)
    for nowait in (True, False):
        with pytest.raises(BlockCorrupt):
            disks.read_checked("n00", BLOCK, 8 * chunk, 4 * chunk, nowait=nowait)


def _blobs(n: int) -> list[tuple[BlobId, BlobKey]]:
    return [(BlobId(3, i, 1), BlobKey.new()) for i in range(n)]


def test_key_lookups_batch_and_see_every_delete(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.db")
    items = _blobs(40)
    keys.put_many(items)
    other = KeyStore(tmp_path / "keys.db")  # another process's connection (the reconcile)

    async def go() -> None:
        lookups = KeyLookups(keys)
        try:
            # Lookups queued while the key store is busy are read together afterwards.
            with keys._lock:
                waiting = [lookups.get(b) for b, _ in items[:20]]
                await asyncio.sleep(0.05)  # the thread takes the first and waits for the lock
            got = await asyncio.gather(*waiting)
            assert got == [k for _, k in items[:20]]
            assert lookups.lookups == 20 and lookups.batches <= 2
            assert await lookups.get(BlobId(3, 999, 1)) is None
            # Nothing is remembered: a key another connection deletes is absent at once.
            assert await lookups.get(items[25][0]) == items[25][1]
            assert other.delete([items[25][0]]) == 1
            assert await lookups.get(items[25][0]) is None
            assert await lookups.get(items[26][0]) == items[26][1]
            # A failing key store fails every waiter with its error.
            keys.close()
            with pytest.raises(sqlite3.ProgrammingError):
                await lookups.get(items[30][0])
        finally:
            lookups.close()
        assert lookups._thread is None

    asyncio.run(go())
    other.close()
