"""Layout, sidecar, encrypted blob and index formats."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from f4 import index as index_file
from f4 import layout, sidecar
from f4.blob import MAGIC, OVERHEAD_BYTES, BlobId, BlobKey, open_sealed, seal, seal_into
from f4.errors import (
    BlobCorrupt,
    BlobTooLarge,
    BlockCorrupt,
    F4FormatError,
    IndexUnavailable,
)
from f4.local_block_store import LocalBlockStore


@given(st.lists(st.integers(1, 8192), max_size=200), st.sampled_from([8192, 16384]))
def test_plan_packs_without_spanning_or_overlap(sizes: list[int], block_bytes: int) -> None:
    placements, shapes = layout.plan(sizes, block_bytes)
    assert [p.length for p in placements] == sizes
    used: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for p in placements:
        shape = shapes[p.stripe]
        assert 0 <= p.block < 10
        assert p.offset + p.length <= shape.block_length <= block_bytes
        assert shape.block_length % layout.ALIGN_BYTES == 0
        used.setdefault((p.stripe, p.block), []).append((p.offset, p.offset + p.length))
    for spans in used.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert layout.plan(sizes, block_bytes) == (placements, shapes)  # a pure function


def test_plan_is_first_fit_in_order() -> None:
    placements, shapes = layout.plan([3000, 3000, 1000, 3000] + [4096] * 10, 4096)
    assert [(p.stripe, p.block, p.offset) for p in placements[:4]] == [
        (0, 0, 0),
        (0, 1, 0),
        (0, 0, 3000),
        (0, 2, 0),
    ]
    assert len(shapes) == 2


def test_small_last_stripe_is_not_padded_to_full_blocks() -> None:
    _, shapes = layout.plan([100] * 10, 1 << 30)
    assert shapes == [layout.StripeShape(layout.ALIGN_BYTES)]
    with pytest.raises(BlobTooLarge):
        layout.plan([8193], 8192)


def test_sidecar_round_trip_and_corruption() -> None:
    data = random.Random(1).randbytes(5000)
    builder = sidecar.SidecarBuilder()
    builder.update(data[:2048])
    builder.update(data[2048:])
    raw = builder.encode()
    assert len(raw) == sidecar.file_length(5000)
    sc = sidecar.decode(raw)
    sc.check(data)
    sc.check(data[1024:3072], 1024)
    bad = bytearray(data)
    bad[3000] ^= 1
    sc.check(bytes(bad[:2048]))  # the damaged chunk is not read
    with pytest.raises(BlockCorrupt):
        sc.check(bytes(bad[2048:3072]), 2048)
    # As a checked read compares them: the sums as stored, packed, one per chunk.
    packed = sidecar.pack_sums(sc.sums)
    sidecar.check_packed(data, 0, packed, sidecar.CHUNK_BYTES)
    sidecar.check_packed(data[1024:3072], 1024, packed[8:24], sidecar.CHUNK_BYTES)
    with pytest.raises(BlockCorrupt, match="block offset 2048"):
        sidecar.check_packed(bytes(bad), 0, packed, sidecar.CHUNK_BYTES)
    with pytest.raises(BlockCorrupt):  # a sum short
        sidecar.check_packed(data[:3072], 0, packed[:16], sidecar.CHUNK_BYTES)
    with pytest.raises(BlockCorrupt):  # a sum too many
        sidecar.check_packed(data[:2048], 0, packed[:24], sidecar.CHUNK_BYTES)
    with pytest.raises(BlockCorrupt):  # more chunks than sums
        sc.check(data + bytes(1024))
    flipped = bytearray(raw)
    flipped[30] ^= 1
    with pytest.raises(F4FormatError):
        sidecar.decode(bytes(flipped))


def test_sealed_blob_binds_its_id_and_key() -> None:
    key = BlobKey.new()
    blob = BlobId(7, 2**64 - 1, 0x101)
    record = seal(key, blob, b"photo bytes")
    assert len(record) == len(b"photo bytes") + OVERHEAD_BYTES
    assert b"photo bytes" not in record
    assert open_sealed(key, blob, record) == b"photo bytes"
    assert seal(key, blob, b"photo bytes") == record  # the stored nonce: re-sealing is stable
    with pytest.raises(BlobCorrupt):
        open_sealed(key, BlobId(7, 2**64 - 1, 0x102), record)
    with pytest.raises(BlobCorrupt):
        open_sealed(BlobKey(BlobKey.new().secret, key.nonce), blob, record)
    tampered = bytearray(record)
    tampered[20] ^= 1
    with pytest.raises(BlobCorrupt):
        open_sealed(key, blob, bytes(tampered))


def test_sealing_in_place_writes_the_documented_record() -> None:
    key = BlobKey.new()
    blob = BlobId(7, 12, 0x101)
    plaintext = random.Random(2).randbytes(5000)
    block = bytearray(b"\xee" * 6000)
    seal_into(key, blob, plaintext, memoryview(block)[100 : 100 + 5000 + OVERHEAD_BYTES])
    ciphertext = AESGCM(key.secret).encrypt(key.nonce, plaintext, MAGIC + blob.packed())
    record = MAGIC + key.nonce + ciphertext
    assert block[100 : 100 + len(record)] == record == seal(key, blob, plaintext)
    assert block[:100] == b"\xee" * 100 and block[100 + len(record) :] == b"\xee" * 868
    with pytest.raises(ValueError):
        seal_into(key, blob, plaintext, bytearray(len(record) - 1))


def _index(generation: int) -> index_file.VolumeIndex:
    nodes = tuple(f"n{i}" for i in range(14))
    return index_file.VolumeIndex(
        5,
        generation,
        (index_file.StripeInfo(4096, nodes), index_file.StripeInfo(8192, nodes[::-1])),
        {(2**64 - 1, 7): index_file.Entry(1, 9, 4000, 96, 2**64 - 2)},
    )


def test_index_round_trip_copies_and_fallback(tmp_path: Path) -> None:
    store = LocalBlockStore(tmp_path, [f"n{i}" for i in range(14)])
    idx = _index(1)
    assert index_file.decode(index_file.encode(idx)) == idx
    index_file.write(store, idx)
    nodes = index_file.index_nodes(store, 5)
    assert len(set(nodes)) == 3
    assert all(store.exists(n, "v5.f4idx") for n in nodes)
    index_file.write(store, _index(2))
    # The newest copy is damaged and another lost: the remaining newest verified one wins.
    raw = bytearray(store.get(nodes[0], "v5.f4idx"))
    raw[40] ^= 1
    store.put(nodes[0], "v5.f4idx", [bytes(raw)])
    store.delete(nodes[1], "v5.f4idx")
    assert index_file.load(store, 5) == _index(2)
    store.delete(nodes[2], "v5.f4idx")
    with pytest.raises(IndexUnavailable):
        index_file.load(store, 5)
