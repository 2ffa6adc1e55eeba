"""The hot store's contract, the same suite for the embedded store and the real Redis."""

from __future__ import annotations

import asyncio

from common import ids
from feed.hotstore import ENTRY, HotStore, MemoryHotStore, decode, encode, score


def same_ms_ids(n: int, *, ms: int = 1_000_000) -> list[int]:
    """n ids of one millisecond on two shards, in id order."""
    return sorted(ids.compose(ms, shard, seq) for shard in (1, 2) for seq in range(n // 2))


async def test_pushes_go_only_into_lists_that_exist(hot: HotStore) -> None:
    assert not await hot.exists("tl:1")
    assert await hot.add(["tl:1", "tl:2"], [(10, 5)], cap=10) == 0
    assert await hot.page("tl:1", before=None, count=5) is None
    assert await hot.create("tl:1", ttl_s=60) is True
    assert await hot.create("tl:1", ttl_s=60) is False
    assert await hot.page("tl:1", before=None, count=5) == []  # exists, empty
    assert await hot.add(["tl:1", "tl:2"], [(10, 5)], cap=10) == 1
    assert await hot.add(["tl:1"], [(10, 5)], cap=10) == 1  # idempotent
    assert await hot.size("tl:1") == 1 and not await hot.exists("tl:2")


async def test_pages_follow_id_order_within_one_millisecond(hot: HotStore) -> None:
    entries = [(i, 7) for i in same_ms_ids(150)]
    assert len({score(i) for i, _ in entries}) == 1
    await hot.create("tl:9", ttl_s=60)
    await hot.add(["tl:9"], list(reversed(entries)), cap=1000)
    seen: list[int] = []
    before = None
    while True:
        page = await hot.page("tl:9", before=before, count=7)
        assert page is not None
        if not page:
            break
        seen += [p for p, _ in page]
        before = page[-1][0]
    assert seen == sorted((i for i, _ in entries), reverse=True)


async def test_a_list_keeps_its_newest_entries(hot: HotStore) -> None:
    await hot.create("cl:3", ttl_s=60)
    for i in range(1, 21):
        await hot.add(["cl:3"], [(ids.compose(i, 1, 0), 3)], cap=8)
    page = await hot.page("cl:3", before=None, count=100)
    assert page == [(ids.compose(i, 1, 0), 3) for i in range(20, 12, -1)]
    assert await hot.size("cl:3") == 8


async def test_removes_by_entry_and_by_author(hot: HotStore) -> None:
    await hot.create("tl:4", ttl_s=60)
    entries = [(ids.compose(i, 1, 0), 100 + i % 3) for i in range(1, 13)]
    await hot.add(["tl:4"], entries, cap=100)
    await hot.remove(["tl:4", "tl:absent"], [entries[0]])
    assert await hot.remove_author("tl:4", 101) == 3  # its first entry went already
    page = await hot.page("tl:4", before=None, count=100)
    assert page is not None
    assert {a for _, a in page} == {100, 102} and entries[0] not in page and len(page) == 8


async def test_pages_reads_several_lists_in_one_call(hot: HotStore) -> None:
    a = [(ids.compose(i, 1, 0), 1) for i in range(1, 11)]
    b = [(i, 2) for i in same_ms_ids(100, ms=5)]
    for key, entries in (("tl:20", a), ("cl:21", b)):
        await hot.create(key, ttl_s=60)
        await hot.add([key], entries, cap=1000)
    below = b[60][0]
    got = await hot.pages([("tl:20", None, 4), ("tl:absent", None, 4), ("cl:21", below, 5)])
    assert got[1] is None
    first, third = got[0], got[2]
    assert first is not None and third is not None
    assert first.entries == a[::-1][:4] and first.more
    assert third.entries == b[59:54:-1] and third.more  # below the cursor, same millisecond
    tail = await hot.pages([("tl:20", a[2][0], 4), ("cl:21", b[1][0], 5)])
    assert tail[0] is not None and tail[0].entries == [a[1], a[0]] and not tail[0].more
    assert tail[1] is not None and tail[1].entries == [b[0]] and not tail[1].more


async def test_a_list_is_complete_until_trimmed_or_cut_short(hot: HotStore) -> None:
    async def complete(key: str) -> bool:
        got = (await hot.pages([(key, None, 1)]))[0]
        assert got is not None
        return got.complete

    await hot.create("tl:30", ttl_s=60)
    assert not await complete("tl:30")  # a new list may lack older posts
    await hot.add(["tl:30"], [(ids.compose(1, 1, 0), 1)], cap=3, complete=True)
    assert await complete("tl:30")  # a rebuild that read everything
    await hot.add(["tl:30"], [(ids.compose(2, 1, 0), 1)], cap=3)
    assert await complete("tl:30")  # a push keeps it so
    await hot.add(["tl:30"], [(ids.compose(i, 1, 0), 1) for i in (3, 4)], cap=3)
    assert not await complete("tl:30")  # a trim dropped its oldest
    assert await hot.size("tl:30") == 3
    await hot.create("tl:31", ttl_s=60)
    await hot.add(["tl:31"], [], cap=3, complete=True)
    assert await complete("tl:31")  # empty and complete: a reader following nobody
    await hot.add(["tl:31"], [], cap=3, complete=False)  # a backfill cut at its limit
    assert not await complete("tl:31")
    await hot.add(["tl:31"], [(ids.compose(5, 1, 0), 1)], cap=3, complete=True)
    assert await complete("tl:31") and await hot.size("tl:31") == 1


async def test_lists_expire_and_touch_extends_them(hot: HotStore) -> None:
    await hot.create("tl:5", ttl_s=0.3)
    await hot.create("tl:6", ttl_s=0.3)
    await hot.touch("tl:6", ttl_s=30)
    await asyncio.sleep(0.45)
    assert not await hot.exists("tl:5") and await hot.exists("tl:6")
    assert await hot.add(["tl:5"], [(1 << 23, 1)], cap=5) == 0
    await hot.delete("tl:6")
    assert not await hot.exists("tl:6")


def test_members_are_16_bytes_in_id_order() -> None:
    a, b = encode((5, 1 << 40)), encode((6, 1))
    assert len(a) == ENTRY.size == 16 and a < b and decode(a) == (5, 1 << 40)


async def test_the_embedded_store_forgets_expired_lists_by_its_clock() -> None:
    now = [0.0]
    store = MemoryHotStore(clock=lambda: now[0])
    await store.create("tl:1", ttl_s=10)
    now[0] = 9.9
    assert await store.exists("tl:1")
    now[0] = 10.0
    assert not await store.exists("tl:1")
