"""One f4 cell as the operator commands see it: its blocks, key store and work directory
(from F4Config), which sealed Haystack volumes are due to migrate, a migration checked end to
end, and each stripe's health and placement.

Invariants:
- A volume is reported migrated only once every live needle of the Haystack volume has been
  read back through f4's Reader and found equal (or found deleted since: reconciled, see
  f4.handover); that check writes the volume's verified mark (<work>/v<N>.verified,
  atomically), and nothing else does.
- With a directory (a DirectoryLink), the directory lists the cell as a copying replica
  before the migration reads the volume, and switches the volume's reads to the cell only
  after the verified mark exists; the mark records the switch ("switched": true) once the
  directory confirmed it, so a run killed in between switches on its next run.
- A volume is due when its state refuses writes (sealed, or read-only when full or by an
  operator; never after an I/O error), its newest needle is at least age_s_min old, and it
  has no verified mark. Needles carry no time: the data file's modification time is the
  time of its last needle (or tombstone), since sealing changes only the state file.
- A stripe survives k losses of a kind (node, rack) when every choice of k such domains
  leaves at least 10 healthy blocks: the worst case takes the domains holding the most.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from common.credentials import Credentials, Purpose
from common.jobs.local import LocalJob, Throttle
from f4 import index as index_file
from f4 import layout
from f4.blob import sealed_length
from f4.block_store import block_name
from f4.cell_store import CellBlockStore, cell_block_store
from f4.config import F4Config
from f4.encoder import Migration, journal_path, write_json_atomic
from f4.erasure import DATA_BLOCKS, STRIPE_BLOCKS, Codec
from f4.errors import (
    BlobAbsent,
    F4Error,
    HandoverRefused,
    MigrationUnverified,
    VolumeNotSealed,
)
from f4.handover import DirectoryLink, reconcile
from f4.keystore import KeyStore
from f4.needle_source import NeedleSource
from f4.reader import Reader
from f4.rebalance import RebalanceStats
from f4.rebalance import run as rebalance_volume
from f4.rebuild import RebuildProgress, RebuildStats, VerifyReport, rebuild, verify
from f4.store_source import StoreVolumes
from store import volume_state
from store.storage import OsStorage
from store.volume import data_name, state_name
from store.volume_state import Mode, Reason, VolumeState

_DATA_FILE = re.compile(r"^v(\d+)\.dat$")
MIGRATE_SHARE = 0.9  # of a migration's progress; reading it back is the rest


@dataclass(frozen=True, slots=True)
class Candidate:
    volume: int
    mode: str
    age_s: float
    due: bool
    reason: str  # why not due ("" when due)


@dataclass(frozen=True, slots=True)
class VolumePlan:
    volume: int
    blobs: int
    plaintext_bytes: int
    stripes: int
    damaged_needles: int


@dataclass(frozen=True, slots=True)
class StripeHealth:
    stripe: int
    blocks_present: int
    blocks_healthy: int
    node_losses_survived: int  # -1: fewer than 10 healthy blocks (data lost until rebuilt)
    rack_losses_survived: int

    def as_json(self) -> dict[str, int]:
        return asdict(self)


def losses_survived(domains: Iterable[str]) -> int:
    """How many failure domains may be lost at once, whichever they are, with 10 of the
    stripe's blocks left; `domains` is the domain of each healthy block. -1 when fewer than
    10 are healthy."""
    counts = sorted(Counter(domains).values(), reverse=True)
    spare = sum(counts) - DATA_BLOCKS
    if spare < 0:
        return -1
    lost = 0
    for n in counts:
        if n > spare:
            break
        spare -= n
        lost += 1
    return lost


Progress = Callable[[float], None]  # the fraction of the work done, 0..1

# The directory refuses to begin or switch while deletes of the volume are still owed to
# its replicas (deletes_pending): ask again every DELETES_POLL_S for up to DELETES_WAIT_S,
# then fail the attempt (the job framework retries it later).
DELETES_WAIT_S: Final = 30.0
DELETES_POLL_S: Final = 0.5


def _when_delivered(step: Callable[[], dict[str, Any]], job: LocalJob | None) -> dict[str, Any]:
    deadline = time.monotonic() + DELETES_WAIT_S
    steps = job.throttle() if job is not None else None
    while True:
        try:
            return step()
        except HandoverRefused as e:
            if e.code != "deletes_pending" or time.monotonic() > deadline:
                raise
        if steps is not None:
            steps.check()
        time.sleep(DELETES_POLL_S)


class Cell:
    def __init__(
        self,
        config: F4Config,
        *,
        store: CellBlockStore | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        """`store`: where the blocks are; by default the one the config describes
        (f4.cell_store.cell_block_store, which needs `credentials` holding the blocks
        credential when a node has a url); `credentials` also announce migrations to
        config.directory_url (the operator's)."""
        self.config = config
        config.work_dir.mkdir(parents=True, exist_ok=True)
        self.store = store if store is not None else cell_block_store(config, credentials)
        self.keys = KeyStore(config.keys_path)
        # The sealed volumes: the store's volume directory on this host, or the store's
        # HTTP API ([f4] haystack_url: a migration run from another host).
        self.haystack: StoreVolumes | None = None
        if config.haystack_url:
            self.haystack = StoreVolumes(config.haystack_url, credentials)
        self.link: DirectoryLink | None = None
        if config.directory_url and credentials and Purpose.ADMIN in credentials.tokens:
            self.link = DirectoryLink(config.directory_url, config.name_node_id, credentials)

    def close(self) -> None:
        self.keys.close()
        if self.haystack is not None:
            self.haystack.close()

    # -- what is due ----------------------------------------------------------------------

    def haystack_volumes(self) -> list[int]:
        if self.haystack is not None:
            return sorted(self.haystack.list())
        directory = self.config.haystack_dir
        if not directory.is_dir():
            raise F4Error(f"no Haystack volume directory {directory}")
        found = (_DATA_FILE.match(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _state_and_age(self, volume: int, now: float) -> tuple[VolumeState, float]:
        """The volume's state and the age of its newest needle (at least), where it is."""
        if self.haystack is not None:
            found = self.haystack.list().get(volume)
            if found is None:
                raise F4Error(f"no Haystack volume {volume} on {self.haystack.url}")
            state = VolumeState(
                Mode(found.mode),
                Reason(found.reason) if found.reason else None,
                changed_unix_s=found.state_changed_unix_s,
            )
            writable = state.accepts_writes
            return state, 0.0 if writable else now - found.state_changed_unix_s
        directory = self.config.haystack_dir
        data = directory / data_name(volume)
        if not data.exists():
            raise F4Error(f"no Haystack volume {volume} in {directory}")
        state = volume_state.load(OsStorage(directory), state_name(volume))
        return state, now - data.stat().st_mtime

    def source(self, volume: int) -> NeedleSource:
        """The volume's live needles, read from where it is (NeedleSource refuses a volume
        that takes writes; over HTTP the candidate's check did)."""
        if self.haystack is not None:
            state, _ = self._state_and_age(volume, time.time())
            if state.accepts_writes:
                raise VolumeNotSealed(f"volume {volume} still takes writes")
            return NeedleSource(None, volume, file=self.haystack.open(volume))
        return NeedleSource(self.config.haystack_dir, volume)

    def candidate(self, volume: int, now: float) -> Candidate:
        state, age = self._state_and_age(volume, now)
        reason = ""
        mark = self.verified(volume)
        if mark is not None and (mark.get("switched") or not self.config.directory_url):
            reason = "already migrated"
        elif state.accepts_writes:
            reason = "takes writes (not sealed)"
        elif state.mode is Mode.READ_ONLY and state.reason is Reason.IO_ERROR:
            reason = "read-only after an I/O error"
        elif age < self.config.age_s_min:
            reason = f"newest needle {age:.0f} s old, younger than age_s_min"
        return Candidate(volume, str(state.mode), age, not reason, reason)

    def plan(self, volume: int) -> VolumePlan:
        source = self.source(volume)
        try:
            refs = source.live_needles()
            _, shapes = layout.plan(
                [sealed_length(r.data_size) for r in refs], self.config.block_bytes
            )
            return VolumePlan(
                volume, len(refs), sum(r.data_size for r in refs), len(shapes), len(source.damaged)
            )
        finally:
            source.close()

    # -- migration ------------------------------------------------------------------------

    def verified(self, volume: int) -> dict[str, Any] | None:
        path = self._verified_path(volume)
        if not path.exists():
            return None
        mark: dict[str, Any] = json.loads(path.read_bytes())
        return mark

    def _verified_path(self, volume: int) -> Path:
        return self.config.work_dir / f"v{volume}.verified"

    def migrate(
        self,
        volume: int,
        *,
        progress: Progress | None = None,
        job: LocalJob | None = None,
        link: DirectoryLink | None = None,
    ) -> dict[str, Any]:
        """Migrates the volume (resuming what an earlier run left), reads every blob back
        through f4 and compares it with the Haystack needle, then writes the verified mark;
        with `link`, announces the migration to the directory first and switches the
        volume's reads to the cell last. Returns the mark. Raises MigrationUnverified when a
        blob differs, HandoverRefused when the directory refuses a step (retry later),
        LocalJobCancelled at the next step after `job` is cancelled."""
        link = link or self.link
        mark = self.verified(volume)
        if mark is None:
            if link is not None:
                _when_delivered(lambda: link.begin(volume), job)
            mark = self._migrate(volume, progress, job)
        if link is not None and not mark.get("switched"):
            answer = _when_delivered(lambda: link.switch(volume), job)
            released = answer.get("released", [])
            mark = {
                **mark,
                "switched": True,
                "switched_unix_s": time.time(),
                "bytes_released": int(answer.get("bytes_released", 0)),
                "replicas_released": [r.get("node_id") for r in released if r.get("ok")],
            }
            write_json_atomic(self._verified_path(volume), mark)
        return mark

    def _migrate(
        self, volume: int, progress: Progress | None, job: LocalJob | None
    ) -> dict[str, Any]:
        rate = self.config.migrate_mb_s * 1e6 or None
        steps = (job or LocalJob("f4-migrate", volume)).throttle(rate)
        report = progress or (lambda fraction: None)
        plan = self.plan(volume)
        stripes_done = 0

        stripe_bytes = plan.plaintext_bytes // max(1, plan.stripes)

        def on_step(step: str) -> None:
            nonlocal stripes_done
            if step.startswith("stripe "):
                steps.wait(stripe_bytes)
                stripes_done += 1
                report(MIGRATE_SHARE * stripes_done / max(1, plan.stripes))
            else:
                steps.wait()

        source = self.source(volume)
        try:
            stats = Migration(
                source,
                self.store,
                self.keys,
                self.config.work_dir,
                block_bytes=self.config.block_bytes,
                codec=Codec(self.config.code),
                on_step=on_step,
                racks=self.config.rack_of,
            ).run()
            damaged = len(source.damaged)
        finally:
            source.close()
        # Deletes that reached Haystack or the cell while the keys were being written.
        after = self.source(volume)
        try:
            deleted = reconcile(self.store, self.keys, after, volume)
            checked = self._read_back(after, volume, report, steps)
        finally:
            after.close()
        mark = {
            "volume": volume,
            "blobs": stats.blobs,
            "blobs_checked": checked,
            "stripes": stats.stripes,
            "plaintext_bytes": stats.plaintext_bytes,
            "stored_bytes": stats.stored_bytes,
            "damaged_needles": damaged,
            "deleted_while_migrating": deleted,
            "stripes_resumed": stats.stripes_resumed,
            "seconds": round(stats.seconds, 3),
            "verified_unix_s": time.time(),
        }
        write_json_atomic(self._verified_path(volume), mark)
        report(1.0)
        return mark

    def _read_back(
        self, source: NeedleSource, volume: int, report: Progress, steps: Throttle
    ) -> int:
        """Every blob still live in Haystack reads back equal; one deleted meanwhile (its
        key destroyed and tombstoned by the name node) is skipped. Returns how many were
        compared."""
        reader = Reader(self.store, self.keys, Codec(self.config.code), racks=self.config.rack_of)
        refs = source.live_needles()
        entries = reader.index(volume).entries
        checked = 0
        for i, ref in enumerate(refs, start=1):
            steps.wait(ref.data_size)
            if (ref.key, ref.alt_key) not in entries:
                raise MigrationUnverified(
                    f"volume {volume}: needle {ref.key}/{ref.alt_key} is not in the f4 index"
                )
            try:
                blob = reader.read(volume, ref.key, ref.alt_key, ref.cookie)
            except BlobAbsent:
                if self.keys.tombstoned(volume, ref.key, ref.alt_key):
                    continue
                raise
            checked += 1
            if blob != source.read(ref):
                raise MigrationUnverified(
                    f"volume {volume}: blob {ref.key}/{ref.alt_key} differs from its needle"
                )
            if i % 64 == 0 or i == len(refs):
                report(MIGRATE_SHARE + (1 - MIGRATE_SHARE) * i / len(refs))
        return checked

    # -- health ---------------------------------------------------------------------------

    def f4_volumes(self) -> list[int]:
        """Volumes with an index copy or a migration journal in the cell."""
        found: set[int] = set()
        for node in self.store.nodes():
            if self.store.node_up(node):
                for name in self.store.list(node):
                    m = re.match(r"^v(\d+)\.f4idx$", name)
                    if m:
                        found.add(int(m.group(1)))
        for p in self.config.work_dir.glob("v*.f4journal"):
            found.add(int(p.name[1:].split(".", 1)[0]))
        return sorted(found)

    def state(self, volume: int) -> str:
        mark = self.verified(volume)
        if mark is not None:
            if self.config.directory_url and not mark.get("switched"):
                return "verified, reads not switched"
            return "migrated"
        path = journal_path(self.config.work_dir, volume)
        if path.exists() and json.loads(path.read_bytes()).get("done"):
            return "written, not verified"
        return "migrating"

    def verify(self, volume: int, *, parity: bool = False) -> VerifyReport:
        return verify(
            self.store,
            volume,
            parity=parity,
            codec=Codec(self.config.code),
            racks=self.config.rack_of,
        )

    def stripe_health(self, volume: int, report: VerifyReport) -> list[StripeHealth]:
        idx = index_file.load(self.store, volume)
        bad = {(d.stripe, d.block) for d in report.damage}
        out = []
        for s, info in enumerate(idx.stripes):
            present = sum(
                self.store.exists(info.nodes[b], block_name(volume, s, b))
                for b in range(STRIPE_BLOCKS)
            )
            healthy = [info.nodes[b] for b in range(STRIPE_BLOCKS) if (s, b) not in bad]
            out.append(
                StripeHealth(
                    s,
                    present,
                    len(healthy),
                    losses_survived(healthy),
                    losses_survived(self.config.rack_of(n) for n in healthy),
                )
            )
        return out

    def failure_domains(self) -> dict[str, Any]:
        nodes = [n.name for n in self.config.nodes]
        racks = {self.config.rack_of(n) for n in nodes}
        note = ""
        if len(nodes) < STRIPE_BLOCKS or len(racks) < STRIPE_BLOCKS:
            note = (
                f"{len(nodes)} nodes in {len(racks)} racks: fewer than the {STRIPE_BLOCKS} "
                "failure domains a stripe needs to survive any 4 losses"
            )
        return {
            "nodes": len(nodes),
            "racks": len(racks),
            "nodes_up": sum(self.store.node_up(n) for n in nodes),
            "note": note,
        }

    # -- rebuild --------------------------------------------------------------------------

    def rebuild(
        self,
        volume: int,
        *,
        progress: Callable[[RebuildProgress], None] | None = None,
        job: LocalJob | None = None,
        parity: bool = False,
    ) -> RebuildStats:
        """Rebuilds the volume's damaged blocks (with `parity`, also the blocks whose parity
        disagrees) at the configured rate (the job's throttle, where a cancel is seen), puts
        its index copies on their rack placement, then verifies it; raises when damage
        remains."""
        job = job or LocalJob("f4-rebuild", volume)
        stats = rebuild(
            self.store,
            volume,
            codec=Codec(self.config.code),
            throttle=job.throttle(self.config.rebuild_mb_s * 1e6),
            on_progress=progress,
            parity=parity,
            racks=self.config.rack_of,
        )
        after = self.verify(volume, parity=parity)
        if not after.ok:
            raise F4Error(
                f"volume {volume}: {len(after.damage)} block(s) damaged and "
                f"{after.index_copies_ok}/{after.index_copies_expected} index copies "
                "after the rebuild"
            )
        return stats

    # -- rebalance ------------------------------------------------------------------------

    def rebalance(self, volume: int, *, job: LocalJob | None = None) -> RebalanceStats:
        """Moves the volume's healthy blocks where placement wants them (f4.rebalance),
        resuming a killed run's journal, each block paced at rebuild_mb_s (the job's
        throttle, where a cancel is seen)."""
        job = job or LocalJob("f4-rebalance", volume)
        return rebalance_volume(
            self.store,
            volume,
            self.config.work_dir,
            slack=self.config.rebalance_slack_blocks,
            moves_max=self.config.rebalance_moves_max,
            racks=self.config.rack_of,
            throttle=job.throttle(self.config.rebuild_mb_s * 1e6),
        )
