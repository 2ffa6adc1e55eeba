"""The f4 error tree: every class derives from F4Error (and so from PinholeError), with the
status a service answers. Absent, deleted and wrong-cookie blobs are one class (BlobAbsent)
so that no answer tells them apart."""

from __future__ import annotations

from common.errors import PinholeError


class F4Error(PinholeError):
    status = 500
    code = "f4_error"


class BlobAbsent(F4Error):
    """No such blob, its key was deleted, or the cookie is wrong: the same answer for all."""

    status = 404
    code = "not_found"


class BlobTooLarge(F4Error):
    status = 413
    code = "blob_too_large"


class BlobCorrupt(F4Error):
    """The blob's bytes failed authentication (AES-GCM tag) after every repair path."""

    status = 500
    code = "blob_corrupt"


class BlockMissing(F4Error):
    """The block's file does not exist on its node."""

    status = 503
    code = "block_missing"


class BlockUnreachable(F4Error):
    """The node holding the block cannot be reached (its failure domain is down)."""

    status = 503
    code = "block_unreachable"


class BlockCorrupt(F4Error):
    """Bytes read from a block do not match its sidecar checksums."""

    status = 503
    code = "block_corrupt"


class StripeUnrecoverable(F4Error):
    """Fewer than 10 healthy blocks remain for the range asked for."""

    status = 503
    code = "stripe_unrecoverable"


class F4FormatError(F4Error):
    """A sidecar, index or manifest file that does not parse or fails its checksum."""

    status = 500
    code = "f4_format"


class IndexUnavailable(F4Error):
    """No copy of a volume's index could be read and verified."""

    status = 503
    code = "index_unavailable"


class VolumeNotSealed(F4Error):
    """Only read-only (sealed) Haystack volumes migrate to f4."""

    status = 409
    code = "volume_not_sealed"


class MigrationMismatch(F4Error):
    """A resumed migration found a journal for different source contents or settings."""

    status = 409
    code = "migration_mismatch"


class KeyStoreBusy(F4Error):
    """The key store's purge step could not complete (a reader held the WAL)."""

    status = 503
    code = "key_store_busy"
    retry_after_s = 1.0


class MigrationUnverified(F4Error):
    """A migrated blob read back through f4 differs from its Haystack needle."""

    status = 500
    code = "migration_unverified"


class VolumeNotServed(F4Error):
    """The cell serves no migrated (verified) copy of this volume."""

    status = 404
    code = "volume_not_found"


class HandoverRefused(F4Error):
    """The directory refused a step of handing a volume's reads to the cell (its status and
    code kept); `deletes_pending` is worth retrying later."""

    status = 502
    code = "handover_refused"


# -- the storage node's answers (f4/node_http.py) and what its client raises ---------------


class ObjectMissing(BlockMissing):
    """A storage node has no such object (or it is shorter than the range asked for)."""

    status = 404
    code = "block_missing"


class NodeUnreachable(BlockUnreachable):
    """A storage node serves the node, but its directory is gone (the disk is lost)."""

    status = 503
    code = "node_unreachable"


class NodeNotServed(F4Error):
    """The storage node does not serve that node (failure domain)."""

    status = 404
    code = "node_not_served"


class BadObjectName(F4Error):
    """A node or object name that is not one of f4's shapes (f4/block_store.py)."""

    status = 400
    code = "bad_name"


class BadBlockRequest(F4Error):
    """A malformed offset, length or upload id, or a range over the node's limit."""

    status = 400
    code = "bad_request"


class UploadUnknown(F4Error):
    """No open upload with that id for that object (finished, aborted, expired, or the
    storage node restarted)."""

    status = 404
    code = "upload_unknown"


class UploadConflict(F4Error):
    """A chunk's offset is not the upload's current size, or the upload is busy."""

    status = 409
    code = "upload_conflict"


class UploadsBusy(F4Error):
    """The storage node has as many uploads open as it allows."""

    status = 503
    code = "uploads_busy"
    retry_after_s = 1.0


class NodeAnswered(F4Error):
    """A storage node answered with a status its client does not expect; `status` and
    `code` are the node's."""
