"""Encrypted blobs: each blob sealed with its own random AES-256-GCM key.

The record's format (magic, nonce, ciphertext, tag; the blob id as associated data, so a
record copied to another blob's place fails authentication) is common.sealed's, shared
with the readers that open a record after a read ticket (common.read_ticket). The key and
nonce live in the key store (f4/keystore.py); the nonce is also written in the record. A
key is generated once per blob, with a fresh random nonce, and never used for another
blob, so a resumed migration that re-encrypts with the stored key and nonce writes the
same bytes. Deleting the key makes the record unreadable: that is the delete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from common import sealed
from common.sealed import KEY_BYTES, MAGIC, NONCE_BYTES, OVERHEAD_BYTES, TAG_BYTES
from f4.errors import BlobCorrupt

__all__ = [
    "KEY_BYTES",
    "MAGIC",
    "NONCE_BYTES",
    "OVERHEAD_BYTES",
    "TAG_BYTES",
    "BlobId",
    "BlobKey",
    "open_sealed",
    "seal",
    "seal_into",
    "sealed_length",
]

_BLOB_ID = sealed.BLOB_ID


@dataclass(frozen=True, slots=True)
class BlobId:
    volume: int
    key: int
    alt_key: int

    def packed(self) -> bytes:
        return _BLOB_ID.pack(self.volume, self.key, self.alt_key)

    def associated_data(self) -> bytes:
        return sealed.associated_data(self.volume, self.key, self.alt_key)

    @classmethod
    def unpack(cls, raw: bytes) -> BlobId:
        volume, key, alt_key = _BLOB_ID.unpack(raw)
        return cls(volume, key, alt_key)


@dataclass(frozen=True, slots=True)
class BlobKey:
    secret: bytes  # 32 bytes
    nonce: bytes  # 12 bytes

    @classmethod
    def new(cls) -> BlobKey:
        return cls(os.urandom(KEY_BYTES), os.urandom(NONCE_BYTES))


def sealed_length(plaintext_length: int) -> int:
    return plaintext_length + OVERHEAD_BYTES


def seal_into(
    key: BlobKey, blob: BlobId, plaintext: bytes | memoryview, out: bytearray | memoryview
) -> None:
    """Writes the record of `plaintext` into `out`, exactly sealed_length(len(plaintext))
    bytes (a slice of a block being built): the ciphertext is written in place, no copy."""
    sealed.seal_record_into(key.secret, key.nonce, blob.associated_data(), plaintext, out)


def seal(key: BlobKey, blob: BlobId, plaintext: bytes | memoryview) -> bytes:
    record = bytearray(sealed_length(len(plaintext)))
    seal_into(key, blob, plaintext, record)
    return bytes(record)


def open_sealed(key: BlobKey, blob: BlobId, record: bytes | memoryview) -> bytes:
    """The plaintext of a record; BlobCorrupt if it fails authentication."""
    try:
        return sealed.open_record(key.secret, key.nonce, blob.associated_data(), record)
    except sealed.RecordInvalid as e:
        raise BlobCorrupt(str(e)) from e
