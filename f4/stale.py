"""Stale files on storage nodes: blocks, sidecars and index copies that no index needs any
more, left behind when a node lost for good (its blocks rebuilt elsewhere, a new index
generation committed) comes back with its old disks. Found, reported and reclaimed here.

**The rule** (`stale_files`, pure). A file on node N is stale when its volume's newest
committed index generation is known and:
- a block or sidecar `v<V>.s<S>.b<B>`: that generation places block B of stripe S on a node
  other than N (a stripe or block number the index does not have is never stale);
- an index copy: N is outside the copies' placement over the nodes that answer, every
  node of that placement holds a copy of that generation, and N's copy is readable and no
  newer (a replacement's copy after its node came back, a copy of an older placement).

A generation is **committed** when at least QUORUM copies on the placement name it, no
readable copy anywhere names a newer one, and (when whole copies were read) the copies of
that generation agree on every stripe's nodes. A volume without one (copies that disagree,
too few readable, a newer generation on one copy only: a write in progress or a split) has
nothing stale: nothing of it is ever deleted. A volume still migrating is never looked at
(its caller passes only written volumes).

**Reclaiming** (`reclaim`) runs under the cell's lock (f4.lock: no rebuild, rebalance or
migration runs meanwhile, so no new generation can place a block back on a node while its
stale copy is being deleted), re-reads every candidate volume's copies whole
(`read_view`), applies the rule again, and deletes a stale block or sidecar only when the
block's placed copy is healthy (f4.rebuild.check_block: its sidecar whole and every chunk
of the block matching it, read at the caller's pace), an index copy only when every copy of
the placement is readable at the committed generation. Deletes go through the storage
node's `DELETE /b/{node}/{name}` with the blocks credential; they are idempotent and each
decision is taken again on every run, so a run killed at any point leaves only files that
are still stale (a block deleted before its sidecar leaves a stale sidecar) for the next.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from f4 import index as index_file
from f4.block_store import BlockStore, index_name
from f4.errors import BlockMissing, BlockUnreachable, F4Error
from f4.index import INDEX_COPIES, RackOf, VolumeIndex
from f4.rebalance import listings_of
from f4.rebuild import Pacer, check_block

# Copies of the placement that must name a generation for it to count as committed.
QUORUM: Final = INDEX_COPIES // 2 + 1
# A watcher's pass under the cell's lock takes up at most this many stale files (each
# block's placed copy read whole first: 32 blocks of 1 GiB are ~11 min at 50 MB/s), so the
# lock is released between passes and a cron rebuild finds it free; the rest wait for the
# next pass. `pinhole f4 reclaim` takes up all it found.
RECLAIM_FILES_PER_RUN_MAX: Final = 64

BLOCK: Final = "block"
SIDECAR: Final = "sidecar"
INDEX: Final = "index"

_NAME: Final = re.compile(r"^v(\d+)\.(?:s(\d+)\.b(\d+)\.(blk|sum)|f4idx)$")


@dataclass(frozen=True, slots=True)
class StaleFile:
    node: str
    name: str
    volume: int
    kind: str  # BLOCK, SIDECAR or INDEX
    stripe: int = -1  # -1 for an index copy
    block: int = -1
    placed: str = ""  # the node the committed generation places the block on ("" for INDEX)


@dataclass(frozen=True, slots=True)
class VolumeView:
    """What the rule knows of one volume: its newest index, where its copies are placed
    (over the nodes that answer), and the generation each copy found names (node -> None
    when unreadable)."""

    index: VolumeIndex
    placement: tuple[str, ...]
    generations: Mapping[str, int | None]
    consistent: bool = True  # the copies of the newest generation agree (when read whole)


def parse_name(name: str) -> tuple[int, int, int, str] | None:
    """(volume, stripe, block, kind) of an object name; stripe and block -1 for an index
    copy; None for any other name."""
    m = _NAME.match(name)
    if m is None:
        return None
    if m[2] is None:
        return int(m[1]), -1, -1, INDEX
    return int(m[1]), int(m[2]), int(m[3]), BLOCK if m[4] == "blk" else SIDECAR


def committed(view: VolumeView) -> bool:
    """Whether the view's newest generation is committed (module docstring)."""
    generation = view.index.generation
    agreeing = sum(view.generations.get(n) == generation for n in view.placement)
    newer = any(g is not None and g > generation for g in view.generations.values())
    return view.consistent and agreeing >= QUORUM and not newer


def stale_files(
    listings: Mapping[str, Collection[str]], views: Mapping[int, VolumeView]
) -> list[StaleFile]:
    """The stale files among the nodes' listings (module docstring); a volume without a
    view has none."""
    out: list[StaleFile] = []
    for node in sorted(listings):
        for name in sorted(listings[node]):
            parsed = parse_name(name)
            if parsed is None:
                continue
            volume, stripe, block, kind = parsed
            view = views.get(volume)
            if view is None or not committed(view):
                continue
            idx = view.index
            if kind == INDEX:
                copy = view.generations.get(node)
                if (
                    node not in view.placement
                    and copy is not None
                    and copy <= idx.generation
                    and all(view.generations.get(n) == idx.generation for n in view.placement)
                ):
                    out.append(StaleFile(node, name, volume, INDEX))
                continue
            if stripe >= len(idx.stripes) or block >= len(idx.stripes[stripe].nodes):
                continue
            placed = idx.stripes[stripe].nodes[block]
            if placed != node:
                out.append(StaleFile(node, name, volume, kind, stripe, block, placed))
    return out


def holders(listings: Mapping[str, Collection[str]], volume: int) -> list[str]:
    """The answering nodes that hold a copy of the volume's index."""
    name = index_name(volume)
    return [n for n, names in listings.items() if name in names]


def peek(store: BlockStore, volume: int, node: str) -> int | None:
    """The generation the copy on `node` names (a 32-byte read); None when unreadable."""
    try:
        return index_file.peek_generation(store, volume, node)
    except (F4Error, struct.error):
        return None


def read_view(
    store: BlockStore,
    volume: int,
    listings: Mapping[str, Collection[str]],
    *,
    racks: RackOf | None = None,
) -> VolumeView | None:
    """The volume's view from its placed copies read whole (each checksum verified) and
    the generation named by every other copy in `listings`; None when no placed copy is
    readable."""
    placed = index_file.placed_copies(store, volume, racks=racks)
    copies = [c for c in placed.values() if c is not None]
    if not copies:
        return None
    newest = max(copies, key=lambda c: c.generation)
    generations: dict[str, int | None] = {
        n: (c.generation if c is not None else None) for n, c in placed.items()
    }
    for node in holders(listings, volume):
        if node not in generations:
            generations[node] = peek(store, volume, node)
    consistent = all(
        c.stripes == newest.stripes for c in copies if c.generation == newest.generation
    )
    return VolumeView(newest, tuple(placed), generations, consistent)


@dataclass(frozen=True, slots=True)
class Refused:
    file: StaleFile
    reason: str


@dataclass
class ReclaimReport:
    deleted: list[StaleFile] = field(default_factory=list)
    bytes_deleted: int = 0
    refused: list[Refused] = field(default_factory=list)  # stale, but not safe to delete now
    not_stale: int = 0  # candidates the rule, taken again on fresh copies, kept


def file_size(store: BlockStore, f: StaleFile) -> int | None:
    """The file's size (a HEAD), None when it is gone or its node does not answer."""
    try:
        return store.size(f.node, f.name)
    except (BlockMissing, BlockUnreachable):
        return None


def reclaim(
    store: BlockStore,
    candidates: Iterable[StaleFile],
    *,
    racks: RackOf | None = None,
    throttle: Pacer | None = None,
    files_max: int = RECLAIM_FILES_PER_RUN_MAX,
) -> ReclaimReport:
    """Deletes the candidates that are still stale and safe to delete (module docstring);
    the caller holds the cell's lock. At most `files_max` are taken up (deleted or
    refused)."""
    report = ReclaimReport()
    by_volume: dict[int, list[StaleFile]] = {}
    for f in candidates:
        by_volume.setdefault(f.volume, []).append(f)
    for volume in sorted(by_volume):
        sizes = {f: file_size(store, f) for f in by_volume[volume]}
        wanted = [f for f, size in sizes.items() if size is not None]
        report.not_stale += len(sizes) - len(wanted)  # gone meanwhile
        listings = {
            node: {f.name for f in wanted if f.node == node} | _index_names(store, node, volume)
            for node in {f.node for f in wanted}
        }
        try:
            view = read_view(store, volume, listings, racks=racks)
        except BlockUnreachable:
            view = None
        fresh = set(stale_files(listings, {volume: view} if view is not None else {}))
        healthy: dict[tuple[int, int], str | None] = {}
        # Blocks before their sidecars: a run killed between the two leaves a stale
        # sidecar, which the rule still finds; never a block without its sidecar's sums
        # still needed.
        for f in sorted(wanted, key=lambda f: (f.kind == SIDECAR, f.node, f.name)):
            if f not in fresh:
                report.not_stale += 1
                continue
            if len(report.deleted) + len(report.refused) >= files_max:
                break
            assert view is not None
            problem = _unsafe(store, view, f, healthy, racks, throttle)
            if problem is not None:
                report.refused.append(Refused(f, problem))
                continue
            try:
                store.delete(f.node, f.name)
            except F4Error as e:
                report.refused.append(Refused(f, f"delete failed: {e}"))
                continue
            report.deleted.append(f)
            report.bytes_deleted += sizes[f] or 0
    return report


def _index_names(store: BlockStore, node: str, volume: int) -> set[str]:
    """{the volume's index name} when `node` holds a copy, for `read_view`'s holders."""
    return {index_name(volume)} if store.exists(node, index_name(volume)) else set()


def _unsafe(
    store: BlockStore,
    view: VolumeView,
    f: StaleFile,
    healthy: dict[tuple[int, int], str | None],
    racks: RackOf | None,
    throttle: Pacer | None,
) -> str | None:
    """None when deleting the stale file loses nothing: the block's placed copy is present
    and healthy (checked once per block and run), or, for an index copy, every placed copy
    is readable at the committed generation; else why not."""
    idx = view.index
    if f.kind == INDEX:
        if all(view.generations.get(n) == idx.generation for n in view.placement):
            return None
        return "an index copy of the placement is missing or behind"
    key = (f.stripe, f.block)
    if key not in healthy:
        info = idx.stripes[f.stripe]
        placed = info.nodes[f.block]
        problem = check_block(
            store, f.volume, f.stripe, f.block, placed, info.block_length, throttle=throttle
        )
        healthy[key] = None if problem is None else f"the placed copy on {placed}: {problem}"
    return healthy[key]


def totals(
    files: Iterable[StaleFile], sizes: Mapping[tuple[str, str], int]
) -> dict[str, dict[str, int]]:
    """Per node: {"files": n, "bytes": b} of the stale files (sizes by (node, name))."""
    out: dict[str, dict[str, int]] = {}
    for f in files:
        row = out.setdefault(f.node, {"files": 0, "bytes": 0})
        row["files"] += 1
        row["bytes"] += sizes.get((f.node, f.name), 0)
    return dict(sorted(out.items()))


def survey(
    store: BlockStore,
    volumes: Iterable[int],
    *,
    racks: RackOf | None = None,
) -> tuple[list[StaleFile], dict[tuple[str, str], int]]:
    """The stale files of the written `volumes` on the nodes that answer, each volume's
    copies read whole (read_view), and their sizes by (node, name); a file gone meanwhile
    is left out. For the operator's commands (the watcher peeks instead)."""
    listings = listings_of(store)
    views: dict[int, VolumeView] = {}
    for v in volumes:
        try:
            view = read_view(store, v, listings, racks=racks)
        except F4Error:
            continue
        if view is not None:
            views[v] = view
    files, sizes = [], {}
    for f in stale_files(listings, views):
        size = file_size(store, f)
        if size is not None:
            files.append(f)
            sizes[(f.node, f.name)] = size
    return files, sizes
