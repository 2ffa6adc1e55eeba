"""Where blocks live: named files on nodes (failure domains), behind one protocol.

A node is a failure domain (a disk, host or rack); an object is a block, a block's sidecar
or an index copy, named by the functions below. `put`/`open_writer(...).commit()` make an
object appear whole or not at all, durably; an object that exists is complete.
`object_name_ok` is the one check of a name coming from outside (a storage node's path):
only the shapes below, so no name can hold '/' or '..'.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Protocol

Buffer = bytes | bytearray | memoryview


def block_name(volume: int, stripe: int, block: int) -> str:
    return f"v{volume}.s{stripe}.b{block}.blk"


def sidecar_name(volume: int, stripe: int, block: int) -> str:
    return f"v{volume}.s{stripe}.b{block}.sum"


def sidecar_of(block: str) -> str:
    """The sidecar name of a block name."""
    if not block.endswith(".blk"):
        raise ValueError(f"{block!r} is not a block name")
    return block[: -len(".blk")] + ".sum"


def index_name(volume: int) -> str:
    return f"v{volume}.f4idx"


# The shapes of the three names above; numbers in decimal without a leading zero (u32
# volumes and stripes, at most 2-digit block numbers).
_OBJECT_NAME: Final = re.compile(
    r"v(?:0|[1-9][0-9]{0,9})\.(?:s(?:0|[1-9][0-9]{0,9})\.b(?:0|[1-9][0-9]?)\.(?:blk|sum)|f4idx)"
)


def object_name_ok(name: str) -> bool:
    """Whether `name` is a block, sidecar or index name (block_name, sidecar_name,
    index_name)."""
    return _OBJECT_NAME.fullmatch(name) is not None


class BlockWriter(Protocol):
    def write(self, data: Buffer) -> None: ...

    def commit(self) -> None:
        """Makes the object appear durably, whole."""

    def abort(self) -> None: ...


def put_pieces(writer: BlockWriter, pieces: Iterable[Buffer]) -> None:
    """Writes `pieces` through `writer` and commits; aborts on any failure."""
    try:
        for p in pieces:
            writer.write(p)
    except BaseException:
        writer.abort()
        raise
    writer.commit()


class BlockStore(Protocol):
    def nodes(self) -> list[str]: ...

    def put(self, node: str, name: str, pieces: Iterable[Buffer]) -> None: ...

    def open_writer(self, node: str, name: str) -> BlockWriter: ...

    def get_range(self, node: str, name: str, offset: int, length: int) -> bytes:
        """Exactly `length` bytes, or BlockMissing (no such object, or shorter) /
        BlockUnreachable (the node is down)."""

    def get_checked_range(self, node: str, block: str, offset: int, length: int) -> bytes:
        """Exactly `length` bytes of the block `block` at `offset`, checked against its
        sidecar (f4.sidecar.read_checked: the same rules, wherever the check runs), or
        BlockCorrupt, BlockMissing, BlockUnreachable."""

    def get(self, node: str, name: str) -> bytes: ...

    def exists(self, node: str, name: str) -> bool: ...

    def size(self, node: str, name: str) -> int: ...

    def delete(self, node: str, name: str) -> None: ...

    def list(self, node: str) -> list[str]: ...
