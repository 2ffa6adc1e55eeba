"""The live needles of a sealed Haystack volume, read straight from its data file.

The volume must not take writes (its state is read-only or sealed), so two passes over the
file agree: `live_needles` replays the file in order with the store's needle scan (a later
needle for the same (key, alt key) replaces an earlier one; a deleted flag or a tombstone
removes it) and returns what is live, in file order; `read` then fetches one needle's data
and checks it again. Damaged needles are reported, never migrated.

A sealed volume still takes deletes: each appends a tombstone (the durable record) and then
flags the needle in place (advisory). `live_needles(end=E, flags=False)` is therefore the
volume as it was when its file ended at E, whatever was deleted since: the migration plans
from that snapshot so that a resumed run plans the same stripes (f4.encoder), and deletes
after it are reconciled separately (f4.handover).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from f4.errors import VolumeNotSealed
from store import needle, volume_state
from store.needle_scan import Damage, scan
from store.storage import OsStorage, OsVolumeFile
from store.superblock import SUPERBLOCK_BYTES
from store.volume import data_name, state_name


@dataclass(frozen=True, slots=True)
class NeedleRef:
    key: int
    alt_key: int
    cookie: int
    offset: int  # of the needle in the volume file
    data_size: int


class SourceFile(Protocol):
    """What a source reads: a local volume file, or one read through a store node's HTTP
    API (f4.store_source.StoreVolumeFile)."""

    def size(self) -> int: ...

    def read(self, length: int, offset: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass
class NeedleSource:
    """`directory` holds the volume's files; or `file` is the volume's file read elsewhere,
    whose caller checked that it takes no writes."""

    directory: Path | None
    volume: int
    damaged: list[Damage] = field(default_factory=list)
    file: SourceFile | None = None

    def __post_init__(self) -> None:
        self._scratch = bytearray()  # read_view's buffer
        if self.file is not None:
            self._file: SourceFile = self.file
            return
        if self.directory is None:
            raise ValueError("a needle source reads a directory or a file")
        state = volume_state.load(OsStorage(self.directory), state_name(self.volume))
        if state.accepts_writes:
            raise VolumeNotSealed(f"volume {self.volume} still takes writes")
        self._file = OsVolumeFile(str(self.directory / data_name(self.volume)), create=False)

    def size(self) -> int:
        """Where the volume's file ends now."""
        return self._file.size()

    def live_needles(self, *, end: int | None = None, flags: bool = True) -> list[NeedleRef]:
        """The live needles of the file up to `end` (default: all of it); `flags=False`
        ignores the advisory deleted flags, so only tombstones before `end` delete."""
        live: dict[tuple[int, int], NeedleRef] = {}
        self.damaged = []
        for item in scan(self._file, SUPERBLOCK_BYTES, self._file.size() if end is None else end):
            if isinstance(item, Damage):
                self.damaged.append(item)
                continue
            h = item.header
            if h.tombstone or (flags and h.deleted):
                live.pop((h.key, h.alt_key), None)
                continue
            live.pop((h.key, h.alt_key), None)  # re-inserted last: file order of the live one
            live[(h.key, h.alt_key)] = NeedleRef(
                h.key, h.alt_key, h.cookie, item.offset, h.data_size
            )
        return sorted(live.values(), key=lambda r: r.offset)

    def read(self, ref: NeedleRef) -> bytes:
        raw = self._file.read(needle.needle_length(ref.data_size), ref.offset)
        header = needle.verify(raw, offset=ref.offset)
        return bytes(needle.data_view(raw, header))

    def read_view(self, ref: NeedleRef) -> memoryview:
        """`read`'s data, checked the same way, as a view of a buffer this source reuses:
        valid until the next call. A local file is read into that buffer, so a migration
        copies each needle once (into its sealed record) and allocates no memory per
        needle; fresh pages cost a fault each, on this VM's kind of host a slow one."""
        read_into = getattr(self._file, "read_into", None)
        if read_into is None:
            return memoryview(self.read(ref))
        length = needle.needle_length(ref.data_size)
        if len(self._scratch) < length:
            self._scratch = bytearray(length)
        raw = memoryview(self._scratch)[:length]
        got = read_into(raw, ref.offset)
        header = needle.verify(raw[:got], offset=ref.offset)
        return needle.data_view(raw, header)

    def close(self) -> None:
        self._file.close()
