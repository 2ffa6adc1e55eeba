"""Encrypted blobs: each blob sealed with its own random AES-256-GCM key.

An encrypted blob, as stored in a data block:

    0       4          16                      16 + n         32 + n
    | magic | nonce    | ciphertext (n bytes)   | GCM tag      |
    | F4B1  | 12 bytes | n = plaintext length   | 16 bytes     |

The associated data is b"F4B1" + volume (u32) + key (u64) + alt key (u32), little-endian:
a record copied to another blob's place fails authentication. The key and nonce live in the
key store (f4/keystore.py); the nonce is also written in the record. A key is generated once
per blob, with a fresh random nonce, and never used for another blob, so a resumed migration
that re-encrypts with the stored key and nonce writes the same bytes. Deleting the key makes
the record unreadable: that is the delete.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from f4.errors import BlobCorrupt

MAGIC: Final = b"F4B1"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
OVERHEAD_BYTES: Final = len(MAGIC) + NONCE_BYTES + TAG_BYTES

_BLOB_ID = struct.Struct("<IQI")


@dataclass(frozen=True, slots=True)
class BlobId:
    volume: int
    key: int
    alt_key: int

    def packed(self) -> bytes:
        return _BLOB_ID.pack(self.volume, self.key, self.alt_key)

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
    view = memoryview(out)
    if len(view) != sealed_length(len(plaintext)):
        raise ValueError("the record's place must be exactly its sealed length")
    body = len(MAGIC) + NONCE_BYTES
    view[: len(MAGIC)] = MAGIC
    view[len(MAGIC) : body] = key.nonce
    AESGCM(key.secret).encrypt_into(key.nonce, plaintext, MAGIC + blob.packed(), view[body:])


def seal(key: BlobKey, blob: BlobId, plaintext: bytes | memoryview) -> bytes:
    record = bytearray(sealed_length(len(plaintext)))
    seal_into(key, blob, plaintext, record)
    return bytes(record)


def open_sealed(key: BlobKey, blob: BlobId, record: bytes | memoryview) -> bytes:
    """The plaintext of a record; BlobCorrupt if it fails authentication."""
    record = bytes(record)
    if len(record) < OVERHEAD_BYTES or record[:4] != MAGIC:
        raise BlobCorrupt("not an f4 blob record")
    nonce = record[4 : 4 + NONCE_BYTES]
    if nonce != key.nonce:
        raise BlobCorrupt("the record's nonce is not its key's")
    try:
        return AESGCM(key.secret).decrypt(nonce, record[4 + NONCE_BYTES :], MAGIC + blob.packed())
    except InvalidTag as e:
        raise BlobCorrupt("blob authentication failed") from e
