"""Unknown volume ids at the router: bounded memory, bounded directory traffic, and a volume
created a moment ago is still found."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from common.photo import photo_path
from tests.router.conftest import COOKIE, cluster_of


async def _status(http: object, url: str) -> int:
    import aiohttp

    assert isinstance(http, aiohttp.ClientSession)
    async with http.get(url) as r:
        await r.read()
        return r.status


async def test_unknown_ids_below_the_highest_are_remembered_in_a_bounded_table(
    tmp_path: Path,
) -> None:
    async with cluster_of(tmp_path, unknown_volumes_cached_max=50, unknown_volume_ttl_s=60) as c:
        c.directory.volume_id_max = 10_000  # ids up to it may exist: each is asked once
        gaps = random.Random(7).sample(range(3, 10_000), 200)
        for vid in gaps:
            assert await _status(c.http, c.router_url + photo_path(vid, 1, COOKIE, 640, 1)) == 404
        stats = c.api.directory.statistics()
        assert stats.unknown_volumes_cached == 50  # the oldest went first
        asked = c.directory.volume_requests
        # The newest 50 are answered from memory; an older one is asked again.
        for vid in gaps[-50:]:
            assert await _status(c.http, c.router_url + photo_path(vid, 1, COOKIE, 640, 1)) == 404
        assert c.directory.volume_requests == asked
        assert await _status(c.http, c.router_url + photo_path(gaps[0], 1, COOKIE, 640, 1)) == 404
        assert c.directory.volume_requests == asked + 1


async def test_a_flood_above_the_highest_id_costs_a_few_lookups(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, lookup_probe_s_min=0.05) as c:
        c.directory.volume_id_max = 2
        await c.put(1, b"real")
        assert await _status(c.http, c.url(1)) == 200  # learns the highest id
        before = c.directory.volume_requests
        loop = asyncio.get_running_loop()
        started = loop.time()
        rnd = random.Random(11)
        vids = [rnd.randrange(3, 2**32) for _ in range(2000)]
        sem = asyncio.Semaphore(64)

        async def one(vid: int) -> int:
            async with sem:
                return await _status(c.http, c.router_url + photo_path(vid, 1, COOKIE, 640, 1))

        statuses = await asyncio.gather(*(one(v) for v in vids))
        elapsed = loop.time() - started
        assert set(statuses) == {404}
        asked = c.directory.volume_requests - before
        # One probe at a time, at most one per lookup_probe_s_min (+1 for the first).
        assert 1 <= asked <= elapsed / 0.05 + 2, (asked, elapsed)
        stats = c.api.directory.statistics()
        assert stats.unknown_volumes_cached <= 2  # no memory per made-up id
        assert stats.unknown_answered >= len(vids) - asked
        # Real photos were never in the way.
        assert await _status(c.http, c.url(1)) == 200


async def test_a_volume_created_a_moment_ago_is_found_by_the_next_probe(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, lookup_probe_s_min=0.05, unknown_volume_ttl_s=60) as c:
        lv2 = c.directory.volumes.pop(2)
        c.directory.volume_id_max = 1
        await c.put(5, b"on the new volume", vid=2)
        assert await _status(c.http, c.url(5, vid=2)) == 404  # not created yet
        c.directory.volumes[2] = lv2
        c.directory.volume_id_max = 2
        # Above the highest id the router knew: asked again (not remembered as absent).
        assert await _status(c.http, c.url(5, vid=2)) == 200
