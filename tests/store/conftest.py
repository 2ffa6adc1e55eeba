from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store.storage import OsStorage
from store.volume import Volume
from store.volume_config import VolumeLimits
from store.volume_loading import create_volume
from tests.store.twin import TwinStorage

SMALL = VolumeLimits(size_bytes_max=32 * 1024 * 1024, memtable_entries_max=64)


@pytest.fixture
def limits() -> VolumeLimits:
    return SMALL


@pytest.fixture
def os_storage(tmp_path: Path) -> OsStorage:
    return OsStorage(tmp_path / "vols")


@pytest.fixture
def twin() -> TwinStorage:
    return TwinStorage()


@pytest.fixture
def volume(os_storage: OsStorage, limits: VolumeLimits) -> Iterator[Volume]:
    v = create_volume(os_storage, 1, limits)
    yield v
    v.close()
