MISS: int
REFER: int
HEADER_BYTES: int
FOOTER_BYTES: int

def answer(
    fd: int, offset: int, length: int, key: int, alt_key: int, cookie: int, /
) -> tuple[bytes, memoryview] | int: ...
def checksum(header: bytes, data: bytes | bytearray | memoryview, /) -> int: ...
