"""The store's exception tree, under `StoreError` (a `common.errors.PinholeError`).

Each class carries its HTTP status and its stable `code`; store/http_api.py turns any of
them into an answer in one place from those attributes alone, and nothing else in store/
knows about HTTP. Store errors are answered with an `X-Pinhole-Error: <code>` header.
Class names are unique across the project.
"""

from __future__ import annotations

from common.errors import PinholeError


class StoreError(PinholeError):
    """Base of every error raised by store/."""

    status = 500
    code = "store_error"
    # The message an HTTP answer shows instead of the exception's own (None: its own).
    public_message: str | None = None

    def headers(self) -> dict[str, str]:
        return {"x-pinhole-error": self.code, **super().headers()}


class NeedleNotFound(StoreError):
    """No live needle answers: absent, deleted, or the cookie did not match.

    One class on purpose: a wrong cookie must be indistinguishable from an absent needle,
    so that photo URLs cannot be guessed one field at a time (the answer never says which)."""

    status = 404
    code = "not_found"
    public_message = "no such needle"


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


class VolumeNotOnNode(StoreError):
    """The volume is not on this node (nor, for a delete, a pull of it)."""

    status = 404
    code = "volume_not_found"


class VolumeExists(StoreError):
    status = 409
    code = "volume_exists"


class VolumeNotWritable(StoreError):
    """The volume takes no writes: read-only (full, failed sync, operator) or sealed."""

    status = 409
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

    status = 400
    code = "checksum_mismatch"


class NeedleTooLarge(StoreError):
    status = 413
    code = "needle_too_large"


class NodeBusy(StoreError):
    """The operation conflicts with one already running (e.g. a second compaction), or the
    node cannot take it now (volumes_max reached, no node credential for a pull)."""

    status = 409
    code = "busy"


class QueueFull(StoreError):
    """Too many operations wait (the volume's write queue, the node's disk queue); the
    caller should retry elsewhere or later."""

    status = 503
    code = "queue_full"
    retry_after_s = 1.0


class OffsetPastEnd(StoreError):
    """A volume file read (GET /volumes/{id}/dat) starts past the volume's durable end."""

    status = 416
    code = "offset_past_end"


class PullFailed(StoreError):
    """A pull's copy could not be made (source error, broken copy, too many restarts)."""

    code = "pull_failed"


class StoreBadRequest(StoreError):
    """The request is malformed: a bad number, header, body or parameter."""

    status = 400
    code = "bad_request"


class NeedlePathInvalid(StoreError):
    """The path under /n/ is not /n/{volume}/{key}/{alt_key}/{cookie}: no such resource."""

    status = 404
    code = "bad_path"


class RouteNotFound(StoreError):
    """No resource at this method and path."""

    status = 404
    code = "not_found"


class JobNotFound(StoreError):
    """No job of this kind has run on the volume since the node started."""

    status = 404
    code = "not_found"


class RangeNotSatisfiable(StoreError):
    status = 416
    code = "range_not_satisfiable"
