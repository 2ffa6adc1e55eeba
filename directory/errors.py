"""The directory's exception tree, under `common.errors.PinholeError`. HTTP statuses are
assigned in exactly one place (directory/http_api.py's error middleware) from each class's
`status`, `code` and `headers()`; the client raises the same base class with the status and
code the server answered."""

from __future__ import annotations

from common.errors import PinholeError


class DirectoryError(PinholeError):
    """Base of every directory error: `status` (HTTP; 0 = not reached), `code`, message."""

    status = 500
    code = "directory_error"

    def __init__(self, *args: object) -> None:
        # DirectoryError(status, code, message) as the client raises it, or
        # Subclass(message) inside the service.
        if len(args) == 3 and isinstance(args[0], int) and isinstance(args[1], str):
            self.status, self.code = args[0], args[1]
            message = str(args[2])
        else:
            message = " ".join(str(a) for a in args)
        super().__init__(message)


class BadRequest(DirectoryError):
    status = 400
    code = "bad_request"


class Unauthorized(DirectoryError):
    status = 401
    code = "unauthorized"


class DirectoryNotFound(DirectoryError):
    """A volume, node or replica the directory does not know."""

    status = 404
    code = "not_found"


class VolumeNotFound(DirectoryNotFound):
    code = "volume_not_found"


class NodeNotFound(DirectoryNotFound):
    code = "node_not_found"


class Conflict(DirectoryError):
    status = 409
    code = "conflict"


class StaleCopyHeld(Conflict):
    """The node still holds an old copy of the volume (a replica replaced while it was
    away); the releases loop removes it, and the node's next heartbeat says so."""

    code = "stale_copy_held"


class NoCapacity(Conflict):
    """The placement policy cannot be met with the alive store nodes that have room."""

    code = "no_capacity"


class VolumeInF4(Conflict):
    """The volume's reads are served by f4 (state f4): no Haystack replica, move, abort or
    repair applies to it any more."""

    code = "volume_in_f4"


class VolumeWritable(Conflict):
    """An f4 migration begins only on a volume that takes no writes (sealed or read-only)."""

    code = "volume_writable"


class DeletesPending(Conflict):
    """Deletes of the volume are still owed to a replica: the f4 switch waits for them (the
    caller retries later). `count` is how many."""

    code = "deletes_pending"

    def __init__(self, message: str, *, count: int) -> None:
        super().__init__(message)
        self.count = count


class RepairedByF4(Conflict):
    """A repair report about an f4 replica or an f4 volume: the f4 cell reconstructs and
    rebuilds its blocks itself, so the directory schedules nothing."""

    code = "repaired_by_f4"


class VolumeCreateFailed(DirectoryError):
    """A store node did not create its replica; the logical volume stays in state creating
    and growth retries it."""

    status = 503
    code = "volume_create_failed"


class NoWritableVolume(DirectoryError):
    """No writable logical volume took a write within the writer's retry time (callers
    answer 503). The message says what was tried and why it failed (a generic one when
    none is given); `retry_after_s` is how long a caller should wait before trying again
    (an API's Retry-After), 10 s when not given."""

    status = 503
    code = "no_writable_volume"
    retry_after_s: float | None = 10.0

    def __init__(self, *args: object, retry_after_s: float | None = None) -> None:
        super().__init__(*args)
        if not self.message:
            self.message = "storage is full or unavailable"
        if retry_after_s:
            self.retry_after_s = retry_after_s
