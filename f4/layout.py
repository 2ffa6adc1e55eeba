"""Where each blob goes: stripes of 10 data blocks (+4 parity), blobs packed first-fit.

Invariants:
- A blob lies whole inside one data block (never spans two), so a healthy read is one range
  read from one block.
- Blobs are placed in input order, each into the first data block of the open stripe with
  room for it; when none has room the next stripe opens. Placement is a pure function of the
  blob sizes and the settings, so a resumed migration recomputes the same plan.
- Every block of a stripe has the same length, a multiple of ALIGN_BYTES: the used length of
  its fullest data block rounded up; data blocks are zero-filled to it. The last stripe uses a
  smaller block capacity when its blobs fit one, so a small volume is not padded to 10 GiB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from f4.erasure import DATA_BLOCKS
from f4.errors import BlobTooLarge

DEFAULT_BLOCK_BYTES: Final = 1 << 30
ALIGN_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class Placement:
    stripe: int
    block: int  # 0..9, a data block
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class StripeShape:
    block_length: int  # bytes in each of the stripe's 14 blocks


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def _first_fit(sizes: Sequence[int], capacity: int) -> list[tuple[int, int]] | None:
    """(block, offset) of each blob in one stripe of the given capacity, or None."""
    fill = [0] * DATA_BLOCKS
    out: list[tuple[int, int]] = []
    for size in sizes:
        for block in range(DATA_BLOCKS):
            if fill[block] + size <= capacity:
                out.append((block, fill[block]))
                fill[block] += size
                break
        else:
            return None
    return out


def plan(
    sizes: Sequence[int], block_bytes: int = DEFAULT_BLOCK_BYTES
) -> tuple[list[Placement], list[StripeShape]]:
    """The placement of blobs of the given sizes (in order) and the shape of each stripe."""
    if block_bytes <= 0 or block_bytes % ALIGN_BYTES:
        raise ValueError(f"block size must be a positive multiple of {ALIGN_BYTES}")
    for size in sizes:
        if size > block_bytes:
            raise BlobTooLarge(f"a blob of {size} bytes does not fit a {block_bytes}-byte block")
    placements: list[Placement] = []
    shapes: list[StripeShape] = []
    start = 0
    while start < len(sizes):
        rest = sizes[start:]
        capacity = block_bytes
        # The last stripe: the smallest aligned capacity that still holds all that is left.
        total = sum(rest)
        if total <= block_bytes * DATA_BLOCKS:
            capacity = max(_round_up(-(-total // DATA_BLOCKS), ALIGN_BYTES), ALIGN_BYTES)
            while capacity < block_bytes and _first_fit(rest, capacity) is None:
                capacity = min(block_bytes, _round_up(capacity + capacity // 8, ALIGN_BYTES))
        fill = [0] * DATA_BLOCKS
        stripe = len(shapes)
        taken = 0
        for size in rest:
            for block in range(DATA_BLOCKS):
                if fill[block] + size <= capacity:
                    placements.append(Placement(stripe, block, fill[block], size))
                    fill[block] += size
                    break
            else:
                break
            taken += 1
        shapes.append(StripeShape(max(_round_up(max(fill), ALIGN_BYTES), ALIGN_BYTES)))
        start += taken
    return placements, shapes
