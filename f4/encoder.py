"""Migration of a sealed Haystack volume into f4 stripes, resumable after a crash anywhere.

Steps, each durable before the next and recorded in a journal file (atomically replaced):

1. plan: the live needles (f4.needle_source) and their placement (f4.layout), a pure
   function of the sealed volume as it was when the first run started (the file's end
   then, `source_end`, kept in the journal: deletes since then do not change the plan)
   and the settings (block size, code, nodes); the journal keeps its digest, and a resumed
   run refuses a volume or settings that no longer match (MigrationMismatch).
2. per stripe, in order:
   a. keys: a new (secret, nonce) for each blob without one, committed to the key store
      before any byte sealed with it is written (a key is never replaced);
   b. the 14 blocks are built together in memory, WINDOW_BYTES of each at a time: the data
      windows get their records sealed in place (zeros elsewhere), the parity windows are
      computed row by row (ROW_BYTES) from those same data windows, and every window is
      summed into its block's sidecar and written to its block's temporary file. Parity is
      thus computed from exactly the bytes written and summed, never read back; a data
      block an earlier run already wrote is regenerated the same way (same keys, same
      bytes), and its windows are compared with the block and checked against its sidecar
      before they are encoded, so parity never covers bytes that went bad (BlockCorrupt
      stops the migration);
   c. each block is committed with its last window, its sidecar first, then the block
      (temp, fsync, rename; a block of one window is put whole, after its sidecar);
   d. the journal records the stripe done once all 14 commits returned.
   The 14 blocks' writes and commits run at the same time, block i on lane i
   (f4.stripe_upload), while the next window is built: WINDOW_SETS sets of windows, a set
   reused only once the writes that used it returned; a stripe's commits overlap the next
   stripe's keys and first window, and the journal records the stripes in order. Any
   failure stops everything: what has not started never runs, every block not committed
   is aborted, nothing more is recorded.
3. the index, INDEX_COPIES copies; then the journal records the volume done.

A block that exists is complete (f4.block_store), and re-sealing with the stored key and
nonce writes the same bytes, so a resumed run skips what exists (asked once, before it
writes anything: only this migration writes the volume's blocks) and produces files
byte-identical to an uninterrupted run with the same keys. Nothing reads the volume from f4
before its index exists. Block i of stripe s goes to node (s + i) mod len(nodes): 14 distinct
failure domains when there are at least 14 nodes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import xxhash

from f4 import index as index_file
from f4 import layout, sidecar
from f4.blob import BlobId, BlobKey, seal_into, sealed_length
from f4.block_store import BlockStore, BlockWriter, Buffer, block_name, sidecar_name
from f4.erasure import DATA_BLOCKS, STRIPE_BLOCKS, Codec
from f4.errors import BlockCorrupt, MigrationMismatch
from f4.keystore import KeyStore
from f4.needle_source import NeedleRef, NeedleSource
from f4.stripe_upload import Lanes, StripeUpload, wait_all

ROW_BYTES: Final = 64 * 1024  # parity is computed this many bytes of each block at a time (see
# ARCHITECTURE.md: PyECLib encodes 64 KiB rows many times faster than 1 MiB rows)
WINDOW_BYTES: Final = 4 << 20  # a stripe is built this many bytes of each block at a time
WINDOW_SETS: Final = 2  # sets of STRIPE_BLOCKS windows: one is built while another is written
# A migration holds WINDOW_SETS x STRIPE_BLOCKS x WINDOW_BYTES (112 MiB) of windows, plus
# the one sealed record crossing a window's end.
WINDOWS_BYTES_MAX: Final = WINDOW_SETS * STRIPE_BLOCKS * WINDOW_BYTES
JOURNAL_VERSION: Final = 2  # 2: the journal keeps source_end

assert ROW_BYTES % sidecar.CHUNK_BYTES == 0 and ROW_BYTES % layout.ALIGN_BYTES == 0
assert WINDOW_BYTES % ROW_BYTES == 0


@dataclass(frozen=True, slots=True)
class MigrationStats:
    volume: int
    blobs: int
    stripes: int
    plaintext_bytes: int
    stored_bytes: int  # all blocks and sidecars written by this migration, whole
    stripes_resumed: int  # stripes found done by an earlier run
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.plaintext_bytes / 1e6 / self.seconds if self.seconds else 0.0


def journal_path(work_dir: Path, volume: int) -> Path:
    return work_dir / f"v{volume}.f4journal"


def stripe_nodes(nodes: list[str], stripe: int) -> tuple[str, ...]:
    return tuple(nodes[(stripe + i) % len(nodes)] for i in range(STRIPE_BLOCKS))


def _plan_digest(
    refs: list[NeedleRef],
    placements: list[layout.Placement],
    block_bytes: int,
    ec_type: str,
    nodes: list[str],
) -> str:
    h = xxhash.xxh3_128()
    h.update(f"{block_bytes} {ec_type} {nodes}".encode())
    for r, p in zip(refs, placements, strict=True):
        h.update(f"{r.key} {r.alt_key} {r.cookie} {r.offset} {r.data_size} {p};".encode())
    return h.hexdigest()


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Replaces `path` with `doc` durably: a temporary file, fsync, rename, directory fsync."""
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "wb") as f:
        f.write(json.dumps(doc, sort_keys=True).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChecksummedWriter:
    """Writes a block through a BlockWriter while building its sidecar; buffers so that the
    sidecar sees chunk-aligned pieces. The BlockWriter is opened at the first write: a block
    written in one piece (`commit_with`) needs none."""

    def __init__(self, store: BlockStore, node: str, name: str, sidecar_name: str) -> None:
        self._store = store
        self._node = node
        self._name = name
        self._sidecar_name = sidecar_name
        self._writer: BlockWriter | None = None
        self._sums = sidecar.SidecarBuilder()
        self._pending = bytearray()
        self.length = 0

    def _opened(self) -> BlockWriter:
        if self._writer is None:
            self._writer = self._store.open_writer(self._node, self._name)
        return self._writer

    def write(self, data: Buffer) -> None:
        if not self._pending and len(data) % sidecar.CHUNK_BYTES == 0:
            # Whole chunks with nothing pending: summed and written as they are, no copy.
            self._sums.update(data)
            self._opened().write(data)
            self.length += len(data)
            return
        self._pending += data
        self.length += len(data)
        if len(self._pending) >= ROW_BYTES:
            whole = len(self._pending) // sidecar.CHUNK_BYTES * sidecar.CHUNK_BYTES
            self._flush(whole)

    def _flush(self, n: int) -> None:
        piece = bytes(self._pending[:n])
        self._sums.update(piece)
        self._opened().write(piece)
        del self._pending[:n]

    def commit(self) -> None:
        """The sidecar first, then the block: a block that exists has its sidecar."""
        writer = self._opened()
        try:
            self._flush(len(self._pending))
            self._store.put(self._node, self._sidecar_name, [self._sums.encode()])
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    def commit_with(self, data: Buffer) -> None:
        """Writes `data` and commits. A block that is all in `data` (nothing written before)
        is put whole after its sidecar (`BlockStore.put`: one request to a storage node
        instead of an upload's three)."""
        if self._writer is not None or self._pending or self.length:
            try:
                self.write(data)
            except BaseException:
                self.abort()
                raise
            self.commit()
            return
        self._sums.update(data)
        self.length = len(data)
        self._store.put(self._node, self._sidecar_name, [self._sums.encode()])
        self._store.put(self._node, self._name, [data])

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


@dataclass(frozen=True, slots=True)
class _Record:
    offset: int  # in its data block
    length: int  # sealed
    needle: NeedleRef
    blob: BlobId
    key: BlobKey


class _DataBlockBuilder:
    """Produces one data block's bytes window by window, in order: each record sealed in
    place (a record crossing a window's end is sealed once aside and copied in two parts),
    zeros everywhere else."""

    def __init__(self, source: NeedleSource, records: list[_Record]) -> None:
        self._source = source
        self._records = sorted(records, key=lambda r: r.offset)
        self._next = 0
        self._carry: tuple[int, memoryview] | None = None  # (offset, sealed record)

    def fill(self, window: memoryview, start: int) -> None:
        """Writes the block's bytes [start, start + len(window)) into `window`."""
        end = start + len(window)
        at = start  # bytes before `at` are written
        while at < end:
            if self._carry is not None:
                offset, record = self._carry
                piece = record[at - offset : end - offset]
                window[at - start : at - start + len(piece)] = piece
                at += len(piece)
                if offset + len(record) <= end:
                    self._carry = None
                continue
            if self._next == len(self._records) or self._records[self._next].offset >= end:
                window[at - start :] = bytes(end - at)
                return
            r = self._records[self._next]
            self._next += 1
            if r.offset < at:
                raise ValueError("records of a data block overlap")
            window[at - start : r.offset - start] = bytes(r.offset - at)
            plaintext = self._source.read_view(r.needle)  # valid until the next read
            if r.offset + r.length <= end:
                seal_into(
                    r.key, r.blob, plaintext, window[r.offset - start : r.offset - start + r.length]
                )
                at = r.offset + r.length
            else:
                aside = bytearray(r.length)
                seal_into(r.key, r.blob, plaintext, aside)
                self._carry = (r.offset, memoryview(aside))
                at = r.offset


@dataclass(slots=True)
class _WindowSet:
    windows: list[memoryview]  # one per block of a stripe
    sending: list[Future[None]] = field(default_factory=list)  # the writes still using them


@dataclass(frozen=True, slots=True)
class _Stripe:
    """A stripe being migrated: what builds its data blocks, what checks those an earlier
    run wrote, and the upload of the blocks still to write (None when none is)."""

    index: int
    block_length: int
    nodes: tuple[str, ...]
    builders: list[_DataBlockBuilder]
    written: dict[int, tuple[int, ...]]  # data block -> its sums on disk
    upload: StripeUpload | None


class Migration:
    def __init__(
        self,
        source: NeedleSource,
        store: BlockStore,
        keys: KeyStore,
        work_dir: Path,
        *,
        block_bytes: int = layout.DEFAULT_BLOCK_BYTES,
        codec: Codec | None = None,
        on_step: Callable[[str], None] | None = None,
        racks: index_file.RackOf | None = None,
    ) -> None:
        """`racks`: the cell's racks, so the index copies go on distinct racks."""
        self.source = source
        self.volume = source.volume
        self.racks = racks
        self.store = store
        self.keys = keys
        self.work_dir = work_dir
        self.block_bytes = block_bytes
        self.codec = codec or Codec()
        self._on_step = on_step or (lambda step: None)
        self._nodes = store.nodes()
        self._window_sets: list[_WindowSet] = []  # reused by every stripe (_allocate_windows)
        self._next_set = 0

    def run(self) -> MigrationStats:
        started = time.monotonic()
        end = self._source_end()
        refs = self.source.live_needles(end=end, flags=False)
        placements, shapes = layout.plan(
            [sealed_length(r.data_size) for r in refs], self.block_bytes
        )
        digest = _plan_digest(refs, placements, self.block_bytes, self.codec.ec_type, self._nodes)
        journal = self._open_journal(digest, end)
        resumed = int(journal["stripes_done"])
        by_stripe: list[list[tuple[NeedleRef, layout.Placement]]] = [[] for _ in shapes]
        for r, p in zip(refs, placements, strict=True):
            by_stripe[p.stripe].append((r, p))
        stored = sum(
            STRIPE_BLOCKS * (shape.block_length + sidecar.file_length(shape.block_length))
            for shape in shapes
        )
        self._allocate_windows(max((s.block_length for s in shapes[resumed:]), default=0))
        try:
            with Lanes() as lanes:
                try:
                    self._migrate_stripes(lanes, shapes, by_stripe, journal)
                except BaseException:
                    lanes.abandon()
                    raise
        finally:
            self._window_sets = []
        if not journal["done"]:
            entries = {
                (r.key, r.alt_key): index_file.Entry(
                    p.stripe, p.block, p.offset, p.length, r.cookie
                )
                for r, p in zip(refs, placements, strict=True)
            }
            stripes = tuple(
                index_file.StripeInfo(shape.block_length, stripe_nodes(self._nodes, s))
                for s, shape in enumerate(shapes)
            )
            index_file.write(
                self.store,
                index_file.VolumeIndex(self.volume, 1, stripes, entries),
                racks=self.racks,
            )
            self._on_step("index")
            journal["done"] = True
            write_json_atomic(journal_path(self.work_dir, self.volume), journal)
        return MigrationStats(
            volume=self.volume,
            blobs=len(refs),
            stripes=len(shapes),
            plaintext_bytes=sum(r.data_size for r in refs),
            stored_bytes=stored,
            stripes_resumed=resumed,
            seconds=time.monotonic() - started,
        )

    def _migrate_stripes(
        self,
        lanes: Lanes,
        shapes: list[layout.StripeShape],
        by_stripe: list[list[tuple[NeedleRef, layout.Placement]]],
        journal: dict[str, Any],
    ) -> None:
        """Every stripe not done yet, in order, at most two in flight: a stripe's blocks are
        still being written and committed on the lanes while the next one's keys are
        committed and its first window is built; the journal records a stripe only after
        all its blocks are committed, and the stripes in order."""
        first = int(journal["stripes_done"])
        exist = self._existing(lanes, range(first, len(shapes)))
        previous: _Stripe | None = None
        for s in range(first, len(shapes)):
            stripe = self._start_stripe(lanes, s, shapes[s], by_stripe[s], exist[s - first])
            if stripe.upload is not None:
                for start in range(0, shapes[s].block_length, WINDOW_BYTES):
                    self._send_window(stripe, start)
                    if previous is not None:  # this stripe's first window is on its way
                        self._finish_stripe(previous, journal)
                        previous = None
            if previous is not None:
                self._finish_stripe(previous, journal)
            previous = stripe
        if previous is not None:
            self._finish_stripe(previous, journal)

    def _existing(self, lanes: Lanes, stripes: range) -> list[list[bool]]:
        """Which blocks of `stripes` an earlier run wrote, asked before anything is written
        (block i of every stripe on lane i): only this migration, under the cell's lock,
        writes the volume's blocks, so the answers hold until it writes them."""

        def column(block: int) -> list[bool]:
            return [
                self.store.exists(
                    stripe_nodes(self._nodes, s)[block], block_name(self.volume, s, block)
                )
                for s in stripes
            ]

        futures = [lanes.submit(i, column, i) for i in range(STRIPE_BLOCKS)]
        wait_all(futures)
        columns = [f.result() for f in futures]
        return [[columns[i][n] for i in range(STRIPE_BLOCKS)] for n in range(len(stripes))]

    def _source_end(self) -> int:
        """Where the volume's file ended when the first run of this migration started."""
        path = journal_path(self.work_dir, self.volume)
        if path.exists():
            journal = json.loads(path.read_bytes())
            if journal.get("version") == JOURNAL_VERSION:
                return int(journal["source_end"])
        return self.source.size()

    def _open_journal(self, digest: str, end: int) -> dict[str, Any]:
        path = journal_path(self.work_dir, self.volume)
        if path.exists():
            journal: dict[str, Any] = json.loads(path.read_bytes())
            if journal.get("version") != JOURNAL_VERSION or journal.get("plan") != digest:
                raise MigrationMismatch(
                    f"volume {self.volume}: the journal was written for other contents or settings"
                )
            return journal
        journal = {
            "version": JOURNAL_VERSION,
            "volume": self.volume,
            "plan": digest,
            "source_end": end,
            "stripes_done": 0,
            "done": False,
        }
        write_json_atomic(path, journal)
        return journal

    def _start_stripe(
        self,
        lanes: Lanes,
        stripe: int,
        shape: layout.StripeShape,
        blobs: list[tuple[NeedleRef, layout.Placement]],
        exist: list[bool],
    ) -> _Stripe:
        """Commits the stripe's keys and prepares the upload of its blocks not written yet
        (`exist`; no upload when all 14 exist)."""
        ids = [BlobId(self.volume, r.key, r.alt_key) for r, _ in blobs]
        keys = self.keys.get_many(ids)
        # Only this migration (under the cell's lock) adds keys, so once committed the new
        # keys are the stored ones: no second read.
        new = {b: BlobKey.new() for b in ids if b not in keys}
        self.keys.put_many(new.items())
        keys.update(new)
        self._on_step(f"keys {stripe}")
        nodes = stripe_nodes(self._nodes, stripe)
        todo = [i for i in range(STRIPE_BLOCKS) if not exist[i]]
        if not todo:
            return _Stripe(stripe, shape.block_length, nodes, [], {}, None)
        # Data blocks an earlier run wrote: regenerated, compared and checked (_check_written).
        written = {
            i: self._sums_on_disk(nodes, stripe, i, shape) for i in range(DATA_BLOCKS) if exist[i]
        }
        records: list[list[_Record]] = [[] for _ in range(DATA_BLOCKS)]
        for (r, p), b in zip(blobs, ids, strict=True):
            records[p.block].append(_Record(p.offset, p.length, r, b, keys[b]))
        builders = [_DataBlockBuilder(self.source, records[i]) for i in range(DATA_BLOCKS)]
        upload = StripeUpload(lanes, {i: self._writer(nodes, stripe, i) for i in todo})
        return _Stripe(stripe, shape.block_length, nodes, builders, written, upload)

    def _send_window(self, stripe: _Stripe, start: int) -> None:
        """Builds the stripe's 14 windows at `start` in the next set of buffers (once the
        writes that last used that set have returned) and starts writing them."""
        assert stripe.upload is not None
        window_set = self._window_sets[self._next_set]
        self._next_set = (self._next_set + 1) % WINDOW_SETS
        wait_all(window_set.sending)
        n = min(WINDOW_BYTES, stripe.block_length - start)
        views = [w[:n] for w in window_set.windows]
        for i, builder in enumerate(stripe.builders):
            builder.fill(views[i], start)
        for i, sums in stripe.written.items():
            self._check_written(stripe.nodes, stripe.index, i, sums, views[i], start)
        for row in range(0, n, ROW_BYTES):
            end = min(row + ROW_BYTES, n)
            self.codec.parity_into(
                [v[row:end] for v in views[:DATA_BLOCKS]],
                [v[row:end] for v in views[DATA_BLOCKS:]],
            )
        last = start + n == stripe.block_length
        window_set.sending = stripe.upload.write(views, last=last)

    def _finish_stripe(self, stripe: _Stripe, journal: dict[str, Any]) -> None:
        """Waits for the stripe's commits (its steps in block order), then records it."""
        if stripe.upload is not None:
            for i, commit in stripe.upload.commits.items():
                wait_all([commit])
                if i < DATA_BLOCKS:
                    self._on_step(f"data {stripe.index}.{i}")
            self._on_step(f"parity {stripe.index}")
        journal["stripes_done"] = stripe.index + 1
        write_json_atomic(journal_path(self.work_dir, self.volume), journal)
        self._on_step(f"stripe {stripe.index}")

    def _allocate_windows(self, block_length: int) -> None:
        """WINDOW_SETS sets of STRIPE_BLOCKS buffers, as wide as the widest window to
        build, allocated once per migration: a fresh set per stripe costs its page faults
        every time. Every byte of a window is written before it is used (records and
        zeros, or parity)."""
        width = min(WINDOW_BYTES, block_length)
        self._window_sets = [
            _WindowSet([memoryview(bytearray(width)) for _ in range(STRIPE_BLOCKS)])
            for _ in range(WINDOW_SETS)
        ]
        self._next_set = 0

    def _check_written(
        self,
        nodes: tuple[str, ...],
        stripe: int,
        block: int,
        sums: tuple[int, ...],
        window: memoryview,
        start: int,
    ) -> None:
        """BlockCorrupt unless the block an earlier run wrote holds exactly the regenerated
        `window` at `start` and its sidecar vouches for those bytes (a resumed stripe only)."""
        name = block_name(self.volume, stripe, block)
        on_disk = self.store.get_range(nodes[block], name, start, len(window))
        try:
            if on_disk != window:
                raise BlockCorrupt(f"bytes differ in [{start}, {start + len(window)})")
            c = sidecar.CHUNK_BYTES
            sidecar.check_sums(window, start, sums[start // c :], c)
        except BlockCorrupt as e:
            raise BlockCorrupt(
                f"{nodes[block]}/{name} does not hold the bytes this migration writes there: {e}"
            ) from None

    def _sums_on_disk(
        self, nodes: tuple[str, ...], stripe: int, block: int, shape: layout.StripeShape
    ) -> tuple[int, ...]:
        raw = self.store.get(nodes[block], sidecar_name(self.volume, stripe, block))
        sums = sidecar.decode(raw)
        if sums.block_length != shape.block_length or sums.chunk_bytes != sidecar.CHUNK_BYTES:
            raise BlockCorrupt(
                f"{nodes[block]}/{sidecar_name(self.volume, stripe, block)} describes another block"
            )
        return sums.sums

    def _writer(self, nodes: tuple[str, ...], stripe: int, block: int) -> ChecksummedWriter:
        return ChecksummedWriter(
            self.store,
            nodes[block],
            block_name(self.volume, stripe, block),
            sidecar_name(self.volume, stripe, block),
        )
