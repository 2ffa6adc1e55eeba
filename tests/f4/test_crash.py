"""Crashes at every step of a migration, and real kill -9 of a migration and of a rebuild:
the resumed run finishes, nothing half-written is taken as complete, and the files are
byte-identical to an uninterrupted run with the same keys."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from f4 import index as index_file
from f4.block_store import block_name
from f4.encoder import Migration, stripe_nodes
from f4.errors import IndexUnavailable, MigrationMismatch
from f4.local_block_store import TEMP_SUFFIX
from f4.needle_source import NeedleSource
from f4.reader import Reader
from f4.rebuild import rebuild, verify
from tests.f4.helpers import SMALL_BLOCK, Blobs, Cell, make_cell, random_blobs, sealed_volume

VID = 2
REPO = Path(__file__).resolve().parents[2]
# Every step with F4_SLOW_TESTS=1; by default one of each kind.
EVERY_STEP = os.environ.get("F4_SLOW_TESTS") == "1"
QUICK_STEPS = ("keys 0", "data 0.0", "parity 0", "stripe 0", "data 1.9", "stripe 1", "index")


class Crash(Exception):
    pass


def _files(cell: Cell) -> dict[str, bytes]:
    blocks = cell.store.root
    return {
        str(p.relative_to(blocks)): p.read_bytes()
        for p in sorted(blocks.rglob("*"))
        if p.is_file() and not p.name.endswith(".tmp")
    }


def _check_resumed(cell: Cell, blobs: Blobs, tmp: Path, vols: Path) -> None:
    assert verify(cell.store, VID).ok
    reader = Reader(cell.store, cell.keys)
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data
    # An uninterrupted run with the same keys writes exactly the same files.
    again = make_cell(tmp, keys=cell.keys)
    again.migrate(vols, VID)
    assert _files(again) == _files(cell)


@pytest.fixture
def blobs() -> Blobs:
    return random_blobs(random.Random(11), 130)


@pytest.fixture
def vols(tmp_path: Path, blobs: Blobs) -> Path:
    return sealed_volume(tmp_path / "vols", VID, blobs)


def test_crash_after_every_step_then_resume(tmp_path: Path, blobs: Blobs, vols: Path) -> None:
    steps: list[str] = []
    make_cell(tmp_path / "reference").migrate(vols, VID, on_step=steps.append)
    assert steps[0] == "keys 0" and steps[-1] == "index"
    assert any(s.startswith("parity 1") for s in steps)
    if not EVERY_STEP:
        steps = [s for s in steps if s in QUICK_STEPS]
        assert len(steps) == len(QUICK_STEPS)
    for n, step in enumerate(steps):

        def crash(s: str, step: str = step) -> None:
            if s == step:
                raise Crash(s)

        cell = make_cell(tmp_path / f"c{n}")
        with pytest.raises(Crash):
            cell.migrate(vols, VID, on_step=crash)
        if step != "index":
            with pytest.raises(IndexUnavailable):
                index_file.load(cell.store, VID)  # no reader sees a half-migrated volume
        stats = cell.migrate(vols, VID)
        assert stats.blobs == len(blobs)
        _check_resumed(cell, blobs, tmp_path / f"again{n}", vols)


def _run_killed(code: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL


def test_kill_9_during_migration_then_resume(tmp_path: Path, blobs: Blobs, vols: Path) -> None:
    cell_dir = tmp_path / "cell"
    _run_killed(
        f"""
        import os, signal
        from pathlib import Path
        from tests.f4.helpers import make_cell

        def step(s):
            if s == "data 1.4":
                os.kill(os.getpid(), signal.SIGKILL)

        make_cell(Path({str(cell_dir)!r})).migrate(Path({str(vols)!r}), {VID}, on_step=step)
        """
    )
    cell = make_cell(cell_dir)
    nodes = stripe_nodes(cell.store.nodes(), 1)
    # Blocks 0-4 of stripe 1 were committed before its step "data 1.4"; its other blocks
    # (and the next stripe's) were being written at the same time, committed or not. A
    # temporary never stands for a complete block; the cell's lock holder removes them
    # before it runs anything.
    assert all(cell.store.exists(nodes[b], block_name(VID, 1, b)) for b in range(5))
    temporaries = list(cell.store.root.glob(f"*/*{TEMP_SUFFIX}"))
    assert not any((t.parent / t.name.rsplit(".", 2)[0]).exists() for t in temporaries)
    assert cell.store.clean_temporaries() == len(temporaries)
    stats = cell.migrate(vols, VID)
    assert stats.stripes_resumed == 1
    assert cell.store.clean_temporaries() == 0
    _check_resumed(cell, blobs, tmp_path / "again", vols)


def test_kill_9_during_rebuild_then_resume(tmp_path: Path, blobs: Blobs, vols: Path) -> None:
    cell = make_cell(tmp_path / "cell")
    cell.migrate(vols, VID)
    before = _files(cell)
    idx = index_file.load(cell.store, VID)
    lost = [(0, 2), (0, 11), (1, 0), (1, 7)]
    for s, b in lost:
        (cell.store.root / idx.stripes[s].nodes[b] / block_name(VID, s, b)).unlink()
    _run_killed(
        f"""
        import os, signal
        from f4.local_block_store import LocalBlockStore
        from f4.rebuild import rebuild

        def progress(p):
            if p.blocks_done == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        store = LocalBlockStore({str(cell.store.root)!r}, {cell.store.nodes()!r})
        rebuild(store, {VID}, on_progress=progress)
        """
    )
    assert len(verify(cell.store, VID).damage) == 2
    stats = rebuild(cell.store, VID)
    assert stats.blocks_rebuilt == 2
    assert verify(cell.store, VID).ok
    assert _files(cell) == before
    reader = Reader(cell.store, cell.keys)
    for (key, alt), (cookie, data) in blobs.items():
        assert reader.read(VID, key, alt, cookie) == data


def test_kill_9_in_the_middle_of_a_block_write(tmp_path: Path, blobs: Blobs, vols: Path) -> None:
    cell_dir = tmp_path / "cell"
    _run_killed(
        f"""
        import os, signal
        from pathlib import Path
        from f4.local_block_store import LocalBlockStore, LocalBlockWriter
        from tests.f4 import helpers

        class Dying(LocalBlockWriter):
            writes = 0

            def write(self, data):
                super().write(data)
                Dying.writes += 1
                if Dying.writes == 12:
                    os.kill(os.getpid(), signal.SIGKILL)

        class Store(LocalBlockStore):
            def open_writer(self, node, name):
                return Dying(self.root / node, name)

        cell = helpers.make_cell(Path({str(cell_dir)!r}))
        cell.store = Store(cell.store.root, cell.store.nodes())
        cell.migrate(Path({str(vols)!r}), {VID})
        """
    )
    cell = make_cell(cell_dir)
    assert list(cell.store.root.rglob("*.tmp"))  # the torn block is only a temporary
    stats = cell.migrate(vols, VID)
    assert stats.stripes_resumed == 0
    assert cell.store.clean_temporaries() >= 1
    _check_resumed(cell, blobs, tmp_path / "again", vols)


def test_resume_refuses_other_settings(tmp_path: Path, vols: Path) -> None:
    def crash(step: str) -> None:
        if step == "stripe 0":
            raise Crash(step)

    cell = make_cell(tmp_path / "cell")
    with pytest.raises(Crash):
        cell.migrate(vols, VID, on_step=crash)
    source = NeedleSource(vols, VID)
    with pytest.raises(MigrationMismatch):
        Migration(source, cell.store, cell.keys, cell.work, block_bytes=2 * SMALL_BLOCK).run()
    source.close()
    cell.migrate(vols, VID)  # the settings it started with still resume
    assert verify(cell.store, VID).ok
