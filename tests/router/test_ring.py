"""router/ring.py: rendezvous hashing of keys over cache nodes."""

from __future__ import annotations

import random
from collections import Counter

from router.ring import CacheNode, CacheRing

_RNG = random.Random(7)
KEYS = [_RNG.getrandbits(64) for _ in range(20_000)]


def _nodes(n: int) -> list[CacheNode]:
    return [CacheNode(f"cache-{i}", f"http://10.0.0.{i}:8750") for i in range(1, n + 1)]


def _owners(ring: CacheRing) -> list[str]:
    return [ring.order(k)[0].node_id for k in KEYS]


def test_keys_spread_evenly() -> None:
    counts = Counter(_owners(CacheRing(_nodes(5))))
    assert set(counts) == {f"cache-{i}" for i in range(1, 6)}
    for n in counts.values():
        assert abs(n - len(KEYS) / 5) < 0.1 * len(KEYS) / 5


def test_adding_a_node_moves_about_one_nth_of_the_keys() -> None:
    for n in (2, 4, 8):
        before = _owners(CacheRing(_nodes(n)))
        after = _owners(CacheRing(_nodes(n + 1)))
        moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
        share = len(moved) / len(KEYS)
        assert abs(share - 1 / (n + 1)) < 0.02, (n, share)
        assert all(a == f"cache-{n + 1}" for _, a in moved)  # only to the new node


def test_removing_a_node_moves_only_its_keys_and_spreads_them() -> None:
    ring = CacheRing(_nodes(4))
    before = _owners(ring)
    ring.set_nodes(_nodes(4)[1:])  # cache-1 leaves
    after = _owners(ring)
    for b, a in zip(before, after, strict=True):
        if b != "cache-1":
            assert a == b
    inherited = Counter(a for b, a in zip(before, after, strict=True) if b == "cache-1")
    # cache-1's quarter of the keys splits about evenly over the three others.
    assert len(inherited) == 3
    assert all(abs(n - len(KEYS) / 12) < 0.15 * len(KEYS) / 12 for n in inherited.values())


def test_order_is_the_fallback_when_a_node_is_down() -> None:
    ring = CacheRing(_nodes(3))
    for key in KEYS[:200]:
        order = ring.order(key)
        assert sorted(n.node_id for n in order) == ["cache-1", "cache-2", "cache-3"]
        # A node marked down is skipped; the rest keep their relative order.
        ring.mark_down(order[0].url, until=10.0)
        assert ring.candidates(key, now=5.0, limit=3) == order[1:]
        assert ring.candidates(key, now=5.0, limit=1) == order[1:2]
        assert ring.down(5.0) == [order[0].url]
        assert ring.candidates(key, now=10.0, limit=3) == order  # back after `until`
        assert ring.down(10.0) == []


def test_order_does_not_depend_on_listing_order_or_duplicates() -> None:
    nodes = _nodes(5)
    a = CacheRing(nodes)
    b = CacheRing([*reversed(nodes), nodes[0]])
    assert all(a.order(k) == b.order(k) for k in KEYS[:500])
    assert len(b.nodes) == 5


def test_small_rings() -> None:
    assert CacheRing().order(5) == []
    assert CacheRing().candidates(5, now=0.0, limit=2) == []
    one = CacheRing(_nodes(1))
    assert one.order(5) == _nodes(1)
    one.mark_down("http://unknown:1", until=1e9)  # not a node: ignored
    assert one.down(0.0) == []


def test_set_nodes_forgets_failures_of_nodes_that_left() -> None:
    ring = CacheRing(_nodes(2))
    ring.mark_down(_nodes(2)[0].url, until=100.0)
    ring.set_nodes(_nodes(2)[1:])
    ring.set_nodes(_nodes(2))
    assert ring.down(0.0) == []
