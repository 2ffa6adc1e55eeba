"""Faults injected through the in-memory twin: EIO, ENOSPC, torn writes, bit flips."""

from __future__ import annotations

import errno
import random

import pytest

from store import needle, volume_read
from store.errors import CorruptNeedle, NeedleNotFound, VolumeIOError, VolumeNotWritable
from store.volume import Volume, data_name
from store.volume_checking import verify
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume, open_volume
from store.volume_state import Mode, Reason
from tests.store.twin import TwinStorage


def _read(v: Volume, key: int, alt: int = 0) -> bytes:
    return bytes(volume_read.read(v, key, alt, 7).data)


@pytest.mark.parametrize("op", ["sync", "write"])
def test_failed_write_or_sync_turns_the_volume_read_only_and_acknowledges_nothing(
    twin: TwinStorage, limits: VolumeLimits, op: str
) -> None:
    v = create_volume(twin, 1, limits)
    for k in range(5):
        v.put(k, 0, 7, b"ok" * 100).result()
    twin.fail(op, errno.EIO, name=data_name(1))
    with pytest.raises(VolumeIOError):
        v.put(100, 0, 7, b"lost").result()
    assert (v.state.mode, v.state.reason) == (Mode.READ_ONLY, Reason.IO_ERROR)
    with pytest.raises(VolumeNotWritable):
        v.put(101, 0, 7, b"refused").result()
    with pytest.raises(VolumeNotWritable):
        v.delete(1).result()
    with pytest.raises(NeedleNotFound):
        _read(v, 100)  # never indexed
    assert all(_read(v, k) == b"ok" * 100 for k in range(5))
    assert v.statistics().sync_failures == 1
    v.close()
    # After a power cut the failed write does not come back, the acknowledged ones do.
    after = twin.crash(random.Random(1))
    w = open_volume(after, 1, limits)
    try:
        assert all(_read(w, k) == b"ok" * 100 for k in range(5))
        with pytest.raises(NeedleNotFound):
            _read(w, 100)
        assert verify(w).ok
        assert w.state.reason is Reason.IO_ERROR  # the state survives: an operator decides
    finally:
        w.close()


def test_enospc_turns_read_only_and_corrupts_nothing(limits: VolumeLimits) -> None:
    twin = TwinStorage()
    twin.capacity_bytes = 200_000
    v = create_volume(twin, 1, limits)
    acked: dict[int, bytes] = {}
    failed = None
    for k in range(1000):
        data = bytes([k % 251]) * 3000
        try:
            v.put(k, 0, 7, data).result()
        except VolumeIOError as e:
            failed = e
            break
        acked[k] = data
    assert failed is not None and "No space" in str(failed)
    assert v.state.reason is Reason.IO_ERROR
    assert all(_read(v, k) == d for k, d in acked.items())
    v.close()
    twin.capacity_bytes = None
    for keep in ("none", "all", "random"):
        w = open_volume(twin.crash(random.Random(2), keep_unsynced=keep), 1, limits)
        try:
            assert all(_read(w, k) == d for k, d in acked.items())
            assert verify(w).ok
            assert w.opened_torn_bytes == 0
        finally:
            w.close(checkpoint=False)


def test_power_cuts_at_random_points_lose_no_acknowledged_write(limits: VolumeLimits) -> None:
    rnd = random.Random(1234)
    for round_ in range(40):
        twin = TwinStorage()
        v = create_volume(twin, 1, limits)
        acked: dict[tuple[int, int], bytes] = {}
        deleted: set[tuple[int, int]] = set()
        for _ in range(rnd.randrange(1, 25)):
            # A batch of writes in flight, then wait for them: acknowledged.
            futs = []
            for _ in range(rnd.randrange(1, 8)):
                key = (rnd.randrange(30), rnd.randrange(3))
                data = rnd.randbytes(rnd.randrange(1, 4000))
                futs.append((key, data, v.put(key[0], key[1], 7, data)))
            for key, data, f in futs:
                f.result()
                acked[key] = data
                deleted.discard(key)
            if rnd.random() < 0.3 and acked:
                key = rnd.choice(sorted(acked))
                v.delete(*key).result()
                acked.pop(key)
                deleted.add(key)
            if rnd.random() < 0.1:
                v.write_checkpoint()
        # Unacknowledged writes in flight at the moment of the cut.
        v.put(999, 0, 7, rnd.randbytes(5000))
        crashed = twin.crash(random.Random(round_))
        w = open_volume(crashed, 1, limits)
        try:
            for key, data in acked.items():
                assert _read(w, *key) == data, (round_, key)
            for key in deleted:
                with pytest.raises(NeedleNotFound):
                    _read(w, *key)
            report = verify(w)
            assert report.ok, report
        finally:
            w.close(checkpoint=False)
        v.close(checkpoint=False)


def test_flipped_bits_are_detected_and_never_served(
    twin: TwinStorage, limits: VolumeLimits
) -> None:
    v = create_volume(twin, 1, limits)
    offsets = {k: v.put(k, 0, 7, bytes([k]) * 500).result().offset for k in range(4)}
    name = data_name(1)
    twin.flip_bit(name, offsets[0] + needle.HEADER_BYTES + 10, 3)  # data
    twin.flip_bit(name, offsets[1] + 17, 0)  # header: key
    twin.flip_bit(name, offsets[2] + needle.HEADER_BYTES + 500 + 9, 5)  # footer: checksum
    for k in range(3):
        with pytest.raises(CorruptNeedle):
            volume_read.read(v, k, 0, 7)
        with pytest.raises(CorruptNeedle):
            volume_read.read_cached(v, k, 0, 7)
    assert _read(v, 3) == bytes([3]) * 500
    report = verify(v)
    assert not report.ok
    assert report.corrupt_live == 3
    v.close()


def test_read_errors_surface_as_os_errors(twin: TwinStorage, limits: VolumeLimits) -> None:
    v = create_volume(twin, 1, limits)
    v.put(1, 0, 7, b"abc").result()
    twin.fail("read", errno.EIO, name=data_name(1))
    with pytest.raises(OSError) as e:
        volume_read.read(v, 1, 0, 7)
    assert e.value.errno == errno.EIO
    assert _read(v, 1) == b"abc"  # the device recovered
    v.close()


def test_cache_misses_fall_back_to_the_blocking_read(
    twin: TwinStorage, limits: VolumeLimits
) -> None:
    v = create_volume(twin, 1, limits)
    v.put(1, 0, 7, b"abc").result()
    twin.nowait_misses = True
    assert volume_read.read_cached(v, 1, 0, 7) is None
    with pytest.raises(NeedleNotFound):
        volume_read.read_cached(v, 2, 0, 7)  # absent needles never need the device
    assert _read(v, 1) == b"abc"
    v.close()
