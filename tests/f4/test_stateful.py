"""A state machine over migrate / delete / lose block / rebuild / read against a model: every
read answers what the model says (the bytes, or absent once deleted) whatever blocks are
lost, as long as no stripe has lost more than 4."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from f4 import index as index_file
from f4.block_store import block_name
from f4.erasure import PARITY_BLOCKS, STRIPE_BLOCKS
from f4.errors import BlobAbsent
from f4.reader import Reader, delete
from f4.rebuild import rebuild, verify
from tests.f4.helpers import Blobs, make_cell, random_blobs, sealed_volume


class F4Cell(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="f4-state-"))
        self.cell = make_cell(self.tmp / "cell")
        self.model: dict[int, Blobs] = {}  # volume -> live blobs
        self.deleted: dict[int, Blobs] = {}
        self.damaged: dict[tuple[int, int], set[int]] = {}  # (volume, stripe) -> blocks

    def teardown(self) -> None:
        self.cell.keys.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @precondition(lambda self: len(self.model) < 3)
    @rule(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 40))
    def migrate(self, seed: int, count: int) -> None:
        vid = len(self.model) + 1
        blobs = random_blobs(random.Random(seed), count)
        sealed_volume(self.tmp / f"vols{vid}", vid, blobs)
        stats = self.cell.migrate(self.tmp / f"vols{vid}", vid)
        assert stats.blobs == count
        self.model[vid] = blobs
        self.deleted[vid] = {}

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def delete_blob(self, data: st.DataObject) -> None:
        vid = data.draw(st.sampled_from(sorted(v for v, b in self.model.items() if b)))
        blob = data.draw(st.sampled_from(sorted(self.model[vid])))
        assert delete(self.cell.keys, vid, *blob)
        self.deleted[vid][blob] = self.model[vid].pop(blob)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), corrupt=st.booleans())
    def lose_block(self, data: st.DataObject, corrupt: bool) -> None:
        vid = data.draw(st.sampled_from(sorted(self.model)))
        idx = index_file.load(self.cell.store, vid)
        stripe = data.draw(st.integers(0, len(idx.stripes) - 1))
        lost = self.damaged.setdefault((vid, stripe), set())
        if len(lost) == PARITY_BLOCKS:
            return
        block = data.draw(st.sampled_from([b for b in range(STRIPE_BLOCKS) if b not in lost]))
        path = (
            self.cell.store.root / idx.stripes[stripe].nodes[block] / block_name(vid, stripe, block)
        )
        if corrupt:
            raw = bytearray(path.read_bytes())
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= 0x5A
            path.write_bytes(bytes(raw))
        else:
            path.unlink()
        lost.add(block)

    @rule()
    def rebuild_all(self) -> None:
        for vid in self.model:
            rebuild(self.cell.store, vid)
            assert verify(self.cell.store, vid).ok
        self.damaged.clear()

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        vid = data.draw(st.sampled_from(sorted(self.model)))
        reader = Reader(self.cell.store, self.cell.keys)
        everything = {**self.model[vid], **self.deleted[vid]}
        blob = data.draw(st.sampled_from(sorted(everything)))
        cookie, payload = everything[blob]
        if blob in self.model[vid]:
            assert reader.read(vid, *blob, cookie) == payload
        else:
            try:
                reader.read(vid, *blob, cookie)
            except BlobAbsent:
                pass
            else:
                raise AssertionError("a deleted blob was served")

    @invariant()
    def no_stripe_beyond_repair(self) -> None:
        assert all(len(b) <= PARITY_BLOCKS for b in self.damaged.values())


F4Cell.TestCase.settings = settings(max_examples=12, stateful_step_count=14, deadline=None)
TestF4Cell = F4Cell.TestCase
