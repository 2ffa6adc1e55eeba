from __future__ import annotations

import random
import threading
import time

import pytest

from common.jobs.local import LocalJob, LocalJobCancelled, Throttle
from store import needle, volume_read
from store.errors import CorruptNeedle, NeedleNotFound, NodeBusy
from store.storage import OsStorage
from store.volume import (
    Volume,
    compact_data_name,
    compact_index_name,
    compact_marker_name,
    data_name,
    index_name,
)
from store.volume_checking import verify
from store.volume_compact import Compaction, compact
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume, open_volume, recover_compaction, write_marker
from tests.store.twin import TwinStorage


def _read(v: Volume, key: int, alt: int = 0) -> bytes:
    return bytes(volume_read.read(v, key, alt, 7).data)


def _fill(v: Volume, n: int, seed: int = 1) -> dict[tuple[int, int], bytes]:
    rnd = random.Random(seed)
    model = {}
    for k in range(n):
        model[(k, k % 3)] = rnd.randbytes(rnd.randrange(1, 3000))
        v.put(k, k % 3, 7, model[(k, k % 3)]).result()
    for k in range(0, n, 2):
        v.delete(k).result()
        model.pop((k, k % 3))
    for k in range(1, n, 5):  # overwrites
        model[(k, k % 3)] = b"new" * k
        v.put(k, k % 3, 7, model[(k, k % 3)]).result()
    return model


def _check(v: Volume, model: dict[tuple[int, int], bytes], n: int) -> None:
    for k in range(n):
        key = (k, k % 3)
        if key in model:
            assert _read(v, *key) == model[key]
        else:
            with pytest.raises(NeedleNotFound):
                _read(v, *key)


def test_compaction_reclaims_garbage_and_keeps_every_live_needle(
    os_storage: OsStorage, limits: VolumeLimits
) -> None:
    v = create_volume(os_storage, 1, limits)
    model = _fill(v, 300)
    before = v.statistics()
    assert before.garbage_ratio > 0.4
    report = compact(v)
    after = v.statistics()
    assert report.phase == "done" and report.size_after == after.size_bytes
    assert after.garbage_bytes == 0
    assert after.size_bytes == 64 + before.bytes_live
    assert (after.needles_live, after.bytes_live) == (before.needles_live, before.bytes_live)
    assert after.compaction_revision == 1
    _check(v, model, 300)
    assert verify(v).ok
    assert sorted(os_storage.list()) == ["v1.dat", "v1.idx"]
    v.close()
    w = open_volume(os_storage, 1, limits)
    try:
        assert w.opened_scan_needles == 0
        _check(w, model, 300)
    finally:
        w.close()


def test_reads_writes_and_deletes_go_on_during_compaction(
    os_storage: OsStorage, limits: VolumeLimits
) -> None:
    v = create_volume(os_storage, 1, limits)
    model = _fill(v, 400)
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        rnd = random.Random(5)
        k = 10_000
        while not stop.is_set():
            try:
                if rnd.random() < 0.3:
                    with lock:
                        victim = rnd.choice(sorted(model))
                        v.delete(*victim).result()
                        model.pop(victim)
                else:
                    data = rnd.randbytes(rnd.randrange(1, 2000))
                    with lock:
                        v.put(k, 0, 7, data).result()
                        model[(k, 0)] = data
                    k += 1
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    def reader() -> None:
        while not stop.is_set():
            with lock:
                key = random.choice(sorted(model))
                want = model[key]
                try:
                    assert _read(v, *key) == want
                except BaseException as e:  # pragma: no cover
                    errors.append(e)
                    return

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        c = Compaction(v, throttle=Throttle(2_000_000))  # slow enough for writes to interleave
        report = c.run()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert report.tail_bytes_replayed > 0 or report.phase == "done"
    for key, data in model.items():
        assert _read(v, *key) == data
    assert verify(v).ok
    v.close()
    w = open_volume(os_storage, 1, limits)
    try:
        for key, data in model.items():
            assert _read(w, *key) == data
        assert w.statistics().needles_live == len(model)
    finally:
        w.close()


def test_throttle_bounds_the_copy_rate(os_storage: OsStorage, limits: VolumeLimits) -> None:
    v = create_volume(os_storage, 1, limits)
    for k in range(100):
        v.put(k, 0, 7, b"t" * 4000).result()
    # A clock that only the throttle's sleeps move: the copy takes no time of its own, so
    # the time slept is the time the copy took.
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    throttle = Throttle(400_000, clock=lambda: now[0], sleep=sleep)
    report = Compaction(v, throttle=throttle).run()
    assert report.bytes_copied > 400_000 and len(sleeps) >= 1
    # Each chunk waits until the rate allows the bytes copied so far.
    assert now[0] == pytest.approx(report.bytes_copied / 400_000)
    assert throttle.bytes == report.bytes_copied + report.tail_bytes_replayed
    v.close()


def test_cancel_rolls_back(os_storage: OsStorage, limits: VolumeLimits) -> None:
    v = create_volume(os_storage, 1, limits)
    model = _fill(v, 200)
    job = LocalJob("compact", 1)
    c = Compaction(v, throttle=job.throttle(10_000))
    threading.Timer(0.2, job.cancel).start()  # from another thread, mid-sleep
    with pytest.raises(LocalJobCancelled):
        c.run()
    assert c.report().phase == "cancelled"
    assert sorted(os_storage.list()) == ["v1.dat"]
    _check(v, model, 200)
    assert v.statistics().compaction_revision == 0
    compact(v)  # a new one may start
    _check(v, model, 200)
    v.close()


def test_a_corrupt_needle_stops_compaction_and_changes_nothing(limits: VolumeLimits) -> None:
    twin = TwinStorage()
    v = create_volume(twin, 1, limits)
    offsets = [v.put(k, 0, 7, b"c" * 100).result().offset for k in range(10)]
    twin.flip_bit(data_name(1), offsets[4] + needle.HEADER_BYTES + 3)
    with pytest.raises(CorruptNeedle):
        compact(v)
    assert twin.list() == ["v1.dat"]
    assert _read(v, 3) == b"c" * 100
    v.close()


def test_a_second_compaction_is_refused_while_one_runs(
    os_storage: OsStorage, limits: VolumeLimits
) -> None:
    v = create_volume(os_storage, 1, limits)
    for k in range(50):
        v.put(k, 0, 7, b"b" * 3000).result()
    job = LocalJob("compact", 1)
    c = Compaction(v, throttle=job.throttle(50_000))
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            c.run()
        except LocalJobCancelled as e:
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        while c.bytes_copied == 0:
            time.sleep(0.01)
        with pytest.raises(NodeBusy):
            compact(v)
    finally:
        job.cancel()
        t.join()
    assert len(outcome) == 1 and c.report().phase == "cancelled"
    v.close()


SWITCH_STEPS = [
    "sync_data",
    "write_index",
    "write_marker",
    "rename_data",
    "rename_index",
    "sync_dir",
    "remove_marker",
]


class _PowerCut(Exception):
    pass


@pytest.mark.parametrize("step", SWITCH_STEPS)
def test_power_cut_at_every_step_of_the_switch_recovers(limits: VolumeLimits, step: str) -> None:
    for seed in range(5):
        twin = TwinStorage()
        v = create_volume(twin, 1, limits)
        model = _fill(v, 120, seed=seed)
        c = Compaction(v)
        cut: list[TwinStorage] = []

        def hook(
            name: str, twin: TwinStorage = twin, cut: list[TwinStorage] = cut, seed: int = seed
        ) -> None:
            if name == step:
                cut.append(twin.crash(random.Random(seed)))
                raise _PowerCut(name)

        c.before_step = hook
        with pytest.raises(_PowerCut):
            c.run()
        v.close(checkpoint=False)
        after = cut[0]
        w = open_volume(after, 1, limits)
        try:
            _check(w, model, 120)
            assert verify(w).ok
            revision = w.statistics().compaction_revision
            committed = SWITCH_STEPS.index(step) > SWITCH_STEPS.index("write_marker")
            assert revision == (1 if committed else 0), (step, revision)
            assert sorted(after.list()) in (["v1.dat", "v1.idx"], ["v1.dat"])
        finally:
            w.close()


def _prepare_switch_state(limits: VolumeLimits) -> tuple[TwinStorage, dict[tuple[int, int], bytes]]:
    """Builds, by hand, the files of a compaction that finished copying: the old .dat and
    .idx, plus a complete .cpd and .cpx (taken from a real compaction of a twin copy)."""
    twin = TwinStorage()
    v = create_volume(twin, 1, limits)
    model = _fill(v, 90)
    v.close()
    scratch = twin.crash(keep_unsynced="all")
    w = open_volume(scratch, 1, limits)
    compact(w)
    w.close(checkpoint=False)
    for src, dst in ((data_name(1), compact_data_name(1)), (index_name(1), compact_index_name(1))):
        f = twin.open(dst, create=True)
        f.write([scratch.raw(src)], 0)
        f.datasync()
        f.close()
    twin.sync_dir()
    return twin, model


def test_hand_built_state_without_marker_rolls_back(limits: VolumeLimits) -> None:
    twin, model = _prepare_switch_state(limits)
    assert recover_compaction(twin, 1) == "back"
    assert twin.list() == ["v1.dat", "v1.idx"]
    v = open_volume(twin, 1, limits)
    try:
        assert v.statistics().compaction_revision == 0
        _check(v, model, 90)
    finally:
        v.close()


@pytest.mark.parametrize("renamed", ["none", "data", "both"])
def test_hand_built_state_with_marker_rolls_forward(limits: VolumeLimits, renamed: str) -> None:
    twin, model = _prepare_switch_state(limits)
    write_marker(twin, 1, 1, 0)
    if renamed in ("data", "both"):
        twin.rename(compact_data_name(1), data_name(1))
    if renamed == "both":
        twin.rename(compact_index_name(1), index_name(1))
    twin.sync_dir()
    v = open_volume(twin, 1, limits)
    try:
        assert twin.list() == ["v1.dat", "v1.idx"]
        assert compact_marker_name(1) not in twin.list()
        assert v.statistics().compaction_revision == 1
        assert v.opened_scan_needles == 0
        _check(v, model, 90)
        assert verify(v).ok
    finally:
        v.close()
