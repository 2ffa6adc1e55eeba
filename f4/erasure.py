"""RS(10,4) over PyECLib: parity of 10 equal rows, and decode of any aligned sub-range.

PyECLib's ISA-L backends, asked to encode 10*L bytes, return 14 fragments, each an 80-byte
header followed by an L-byte payload; the first 10 payloads are the 10 rows of the input
unchanged (systematic code), the last 4 are parity. Parity is position-wise: byte i of a
parity payload depends only on byte i of each data row. So any byte range [a, b) of a
stripe's 14 blocks is itself a valid codeword of length b - a, and decodes from any 10 of its
14 pieces once each piece gets the fragment header PyECLib would have written for that
length; those headers depend only on the length and the fragment's index, and are taken from
encoding zeros of the same length (tests check all 1001 four-loss patterns).

Those headers cost an encode of 10 * L zero bytes (2.2 ms of CPU for a 100 kB range here),
more than the decode itself, and a blob's range has a length of its own. So a range is
decoded padded with zeros to `padded_length(L)`, one of at most 8 lengths per doubling:
zeros after every row are themselves a codeword (position-wise, the parity of zeros is
zero), so the padded decode returns the wanted row followed by zeros, and the headers of the
few padded lengths stay cached (measured in ARCHITECTURE.md, "A degraded read ...").
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache
from typing import Final

from pyeclib.ec_iface import ECDriver

from f4.errors import StripeUnrecoverable

DATA_BLOCKS: Final = 10
PARITY_BLOCKS: Final = 4
STRIPE_BLOCKS: Final = DATA_BLOCKS + PARITY_BLOCKS
FRAGMENT_HEADER_BYTES: Final = 80
DEFAULT_EC_TYPE: Final = "isa_l_rs_cauchy"
EC_TYPES: Final = ("isa_l_rs_cauchy", "isa_l_rs_vand")

Buffer = bytes | bytearray | memoryview

# Ranges up to this long are padded to a multiple of PAD_STEP_BYTES; longer ones to a
# multiple of 1/8 of their highest power of two (at most 12.5% more to decode).
PAD_FINE_BYTES_MAX: Final = 64 * 1024
PAD_STEP_BYTES: Final = 4096
HEADER_LENGTHS_CACHED: Final = 128  # padded lengths up to 64 MiB: 16 + 8 per doubling


# glibc's allocator, as PyECLib needs it (tune_allocator): blocks up to this size come from
# the heap rather than a fresh mmap, and the heap keeps this much free at its top.
MALLOC_MMAP_THRESHOLD_BYTES: Final = 4 << 20
MALLOC_TRIM_THRESHOLD_BYTES: Final = 64 << 20
_M_TRIM_THRESHOLD: Final = -1  # mallopt's parameter numbers (malloc.h)
_M_MMAP_THRESHOLD: Final = -3


@cache
def tune_allocator() -> bool:
    """Keeps PyECLib's per-call buffers on the heap. Each encode allocates the stripe's
    fragments (14 x (row + 80) bytes) and a copy of its input; with glibc's defaults a
    buffer over 128 KiB is a fresh mmap (or the freed top of the heap is trimmed), so every
    call pays page faults for every page it touches: 64 KiB rows encoded at 650 MB/s here,
    7,000 MB/s with these settings (ARCHITECTURE.md, "PyECLib and the allocator"). True
    when the settings took (glibc); elsewhere nothing changes. Once per process."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES)
    )


def padded_length(length: int) -> int:
    """The length a range of `length` bytes is decoded at (>= length; few distinct values)."""
    if length <= PAD_FINE_BYTES_MAX:
        return -(-length // PAD_STEP_BYTES) * PAD_STEP_BYTES
    step = 1 << (length.bit_length() - 4)
    return -(-length // step) * step


class Codec:
    """One RS(10,4) driver. Not thread-safe; use one per thread."""

    def __init__(self, ec_type: str = DEFAULT_EC_TYPE) -> None:
        if ec_type not in EC_TYPES:
            raise ValueError(f"ec_type must be one of {EC_TYPES}")
        self.ec_type = ec_type
        tune_allocator()
        self._driver = ECDriver(k=DATA_BLOCKS, m=PARITY_BLOCKS, ec_type=ec_type)
        self._headers = lru_cache(maxsize=HEADER_LENGTHS_CACHED)(self._zero_headers)

    def _zero_headers(self, length: int) -> tuple[bytes, ...]:
        fragments = self._driver.encode(bytes(DATA_BLOCKS * length))
        return tuple(bytes(f[:FRAGMENT_HEADER_BYTES]) for f in fragments)

    def parity(self, rows: Sequence[Buffer]) -> list[bytes]:
        """The 4 parity rows of 10 data rows of equal length."""
        if len(rows) != DATA_BLOCKS:
            raise ValueError(f"need {DATA_BLOCKS} data rows, got {len(rows)}")
        length = len(rows[0])
        if length == 0 or any(len(r) != length for r in rows):
            raise ValueError("data rows must be non-empty and of equal length")
        fragments = self._driver.encode(b"".join(rows))
        return [bytes(f[FRAGMENT_HEADER_BYTES:]) for f in fragments[DATA_BLOCKS:]]

    def parity_into(self, rows: Sequence[Buffer], out: Sequence[memoryview]) -> None:
        """Writes the 4 parity rows of 10 data rows of equal length into `out` (4 writable
        views of that length), copying each once from PyECLib's fragments."""
        if len(out) != PARITY_BLOCKS or any(len(o) != len(rows[0]) for o in out):
            raise ValueError(f"need {PARITY_BLOCKS} output rows as long as the data rows")
        if (
            len(rows) != DATA_BLOCKS
            or len(rows[0]) == 0
            or any(len(r) != len(rows[0]) for r in rows)
        ):
            raise ValueError(f"need {DATA_BLOCKS} non-empty data rows of equal length")
        fragments = self._driver.encode(b"".join(rows))
        for o, f in zip(out, fragments[DATA_BLOCKS:], strict=True):
            o[:] = memoryview(f)[FRAGMENT_HEADER_BYTES:]

    def reconstruct(self, pieces: Mapping[int, Buffer], wanted: Sequence[int]) -> dict[int, bytes]:
        """The rows `wanted` (block indexes 0..13) of a range, from at least 10 other rows
        of the same range (index -> bytes, equal lengths)."""
        if len(pieces) < DATA_BLOCKS:
            raise StripeUnrecoverable(f"{len(pieces)} healthy pieces, {DATA_BLOCKS} needed")
        lengths = {len(p) for p in pieces.values()}
        if len(lengths) != 1:
            raise ValueError("pieces must be of equal length")
        (length,) = lengths
        missing = [i for i in wanted if i not in pieces]
        out = {i: bytes(pieces[i]) for i in wanted if i in pieces}
        if not missing:
            return out
        padded = padded_length(length)
        headers = self._headers(padded)
        zeros = bytes(padded - length)
        chosen = sorted(pieces)[:DATA_BLOCKS]
        fragments = [b"".join((headers[i], pieces[i], zeros)) for i in chosen]
        rebuilt = self._driver.reconstruct(fragments, missing)
        end = FRAGMENT_HEADER_BYTES + length
        for i, fragment in zip(missing, rebuilt, strict=True):
            out[i] = bytes(fragment[FRAGMENT_HEADER_BYTES:end])
        return out
