"""Sealed records: an f4 blob's bytes as stored, AES-256-GCM under the blob's own key.

    0       4          16                      16 + n         32 + n
    | magic | nonce    | ciphertext (n bytes)   | GCM tag      |
    | F4B1  | 12 bytes | n = plaintext length   | 16 bytes     |

The associated data is b"F4B1" + volume (u32) + key (u64) + alt key (u32), little-endian
(`associated_data`): a record copied to another blob's place fails authentication.

This is the format's core, shared by what seals and opens records: f4 (f4.blob: keys,
blob ids, the migration's sealing, the name node's reads) and the readers that open a
record themselves after a read ticket (replica.read, common.read_ticket), which must not
depend on f4. docs/formats/f4.md describes the record.
"""

from __future__ import annotations

import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC: Final = b"F4B1"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
OVERHEAD_BYTES: Final = len(MAGIC) + NONCE_BYTES + TAG_BYTES
_BODY: Final = len(MAGIC) + NONCE_BYTES

BLOB_ID: Final = struct.Struct("<IQI")


class RecordInvalid(ValueError):
    """A record that is not one, is not sealed with this key, or fails authentication."""


def associated_data(volume: int, key: int, alt_key: int) -> bytes:
    return MAGIC + BLOB_ID.pack(volume, key, alt_key)


def seal_record_into(
    secret: bytes,
    nonce: bytes,
    ad: bytes,
    plaintext: bytes | memoryview,
    out: bytearray | memoryview,
) -> None:
    """Writes the record of `plaintext` into `out`, exactly len(plaintext) + OVERHEAD_BYTES
    bytes: the ciphertext is written in place, no copy."""
    view = memoryview(out)
    if len(view) != len(plaintext) + OVERHEAD_BYTES:
        raise ValueError("the record's place must be exactly its sealed length")
    view[: len(MAGIC)] = MAGIC
    view[len(MAGIC) : _BODY] = nonce
    AESGCM(secret).encrypt_into(nonce, plaintext, ad, view[_BODY:])


def open_record(secret: bytes, nonce: bytes, ad: bytes, record: bytes | memoryview) -> bytes:
    """The plaintext of a record; RecordInvalid if it is not a record, carries another
    nonce, or fails authentication."""
    view = memoryview(record)
    if len(view) < OVERHEAD_BYTES or view[: len(MAGIC)].tobytes() != MAGIC:
        raise RecordInvalid("not an f4 blob record")
    if view[len(MAGIC) : _BODY].tobytes() != nonce:
        raise RecordInvalid("the record's nonce is not its key's")
    try:
        return AESGCM(secret).decrypt(nonce, view[_BODY:], ad)
    except InvalidTag as e:
        raise RecordInvalid("blob authentication failed") from e
