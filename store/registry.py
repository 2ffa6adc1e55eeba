"""The volume registry: which volumes this node holds, and their administration.

It owns the `volumes` dict (volume id -> open Volume), opens every volume of the data
directory at start, creates, deletes and closes volumes, and sets their mode. Blocking
volume work runs on the node's admin pool; changes to the set of volumes, or to a volume's
state, happen under one asyncio lock and set `changed` (the heartbeat then beats at once).

Invariant: a volume id is in `volumes` exactly while its Volume is open; a deleted volume
is removed from `volumes` before its files are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from functools import partial
from typing import Final, TypeVar

from common import photo
from store.config import StoreConfig
from store.errors import NodeBusy, StoreBadRequest, StoreError, VolumeExists, VolumeNotOnNode
from store.storage import Storage
from store.volume import Volume
from store.volume_loading import create_volume, open_volume, remove_volume_files, volume_ids
from store.volume_pull import remove_pull_files
from store.volume_state import Mode, Reason, VolumeState, read_only, sealed

log = logging.getLogger("pinhole.store")

T = TypeVar("T")

VOLUME_ID_MAX: Final = photo.VOLUME_ID_MAX


def check_volume_id(vid: int) -> None:
    if not 0 <= vid <= VOLUME_ID_MAX:
        raise StoreBadRequest(f"volume id must be within 0..{VOLUME_ID_MAX}")


class VolumeRegistry:
    def __init__(self, config: StoreConfig, storage: Storage, admin_pool: Executor) -> None:
        self.config = config
        self.storage = storage
        self.volumes: dict[int, Volume] = {}
        # Set whenever the set of volumes or a volume's state changes.
        self.changed = asyncio.Event()
        self.lock = asyncio.Lock()
        self._admin_pool = admin_pool

    async def run_admin(self, fn: Callable[[], T]) -> T:
        """Runs a blocking call on the admin pool."""
        return await asyncio.get_running_loop().run_in_executor(self._admin_pool, fn)

    async def open_all(self) -> None:
        """Opens every volume of the data directory (at start)."""
        ids = volume_ids(self.storage)
        if len(ids) > self.config.volumes_max:
            raise StoreError(f"{len(ids)} volumes exceed volumes_max={self.config.volumes_max}")
        opened = await asyncio.gather(*(self.run_admin(partial(self._open, vid)) for vid in ids))
        for vol in opened:
            self.volumes[vol.id] = vol

    def _open(self, vid: int) -> Volume:
        t0 = time.monotonic()
        vol = open_volume(self.storage, vid, self.config.volume)
        log.info(
            "v%d open in %.2f s: %d live needles, %d scanned, %d torn bytes cut",
            vid,
            time.monotonic() - t0,
            vol.needles_live,
            vol.opened_scan_needles,
            vol.opened_torn_bytes,
        )
        return vol

    async def close_all(self) -> None:
        vols = list(self.volumes.values())
        self.volumes.clear()
        await asyncio.gather(*(self.run_admin(v.close) for v in vols))

    def volume(self, vid: int) -> Volume:
        vol = self.volumes.get(vid)
        if vol is None:
            raise VolumeNotOnNode(f"volume {vid} is not on this node")
        return vol

    def check_room(self) -> None:
        """NodeBusy when the node holds volumes_max volumes."""
        if len(self.volumes) >= self.config.volumes_max:
            raise NodeBusy(f"this node holds volumes_max={self.config.volumes_max} volumes")

    def add(self, vol: Volume) -> None:
        """Registers a volume opened elsewhere (a pull's install); under `lock`."""
        self.volumes[vol.id] = vol
        self.changed.set()

    async def create_volume(self, vid: int, *, check: Callable[[], None] = lambda: None) -> Volume:
        """Creates volume `vid`; `check` (under the lock) may refuse it by raising."""
        check_volume_id(vid)
        async with self.lock:
            if vid in self.volumes:
                raise VolumeExists(f"volume {vid} exists")
            check()
            self.check_room()
            vol = await self.run_admin(lambda: create_volume(self.storage, vid, self.config.volume))
            self.volumes[vid] = vol
        self.changed.set()
        return vol

    async def delete_volume(self, vid: int, *, stop_work: Callable[[int], Awaitable[None]]) -> None:
        """Closes volume `vid` and removes its files and those of a pull of it. `stop_work`
        runs under the lock once the volume is out of `volumes` (no new work can find it)
        and before its files close. VolumeNotOnNode when there was neither."""
        async with self.lock:
            vol = self.volumes.pop(vid, None)
            if vol is not None:
                self.changed.set()
                await stop_work(vid)

            def remove() -> bool:
                removed = remove_pull_files(self.storage, vid)
                if vol is not None:
                    vol.close(checkpoint=False)
                    remove_volume_files(self.storage, vid)
                    removed = True
                return removed

            if not await self.run_admin(remove):
                raise VolumeNotOnNode(f"volume {vid} is not on this node")
        log.info("v%d: deleted from this node", vid)

    async def set_mode(self, vid: int, mode: Mode) -> VolumeState:
        vol = self.volume(vid)
        if mode is Mode.WRITABLE:
            state = VolumeState()
        elif mode is Mode.READ_ONLY:
            state = read_only(Reason.OPERATOR, "set by an operator")
        else:
            state = sealed("sealed by an operator")
        try:
            return await asyncio.wrap_future(vol.change_state(state))
        finally:
            self.changed.set()
