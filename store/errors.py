"""The store's exception tree. HTTP status codes are assigned in exactly one place
(store/http_api.py); nothing else in store/ knows about HTTP."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error raised by store/."""

    code = "store_error"


class NotFound(StoreError):
    """No live needle answers: absent, deleted, or the cookie did not match.

    One class on purpose: a wrong cookie must be indistinguishable from an absent needle,
    so that photo URLs cannot be guessed one field at a time."""

    code = "not_found"


class CorruptNeedle(StoreError):
    """The bytes on disk are bad (magic, size or checksum mismatch). Never served.

    Distinct from an I/O fault: the device answered, the data is wrong."""

    code = "corrupt_needle"

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class FormatError(StoreError):
    """A superblock, index file or commit marker is not in a format this code reads."""

    code = "bad_format"


class VolumeNotFound(StoreError):
    code = "volume_not_found"


class VolumeExists(StoreError):
    code = "volume_exists"


class VolumeNotWritable(StoreError):
    """The volume takes no writes: read-only (full, failed sync, operator) or sealed."""

    code = "volume_not_writable"


class VolumeFull(VolumeNotWritable):
    """The needle does not fit under the volume's size limit."""

    code = "volume_full"


class VolumeIOError(StoreError):
    """The device failed (EIO, ENOSPC, failed fdatasync). The volume has turned read-only;
    nothing that was not durable was acknowledged or indexed."""

    code = "volume_io_error"


class ChecksumMismatch(StoreError):
    """The data of a write does not match the checksum its sender computed: it was damaged
    on the way, and is not stored."""

    code = "checksum_mismatch"


class NeedleTooLarge(StoreError):
    code = "needle_too_large"


class Busy(StoreError):
    """The operation conflicts with one already running (e.g. a second compaction)."""

    code = "busy"


class QueueFull(StoreError):
    """The volume's write queue is at its limit; the caller should retry elsewhere or later."""

    code = "queue_full"
