"""The store's hot GET in C (hot_read.c), and the switch between it and the pure-Python path.

`load` gives the compiled module when `[store] native` is true, PINHOLE_STORE_NATIVE is not
"0" and the extension was built (scripts/bootstrap builds it with the editable install);
None otherwise, and then every read takes the pure-Python path, which is unchanged. Either
way it logs once which path serves.

The C call covers a page-cache hit of a plain GET only (store/read_path.ReadPath.answer_cached):
every other outcome is handed back to the Python path, which answers it as it always has.
"""

from __future__ import annotations

import logging
import os
from typing import Final, Protocol

from common import photo
from store import needle

log = logging.getLogger("pinhole.store")

ENV_SWITCH: Final = "PINHOLE_STORE_NATIVE"

# parse_get's answer: (head_only, volume, key, alt_key, cookie, authorization, request_id,
# close after the answer).
GetFields = tuple[bool, int, int, int, int, str | None, str | None, bool]


class HotRead(Protocol):
    MISS: int
    REFER: int
    HASH: str

    def answer(
        self, fd: int, offset: int, length: int, key: int, alt_key: int, cookie: int, /
    ) -> tuple[bytes, memoryview] | int: ...

    def parse_path(self, path: str, /) -> tuple[int, int, int, int] | None: ...

    def parse_get(self, data: bytes, head_bytes_max: int, prefix: bytes, /) -> GetFields | None: ...

    def checksum(self, header: bytes, data: bytes | bytearray | memoryview, /) -> int: ...


def load(*, enabled: bool) -> HotRead | None:
    """The C hot read when enabled and built, else None (the pure-Python path)."""
    if not enabled:
        log.info("store reads: pure Python ([store] native = false)")
        return None
    if os.environ.get(ENV_SWITCH, "1") == "0":
        log.info("store reads: pure Python (%s=0)", ENV_SWITCH)
        return None
    try:
        from store.native import _hot_read
    except ImportError as e:
        log.warning("store reads: pure Python (the C extension is not built: %s)", e)
        return None
    # Pair check: the C path parser's limits are the Python ones.
    limits = (_hot_read.VOLUME_ID_MAX, _hot_read.KEY_MAX, _hot_read.ALT_KEY_MAX)
    assert limits == (photo.VOLUME_ID_MAX, needle.KEY_MAX, needle.ALT_KEY_MAX), limits
    log.info("store reads: page-cache hits served by the C extension (XXH3 %s)", _hot_read.HASH)
    module: HotRead = _hot_read
    return module


class ForF4(Protocol):
    """What f4's storage node reads with (f4/local_block_store.py, f4/sidecar.py)."""

    def chunk_sums_match(
        self,
        data: bytes | bytearray | memoryview,
        packed: bytes | bytearray | memoryview,
        chunk_bytes: int,
        /,
    ) -> int: ...

    def pread_cached(self, fd: int, length: int, offset: int, /) -> bytes | None: ...


def for_f4() -> ForF4 | None:
    """hot_read.c's two helpers of f4's checked read (a page-cache read into bytes not
    zeroed first, and the sidecar's per-chunk check in one call, with the same XXH3 build
    as the hot read), or None when PINHOLE_STORE_NATIVE is "0" or the extension was not
    built: f4 then reads and checks in Python."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    try:
        from store.native import _hot_read
    except ImportError:
        return None
    module: ForF4 = _hot_read
    return module


class RequestParser(Protocol):
    """What another lean service's fast path parses with (cache/http_api.py, its hits)."""

    def parse_get(self, data: bytes, head_bytes_max: int, prefix: bytes, /) -> GetFields | None: ...


def request_parser() -> RequestParser | None:
    """hot_read.c's `parse_get` (a whole plain GET's fields from the raw bytes of a read,
    for the lean server's fast hook), or None when PINHOLE_STORE_NATIVE is "0" or the
    extension was not built: the service then parses every request with llhttp."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    try:
        from store.native import _hot_read
    except ImportError:
        return None
    module: RequestParser = _hot_read
    return module
