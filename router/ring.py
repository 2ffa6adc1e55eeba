"""Which cache node serves a photo: rendezvous (highest random weight) hashing of the key.

Every node gets a score per key, xxh3_64(key as 8 little-endian bytes, seed = xxh3_64 of
the node id); the key goes to the highest score. All variants of a photo share its key, so
they land on one cache node (one delete invalidation per node reaches all of them). Adding
or removing one of n nodes moves only the keys that node wins or won (~1/n), and when a node
is down its keys spread over the others in their own next-best order, instead of piling
onto one neighbour as on a consistent-hash ring.

Nodes that failed a request are skipped for a while (`mark_down`); the directory's list of
alive caches (refreshed by router.lookup) replaces the node set wholesale.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import xxhash

_KEY_BYTES: Final = 8


@dataclass(frozen=True, slots=True)
class CacheNode:
    node_id: str
    url: str


class CacheRing:
    """The cache nodes and their temporary failures. Not thread-safe (one event loop)."""

    __slots__ = ("_down_until", "_nodes", "_seeds")

    def __init__(self, nodes: Iterable[CacheNode] = ()) -> None:
        self._nodes: tuple[CacheNode, ...] = ()
        self._seeds: tuple[int, ...] = ()
        self._down_until: dict[str, float] = {}  # url -> monotonic time
        self.set_nodes(nodes)

    @property
    def nodes(self) -> tuple[CacheNode, ...]:
        return self._nodes

    def set_nodes(self, nodes: Iterable[CacheNode]) -> None:
        """Replace the node set (deduplicated by node id, sorted for a stable order)."""
        unique = {n.node_id: n for n in nodes}
        self._nodes = tuple(unique[k] for k in sorted(unique))
        self._seeds = tuple(xxhash.xxh3_64_intdigest(n.node_id.encode()) for n in self._nodes)
        urls = {n.url for n in self._nodes}
        self._down_until = {u: t for u, t in self._down_until.items() if u in urls}

    def order(self, key: int) -> list[CacheNode]:
        """Every node, best first for `key` (ignores failures)."""
        nodes = self._nodes
        if len(nodes) <= 1:
            return list(nodes)
        data = key.to_bytes(_KEY_BYTES, "little")
        scored = sorted(
            ((xxhash.xxh3_64_intdigest(data, seed=s), i) for i, s in enumerate(self._seeds)),
            reverse=True,
        )
        return [nodes[i] for _, i in scored]

    def candidates(self, key: int, now: float, limit: int) -> list[CacheNode]:
        """At most `limit` nodes to try for `key`, best first, skipping nodes marked down."""
        down = self._down_until
        if not down:
            return self.order(key)[:limit]
        out = []
        for node in self.order(key):
            until = down.get(node.url)
            if until is not None:
                if now < until:
                    continue
                del down[node.url]
            out.append(node)
            if len(out) == limit:
                break
        return out

    def mark_down(self, url: str, until: float) -> None:
        """Skip the node at `url` until monotonic time `until`."""
        if any(n.url == url for n in self._nodes):
            self._down_until[url] = until

    def down(self, now: float) -> list[str]:
        """URLs of nodes skipped at `now`."""
        return sorted(u for u, t in self._down_until.items() if now < t)
