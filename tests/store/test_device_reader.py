from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from store.device_reader import DeviceReader
from store.read_pool import ReadPool
from store.storage import OsVolumeFile
from tests.store.twin import TwinStorage


async def test_reads_through_io_uring_return_the_bytes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "f"
    blob = os.urandom(1 << 20)
    path.write_bytes(blob)
    f = OsVolumeFile(str(path), create=False)
    f.evict()
    reader = DeviceReader(8)
    try:
        chunks = await asyncio.gather(
            *(reader.read(f, 20_000, off) for off in range(0, 900_000, 37_000))
        )
        assert reader.backend == "io_uring"
        for off, chunk in zip(range(0, 900_000, 37_000), chunks, strict=True):
            assert chunk == blob[off : off + 20_000]
        # A read running past the end of the file comes back short, not padded.
        assert await reader.read(f, 100, len(blob) - 10) == blob[-10:]
    finally:
        reader.close()
        f.close()


async def test_files_without_a_descriptor_are_read_on_threads() -> None:
    twin = TwinStorage()
    f = twin.open("x", create=True)
    f.write([b"abcdef" * 1000], 0)
    reader = DeviceReader(4)
    try:
        assert await reader.read(f, 6, 6) == b"abcdef"
    finally:
        reader.close()


async def test_thread_fallback_when_io_uring_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    f = OsVolumeFile(str(path), create=False)
    reader = DeviceReader(2, use_uring=False)
    try:
        assert reader.backend == "threads"
        assert await reader.read(f, 4, 3) == b"3456"
    finally:
        reader.close()
        f.close()


async def test_read_pool_delivers_results_and_errors_in_batches() -> None:
    pool = ReadPool(3)
    try:
        results = await asyncio.gather(*(pool.submit(pow, 2, n) for n in range(200)))
        assert results == [2**n for n in range(200)]
        with pytest.raises(ZeroDivisionError):
            await pool.submit(divmod, 1, 0)
    finally:
        pool.shutdown()
