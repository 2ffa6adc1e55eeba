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
   b. the 10 data blocks, each with its sidecar first, then the block (temp, fsync, rename);
   c. the 4 parity blocks, computed row by row from the data blocks as written (read back
      and checked against their sidecars: parity never covers bytes that went bad);
   d. the journal records the stripe done.
3. the index, INDEX_COPIES copies; then the journal records the volume done.

A block that exists is complete (f4.block_store), and re-sealing with the stored key and
nonce writes the same bytes, so a resumed run skips what exists and produces files
byte-identical to an uninterrupted run with the same keys. Nothing reads the volume from f4
before its index exists. Block i of stripe s goes to node (s + i) mod len(nodes): 14 distinct
failure domains when there are at least 14 nodes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import xxhash

from f4 import index as index_file
from f4 import layout, sidecar
from f4.blob import BlobId, BlobKey, seal, sealed_length
from f4.block_store import BlockStore, BlockWriter, Buffer, block_name, sidecar_name
from f4.erasure import DATA_BLOCKS, STRIPE_BLOCKS, Codec
from f4.errors import MigrationMismatch
from f4.keystore import KeyStore
from f4.needle_source import NeedleRef, NeedleSource
from f4.stripe import ReadCounter, StripeRef, read_checked

ROW_BYTES: Final = 64 * 1024  # parity is computed this many bytes of each block at a time (see
# ARCHITECTURE.md: PyECLib encodes 64 KiB rows many times faster than 1 MiB rows)
JOURNAL_VERSION: Final = 2  # 2: the journal keeps source_end

assert ROW_BYTES % sidecar.CHUNK_BYTES == 0 and ROW_BYTES % layout.ALIGN_BYTES == 0


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
    sidecar sees chunk-aligned pieces."""

    def __init__(self, store: BlockStore, node: str, name: str, sidecar_name: str) -> None:
        self._store = store
        self._node = node
        self._sidecar_name = sidecar_name
        self._writer: BlockWriter = store.open_writer(node, name)
        self._sums = sidecar.SidecarBuilder()
        self._pending = bytearray()
        self.length = 0

    def write(self, data: Buffer) -> None:
        if not self._pending and len(data) % sidecar.CHUNK_BYTES == 0:
            # Whole chunks with nothing pending: summed and written as they are, no copy.
            self._sums.update(data)
            self._writer.write(data)
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
        self._writer.write(piece)
        del self._pending[:n]

    def commit(self) -> None:
        """The sidecar first, then the block: a block that exists has its sidecar."""
        try:
            self._flush(len(self._pending))
            self._store.put(self._node, self._sidecar_name, [self._sums.encode()])
        except BaseException:
            self._writer.abort()
            raise
        self._writer.commit()

    def abort(self) -> None:
        self._writer.abort()


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
    ) -> None:
        self.source = source
        self.volume = source.volume
        self.store = store
        self.keys = keys
        self.work_dir = work_dir
        self.block_bytes = block_bytes
        self.codec = codec or Codec()
        self._on_step = on_step or (lambda step: None)
        self._nodes = store.nodes()

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
        stored = 0
        for s, shape in enumerate(shapes):
            stored += shape.block_length * STRIPE_BLOCKS
            stored += STRIPE_BLOCKS * sidecar.file_length(shape.block_length)
            if s < resumed:
                continue
            self._migrate_stripe(s, shape, by_stripe[s])
            journal["stripes_done"] = s + 1
            write_json_atomic(journal_path(self.work_dir, self.volume), journal)
            self._on_step(f"stripe {s}")
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
            index_file.write(self.store, index_file.VolumeIndex(self.volume, 1, stripes, entries))
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

    def _migrate_stripe(
        self,
        stripe: int,
        shape: layout.StripeShape,
        blobs: list[tuple[NeedleRef, layout.Placement]],
    ) -> None:
        ids = [BlobId(self.volume, r.key, r.alt_key) for r, _ in blobs]
        have = self.keys.get_many(ids)
        self.keys.put_many((b, BlobKey.new()) for b in ids if b not in have)
        keys = self.keys.get_many(ids)
        self._on_step(f"keys {stripe}")
        nodes = stripe_nodes(self._nodes, stripe)
        for block in range(DATA_BLOCKS):
            if self.store.exists(nodes[block], block_name(self.volume, stripe, block)):
                continue
            w = self._writer(nodes, stripe, block)
            try:
                for (r, p), b in zip(blobs, ids, strict=True):
                    if p.block == block:
                        w.write(seal(keys[b], b, self.source.read(r)))
                w.write(bytes(shape.block_length - w.length))
            except BaseException:
                w.abort()
                raise
            w.commit()
            self._on_step(f"data {stripe}.{block}")
        self._write_parity(stripe, shape, nodes)
        self._on_step(f"parity {stripe}")

    def _writer(self, nodes: tuple[str, ...], stripe: int, block: int) -> ChecksummedWriter:
        return ChecksummedWriter(
            self.store,
            nodes[block],
            block_name(self.volume, stripe, block),
            sidecar_name(self.volume, stripe, block),
        )

    def _write_parity(self, stripe: int, shape: layout.StripeShape, nodes: tuple[str, ...]) -> None:
        todo = [
            i
            for i in range(DATA_BLOCKS, STRIPE_BLOCKS)
            if not self.store.exists(nodes[i], block_name(self.volume, stripe, i))
        ]
        if not todo:
            return
        writers = {i: self._writer(nodes, stripe, i) for i in todo}
        ref = StripeRef(self.volume, stripe, index_file.StripeInfo(shape.block_length, nodes))
        counter = ReadCounter()
        try:
            for offset in range(0, shape.block_length, ROW_BYTES):
                length = min(ROW_BYTES, shape.block_length - offset)
                rows = [
                    read_checked(self.store, ref, b, offset, offset + length, counter)
                    for b in range(DATA_BLOCKS)
                ]
                for i, row in enumerate(self.codec.parity(rows), start=DATA_BLOCKS):
                    if i in writers:
                        writers[i].write(row)
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        for i in todo:
            writers[i].commit()
