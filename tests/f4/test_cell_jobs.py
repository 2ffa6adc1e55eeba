"""A cell's migration and rebuild as LocalJobs: a cancel stops them at their next step,
nothing is reported done, and the next run completes from what is on disk."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from common.jobs.local import LocalJob, LocalJobCancelled
from f4 import index as index_file
from f4.block_store import block_name
from f4.cell import Cell
from f4.config import f4_config
from tests.f4.helpers import random_blobs, sealed_volume

VID = 3


def _cell(tmp_path: Path) -> Cell:
    haystack = tmp_path / "volumes"
    haystack.mkdir()
    sealed_volume(haystack, VID, random_blobs(random.Random(5), 40))
    config = f4_config(
        {"f4": {"cell_root": str(tmp_path / "cell"), "block_bytes": 64 * 1024, "age_s_min": 0}},
        haystack_dir=str(haystack),
    )
    return Cell(config)


def test_a_cancelled_migration_stops_unverified_and_the_next_run_completes(
    tmp_path: Path,
) -> None:
    cell = _cell(tmp_path)
    try:
        job = LocalJob("f4-migrate", VID)
        job.cancel()
        with pytest.raises(LocalJobCancelled):
            cell.migrate(VID, job=job)
        assert cell.verified(VID) is None
        mark = cell.migrate(VID)
        assert mark["blobs_checked"] == mark["blobs"] == 40
        assert cell.verified(VID) == mark
    finally:
        cell.close()


def test_a_cancelled_rebuild_stops_at_its_throttle(tmp_path: Path) -> None:
    cell = _cell(tmp_path)
    try:
        cell.migrate(VID)
        idx = index_file.load(cell.store, VID)
        cell.store.delete(idx.stripes[0].nodes[0], block_name(VID, 0, 0))
        assert not cell.verify(VID).ok
        job = LocalJob("f4-rebuild", VID)
        job.cancel()
        with pytest.raises(LocalJobCancelled):
            cell.rebuild(VID, job=job)
        assert not cell.verify(VID).ok  # nothing was rebuilt
        cell.rebuild(VID)
        assert cell.verify(VID).ok
    finally:
        cell.close()
