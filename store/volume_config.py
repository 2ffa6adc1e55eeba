"""The limits every volume obeys. Parsed once (store/config.py) and validated here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from store import needle, superblock

GB: Final = 10**9
MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB


@dataclass(frozen=True, slots=True)
class VolumeLimits:
    # Volume files stop taking writes at this size (Haystack used ~100 GB volumes).
    size_bytes_max: int = 100 * GB
    # One needle's data; the needle map holds up to 512 MiB needles.
    needle_data_bytes_max: int = 256 * MiB
    # Group commit: one fdatasync covers at most this many needles / bytes.
    group_commit_needles_max: int = 4096
    group_commit_bytes_max: int = 64 * MiB
    # Wait up to this long after the first queued write for more to share its sync. 0 relies
    # on natural batching: writes that arrive during a sync share the next one.
    group_commit_delay_ms_max: float = 0.0
    # Writes waiting for the writer; beyond either limit a write is refused (QueueFull).
    write_queue_needles_max: int = 16_384
    write_queue_bytes_max: int = 512 * MiB
    # A new index checkpoint is written once this many bytes (or 16x the last checkpoint's
    # size, whichever is larger) were appended since the last one: this bounds the tail that
    # must be scanned when the volume opens after a crash.
    index_checkpoint_bytes_min: int = 1 * GiB
    memtable_entries_max: int = 32 * 1024

    def __post_init__(self) -> None:
        superblock.check_size_limit(self.size_bytes_max)
        if not 0 < self.needle_data_bytes_max <= needle.DATA_BYTES_MAX:
            raise ValueError(
                f"needle_data_bytes_max must be within (0, {needle.DATA_BYTES_MAX}] bytes"
            )
        for name in (
            "group_commit_needles_max",
            "group_commit_bytes_max",
            "write_queue_needles_max",
            "write_queue_bytes_max",
            "index_checkpoint_bytes_min",
            "memtable_entries_max",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.group_commit_delay_ms_max < 0:
            raise ValueError("group_commit_delay_ms_max must not be negative")
