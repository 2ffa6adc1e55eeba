from __future__ import annotations

import random
import threading

import pytest

from store.needle_map import NeedleMap
from store.needle_run import bytes_per_needle, merge_runs, run_from_entries


def _random_ops(
    m: NeedleMap, model: dict[tuple[int, int], tuple[int, int]], seed: int, n: int
) -> None:
    rnd = random.Random(seed)
    for _ in range(n):
        k, a = rnd.randrange(400), rnd.choice([0, 1, 2, 3, 300, 70000])
        if rnd.random() < 0.25:
            m.delete(k, a)
            model.pop((k, a), None)
        else:
            v = (rnd.randrange(1, 2**32), rnd.randrange(1, 2**24))
            m.put(k, a, *v)
            model[(k, a)] = v


@pytest.mark.parametrize("background", [False, True])
def test_matches_a_dict_model_through_flushes_and_merges(background: bool) -> None:
    m = NeedleMap(memtable_entries_max=50, background_merges=background)
    model: dict[tuple[int, int], tuple[int, int]] = {}
    _random_ops(m, model, seed=7, n=6000)
    m.wait_for_merges()
    assert m.statistics().runs >= 1
    for k in range(400):
        for a in (0, 1, 2, 3, 300, 70000, 5):
            assert m.get(k, a) == model.get((k, a))
        assert m.alt_keys(k) == sorted(a for (kk, a) in model if kk == k)
    assert sorted((k, a, o, ln) for k, a, o, ln in m.items()) == sorted(
        (k, a, *v) for (k, a), v in model.items()
    )
    m.compact_all()
    assert m.statistics().runs == 1
    assert len(m) == len(model)


def test_newest_entry_wins_across_runs() -> None:
    m = NeedleMap(memtable_entries_max=2, background_merges=False)
    m.put(1, 0, 10, 1)
    m.put(2, 0, 11, 1)  # flush: run A
    m.put(1, 0, 20, 2)
    m.put(3, 0, 12, 1)  # flush: run B (merged with A)
    m.put(1, 0, 30, 3)
    assert m.get(1, 0) == (30, 3)
    m.delete(1, 0)
    assert m.get(1, 0) is None
    m.compact_all()
    assert m.get(1, 0) is None
    assert m.get(2, 0) == (11, 1)


def test_run_costs_under_ten_bytes_per_needle_with_nine_variants() -> None:
    entries = {}
    for i in range(10_000):
        for alt in range(9):
            entries[((1 << 40) + i * 977) << 32 | alt] = (1 + i * 9 + alt) << 24 | 700
    run = run_from_entries(entries)
    assert len(run) == 90_000
    assert run.nbytes / len(run) < 9.4
    assert run.alts.dtype.itemsize == 1


def test_wide_alternate_keys_use_a_table_of_codes() -> None:
    run = run_from_entries({(5 << 32) | 2**31: (1 << 24) | 1, (5 << 32) | 3: (2 << 24) | 1})
    assert run.alts.dtype.itemsize == 1
    assert run.alt_table is not None and run.alt_table.tolist() == [3, 2**31]
    assert run.get(5, 2**31) == (1, 1)
    assert run.get(5, 3) == (2, 1)
    assert run.get(5, 4) is None


def test_merge_drops_tombstones_only_into_the_oldest_run() -> None:
    old = run_from_entries({(1 << 32) | 0: (5 << 24) | 1})
    newer = run_from_entries({(1 << 32) | 0: 0})  # tombstone
    kept = merge_runs([newer, old], drop_tombstones=False)
    assert kept.get(1, 0) == (0, 0)
    dropped = merge_runs([newer, old], drop_tombstones=True)
    assert len(dropped) == 0


def test_readers_never_miss_an_entry_while_the_writer_flushes_and_merges() -> None:
    m = NeedleMap(memtable_entries_max=64, background_merges=True)
    published = [0]
    stop = threading.Event()
    missing: list[int] = []

    def reader() -> None:
        rnd = random.Random(3)
        while not stop.is_set():
            upto = published[0]
            if upto == 0:
                continue
            k = rnd.randrange(upto)
            if m.get(k, 0) != (k + 1, 1):
                missing.append(k)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for k in range(30_000):
            m.put(k, 0, k + 1, 1)
            published[0] = k + 1
    finally:
        stop.set()
        t.join()
    m.wait_for_merges()
    assert missing == []
    assert all(m.get(k, 0) == (k + 1, 1) for k in range(0, 30_000, 97))


def test_bad_values_are_refused() -> None:
    m = NeedleMap()
    with pytest.raises(ValueError):
        m.put(1, 1, 0, 5)  # offset 0 is the superblock
    with pytest.raises(ValueError):
        m.put(1, 1, 5, 2**24)


def test_bytes_per_needle_is_what_a_run_of_photo_ladders_spends() -> None:
    """The figure capacity planning reads (store.needle_run.bytes_per_needle) against the
    arrays of a real run: photos of 25 needles whose alt keys are the ladder's
    (rendition << 8 | format, up to the 1080 square in AVIF): u32 keys, kept as u8 codes
    into the run's table of its 25 distinct ones; every lookup answers as before."""
    photo_alts = [0] + [
        (rendition << 8) | fmt
        for size in (1080, 640, 320, 150)
        for rendition in (size, 10_000 + size)
        for fmt in (1, 2, 3)
    ]
    photos = 2000
    entries = {
        (key << 32) | alt: ((1 + key * 25 + i) << 24) | 7
        for key in range(1, photos + 1)
        for i, alt in enumerate(photo_alts)
    }
    run = run_from_entries(entries)
    per_needle = bytes_per_needle(
        max_alt=max(photo_alts), needles_per_key=len(photo_alts), distinct_alts=len(photo_alts)
    )
    assert run.alts.dtype.itemsize == 1
    assert run.alt_table is not None and run.alt_table.tolist() == sorted(photo_alts)
    # starts has one slot more than there are keys; the table is 25 u32.
    assert run.nbytes == pytest.approx(per_needle * len(entries) + 4 + 4 * 25, abs=1e-6)
    assert per_needle == pytest.approx(1 + 7 + 12 / 25)
    for key in (1, 777, photos):
        for i, alt in enumerate(photo_alts):
            assert run.get(key, alt) == (1 + key * 25 + i, 7)
        assert run.get(key, max(photo_alts) + 1) is None
        assert run.alts_of(key) == sorted((a, 1 + key * 25 + i) for i, a in enumerate(photo_alts))
    assert [alt for _, alt, _, _ in run.iter_live()][:25] == sorted(photo_alts)
    # More distinct alt keys than a table holds: the keys themselves, in the narrowest type.
    many = {(1 << 32) | (70_000 + a): ((1 + a) << 24) | 7 for a in range(300)}
    wide = run_from_entries(many)
    assert wide.alt_table is None and wide.alts.dtype.itemsize == 4
    assert wide.get(1, 70_299) == (300, 7) and wide.get(1, 69_999) is None
    assert bytes_per_needle(max_alt=70_299, needles_per_key=300, distinct_alts=300) == (
        pytest.approx(4 + 7 + 12 / 300)
    )
    # The needle-map benchmark's layout (alt keys 0..8, nine per photo): u8 alts.
    assert bytes_per_needle(max_alt=8, needles_per_key=9, distinct_alts=9) == pytest.approx(
        1 + 7 + 12 / 9
    )
