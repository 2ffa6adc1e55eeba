"""The needle scan and the migration's needle reads into one reused buffer (a file with
`read_into`) give exactly what reading fresh bytes for every chunk gives: the same items,
the same bytes, the same damage, whatever the chunk size against the needles' sizes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from f4.needle_source import NeedleSource
from store import needle
from store.errors import CorruptNeedle
from store.needle_scan import Damage, ScannedNeedle, scan
from store.storage import OsVolumeFile
from tests.f4.helpers import random_blobs, sealed_volume


class _FreshReads:
    """The same file without read_into: every chunk read as new bytes."""

    def __init__(self, file: OsVolumeFile) -> None:
        self._file = file

    def read(self, length: int, offset: int) -> bytes:
        return self._file.read(length, offset)

    def size(self) -> int:
        return self._file.size()

    def close(self) -> None:
        pass


def _write_needles(path: Path, sizes: list[int], seed: int) -> list[int]:
    """A file of needles of `sizes` (from offset 0); their offsets."""
    rng = random.Random(seed)
    offsets, parts, at = [], [], 0
    for i, size in enumerate(sizes):
        raw = needle.encode(
            key=i + 1, alt_key=7, cookie=rng.getrandbits(64), data=rng.randbytes(size)
        )
        offsets.append(at)
        parts.append(raw)
        at += len(raw)
    path.write_bytes(b"".join(parts))
    return offsets


def _items(file: object, end: int, chunk_bytes: int) -> list[tuple[object, ...]]:
    """Every item, its bytes copied at once (a reused buffer holds them only until then)."""
    out: list[tuple[object, ...]] = []
    for item in scan(file, 0, end, chunk_bytes=chunk_bytes):  # type: ignore[arg-type]
        if isinstance(item, ScannedNeedle):
            out.append(("needle", item.offset, item.header, bytes(item.raw)))
        else:
            assert isinstance(item, Damage)
            out.append(("damage", item.offset, item.broken, item.message, item.length))
    return out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 9000), min_size=1, max_size=12),
    chunk_bytes=st.sampled_from([64, 100, 1024, 4096, 65536]),
    flip=st.none() | st.integers(0, 10**6),
    cut=st.none() | st.integers(1, 200),
)
def test_a_scan_into_one_buffer_sees_what_fresh_reads_see(
    tmp_path: Path, sizes: list[int], chunk_bytes: int, flip: int | None, cut: int | None
) -> None:
    path = tmp_path / "v.dat"
    _write_needles(path, sizes, seed=len(sizes))
    raw = bytearray(path.read_bytes())
    if flip is not None:  # a bit flipped somewhere: corrupt data, or framing lost
        raw[flip % len(raw)] ^= 0x10
    if cut is not None:  # a torn tail
        del raw[max(0, len(raw) - cut) :]
    path.write_bytes(raw)
    file = OsVolumeFile(str(path), create=False)
    try:
        end = file.size()
        reused = _items(file, end, chunk_bytes)
        fresh = _items(_FreshReads(file), end, chunk_bytes)
    finally:
        file.close()
    assert reused == fresh
    if flip is None and cut is None:
        assert [i[0] for i in reused] == ["needle"] * len(sizes)


def test_read_view_is_read_and_checks_alike(tmp_path: Path) -> None:
    vols = tmp_path / "vols"
    vols.mkdir()
    blobs = random_blobs(random.Random(3), 40, size_max=70_000)
    sealed_volume(vols, 5, blobs)
    source = NeedleSource(vols, 5)
    try:
        refs = source.live_needles()
        assert len(refs) == len(blobs)
        # Largest first, then smaller: the view of a shorter needle in the larger buffer.
        for ref in sorted(refs, key=lambda r: -r.data_size):
            expected = source.read(ref)
            assert bytes(source.read_view(ref)) == expected == blobs[(ref.key, ref.alt_key)][1]
        # A flipped data byte fails both checks alike.
        victim = max(refs, key=lambda r: r.data_size)
        dat = next(vols.glob("*.dat"))
        with dat.open("r+b") as f:
            at = victim.offset + needle.HEADER_BYTES + victim.data_size // 2
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 1]))
        with pytest.raises(CorruptNeedle):
            source.read(victim)
        with pytest.raises(CorruptNeedle):
            source.read_view(victim)
    finally:
        source.close()
