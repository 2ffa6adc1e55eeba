MISS: int
REFER: int
HEADER_BYTES: int
FOOTER_BYTES: int
VOLUME_ID_MAX: int
KEY_MAX: int
ALT_KEY_MAX: int
HASH: str  # the XXH3 build in use: "avx2" or "baseline"

def answer(
    fd: int, offset: int, length: int, key: int, alt_key: int, cookie: int, /
) -> tuple[bytes, memoryview] | int: ...
def checksum(header: bytes, data: bytes | bytearray | memoryview, /) -> int: ...
def chunk_sums_match(
    data: bytes | bytearray | memoryview,
    packed: bytes | bytearray | memoryview,
    chunk_bytes: int,
    /,
) -> int: ...
def pread_cached(fd: int, length: int, offset: int, /) -> bytes | None: ...
def parse_path(path: str, /) -> tuple[int, int, int, int] | None: ...
def parse_get(
    data: bytes, head_bytes_max: int, prefix: bytes, /
) -> tuple[bool, int, int, int, int, str | None, str | None, bool] | None: ...
