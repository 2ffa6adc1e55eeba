from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from store import needle, volume_read
from store.errors import NeedleNotFound, NeedleTooLarge, QueueFull, VolumeFull, VolumeNotWritable
from store.storage import OsStorage
from store.volume import Volume, data_name, index_name
from store.volume_checking import verify
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume, open_volume
from store.volume_state import Mode, Reason, read_only, sealed
from store.volume_write import wait_idle
from tests.store.twin import TwinStorage


def _read(v: Volume, key: int, alt: int = 0, cookie: int = 7) -> bytes:
    return bytes(volume_read.read(v, key, alt, cookie).data)


def test_put_get_round_trip(volume: Volume) -> None:
    r = volume.put(11, 3, 7, b"hello").result()
    assert r.offset == 64 and r.length == needle.needle_length(5)
    assert _read(volume, 11, 3) == b"hello"
    got = volume_read.read_cached(volume, 11, 3, 7)
    assert got is not None and bytes(got.data) == b"hello"
    assert got.checksum == r.checksum


def test_wrong_cookie_answers_exactly_like_an_absent_needle(volume: Volume) -> None:
    volume.put(11, 0, 7, b"secret").result()
    with pytest.raises(NeedleNotFound) as wrong:
        volume_read.read(volume, 11, 0, 8)
    with pytest.raises(NeedleNotFound) as absent:
        volume_read.read(volume, 12, 0, 7)
    assert type(wrong.value) is type(absent.value)
    assert str(wrong.value) == str(absent.value)


def test_overwrite_newest_wins_and_counts_garbage(volume: Volume) -> None:
    volume.put(5, 0, 7, b"a" * 1000).result()
    volume.put(5, 0, 7, b"b" * 10).result()
    assert _read(volume, 5) == b"b" * 10
    st = volume.statistics()
    assert st.needles_live == 1
    assert st.garbage_bytes == needle.needle_length(1000)


def test_delete_is_durable_and_reads_404(volume: Volume, os_storage: OsStorage) -> None:
    volume.put(5, 0, 7, b"a").result()
    volume.put(5, 1, 7, b"b").result()
    volume.put(6, 0, 7, b"c").result()
    assert volume.delete(5, 1).result().deleted == 1
    assert volume.delete(5, 1).result().deleted == 0  # idempotent
    with pytest.raises(NeedleNotFound):
        _read(volume, 5, 1)
    assert volume.delete(5).result().deleted == 1  # all variants of key 5
    with pytest.raises(NeedleNotFound):
        _read(volume, 5, 0)
    assert _read(volume, 6) == b"c"
    volume.close()
    # Without the checkpoint the tombstones alone must carry the deletes.
    os_storage.remove(index_name(1))
    v = open_volume(os_storage, 1, VolumeLimits())
    try:
        with pytest.raises(NeedleNotFound):
            _read(v, 5, 0)
        with pytest.raises(NeedleNotFound):
            _read(v, 5, 1)
        assert _read(v, 6) == b"c"
        assert v.statistics().needles_live == 1
    finally:
        v.close()


def test_deleted_flag_is_set_in_place(volume: Volume, os_storage: OsStorage) -> None:
    r = volume.put(5, 0, 7, b"data").result()
    volume.delete(5, 0).result()
    raw = Path(os_storage.root, data_name(1)).read_bytes()[r.offset :]
    assert needle.verify(raw).deleted


def test_group_commit_shares_syncs_between_concurrent_writers(volume: Volume) -> None:
    futures = []

    def writer(base: int) -> None:
        for i in range(100):
            futures.append(volume.put(base + i, 0, 7, os.urandom(2000)))

    threads = [threading.Thread(target=writer, args=(n * 1000,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in futures:
        f.result()
    st = volume.statistics()
    assert st.writes == 800
    assert st.syncs < 800


def test_acknowledged_means_durable(twin: TwinStorage, limits: VolumeLimits) -> None:
    """At the moment a write's future resolves, a power cut keeping nothing unsynced still
    has it."""
    v = create_volume(twin, 1, limits)
    seen_durable = []

    def check(fut: object, key: int) -> None:
        after = twin.crash(keep_unsynced="none")
        w = open_volume(after, 1, limits)
        try:
            seen_durable.append(_read(w, key) == bytes([key % 256]) * 100)
        finally:
            w.close(checkpoint=False)

    for key in range(30):
        f = v.put(key, 0, 7, bytes([key % 256]) * 100)
        f.result()
        check(f, key)
    v.close()
    assert seen_durable == [True] * 30


def test_reopen_uses_the_checkpoint_and_scans_only_the_tail(
    os_storage: OsStorage, limits: VolumeLimits
) -> None:
    v = create_volume(os_storage, 3, limits)
    data = {k: os.urandom(random.randrange(1, 3000)) for k in range(300)}
    for f in [v.put(k, k % 4, 7, b) for k, b in data.items()]:
        f.result()
    v.write_checkpoint()
    for k in range(300, 320):
        data[k] = os.urandom(50)
        v.put(k, k % 4, 7, data[k]).result()
    wait_idle(v)
    v.writer.stop()
    v.generation.file.close()  # as a crash would: no final checkpoint
    v2 = open_volume(os_storage, 3, limits)
    try:
        assert v2.opened_scan_needles == 20
        for k, b in data.items():
            assert _read(v2, k, k % 4) == b
        assert v2.statistics().needles_live == 320
    finally:
        v2.close()
    v3 = open_volume(os_storage, 3, limits)
    try:
        assert v3.opened_scan_needles == 0  # the clean close wrote a checkpoint
    finally:
        v3.close()


def test_damaged_checkpoint_is_ignored_and_the_volume_rescanned(
    os_storage: OsStorage, limits: VolumeLimits
) -> None:
    v = create_volume(os_storage, 3, limits)
    for k in range(50):
        v.put(k, 0, 7, b"x" * k).result()
    v.close()
    path = os.path.join(os_storage.root, index_name(3))
    raw = bytearray(Path(path).read_bytes())
    raw[-3] ^= 0xFF
    Path(path).write_bytes(raw)
    v = open_volume(os_storage, 3, limits)
    try:
        assert v.opened_scan_needles == 50
        assert all(_read(v, k) == b"x" * k for k in range(50))
    finally:
        v.close()


def test_torn_tail_is_cut_off(os_storage: OsStorage, limits: VolumeLimits) -> None:
    v = create_volume(os_storage, 4, limits)
    for k in range(10):
        v.put(k, 0, 7, b"y" * 300).result()
    end = v.end
    v.close()
    path = os.path.join(os_storage.root, data_name(4))
    partial = needle.encode(key=99, alt_key=0, cookie=7, data=b"z" * 5000)[:3000]
    with open(path, "ab") as f:
        f.write(partial)
    v = open_volume(os_storage, 4, limits)
    try:
        assert v.opened_torn_bytes == 3000
        assert v.end == end == os.path.getsize(path)
        assert all(_read(v, k) == b"y" * 300 for k in range(10))
        with pytest.raises(NeedleNotFound):
            _read(v, 99)
        assert verify(v).ok
    finally:
        v.close()


def test_full_volume_turns_read_only_and_still_serves_and_deletes(os_storage: OsStorage) -> None:
    limits = VolumeLimits(size_bytes_max=64 + 10 * needle.needle_length(1000))
    v = create_volume(os_storage, 5, limits)
    try:
        for k in range(10):
            v.put(k, 0, 7, b"f" * 1000).result()
        with pytest.raises(VolumeFull):
            v.put(10, 0, 7, b"f" * 1000).result()
        assert (v.state.mode, v.state.reason) == (Mode.READ_ONLY, Reason.FULL)
        with pytest.raises(VolumeNotWritable):
            v.put(11, 0, 7, b"g").result()
        assert _read(v, 3) == b"f" * 1000
        # Deletes still work on a full volume (a tombstone past the limit is allowed).
        assert v.delete(3).result().deleted == 1
    finally:
        v.close()


def test_states_persist_and_sealed_is_final(os_storage: OsStorage, limits: VolumeLimits) -> None:
    v = create_volume(os_storage, 6, limits)
    v.put(1, 0, 7, b"a").result()
    v.change_state(read_only(Reason.OPERATOR)).result()
    with pytest.raises(VolumeNotWritable):
        v.put(2, 0, 7, b"b").result()
    v.close()
    v = open_volume(os_storage, 6, limits)
    assert v.state.mode is Mode.READ_ONLY and v.state.reason is Reason.OPERATOR
    v.change_state(sealed()).result()
    assert v.delete(1).result().deleted == 1
    with pytest.raises(ValueError):
        v.change_state(read_only(Reason.OPERATOR)).result()
    v.close()
    v = open_volume(os_storage, 6, limits)
    try:
        assert v.state.mode is Mode.SEALED
    finally:
        v.close()


def test_limits_are_enforced(os_storage: OsStorage) -> None:
    limits = VolumeLimits(
        size_bytes_max=10**8, needle_data_bytes_max=1000, write_queue_needles_max=1
    )
    v = create_volume(os_storage, 8, limits)
    try:
        with pytest.raises(NeedleTooLarge):
            v.put(1, 0, 7, b"x" * 1001)
        # Hold the writer so the queue fills up.
        gate, holding = threading.Event(), threading.Event()

        def hold() -> None:
            holding.set()
            gate.wait(10)

        v.writer.submit_call(hold)
        assert holding.wait(10)
        try:
            queued = v.put(1, 0, 7, b"x")
            with pytest.raises(QueueFull):
                v.put(2, 0, 7, b"x")
        finally:
            gate.set()
        queued.result()
        assert v.statistics().writes_refused == 1
    finally:
        v.close()


def test_a_bad_superblock_refuses_to_open(os_storage: OsStorage, limits: VolumeLimits) -> None:
    from store.errors import FormatError

    create_volume(os_storage, 9, limits).close()
    path = os.path.join(os_storage.root, data_name(9))
    raw = bytearray(Path(path).read_bytes())
    raw[20] ^= 1
    Path(path).write_bytes(raw)
    with pytest.raises(FormatError):
        open_volume(os_storage, 9, limits)
