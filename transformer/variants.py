"""The variants of one media and their rendition numbers (the u24 in a needle's alt key).

A needle is keyed (key = media id, alt key = rendition << 8 | format code; common/photo.py).
Rendition numbers are stored data, like format codes: never renumber one.

| rendition              | variant                                                        |
|------------------------|----------------------------------------------------------------|
| 0                      | the original upload, bytes as received (owner only)            |
| 1                      | HLS master playlist (m3u8)                                     |
| 2                      | video poster frame (JPEG and WebP, long side <= 1080)          |
| 150, 320, 640, 1080    | photo at the original aspect, long side = size (no upscaling)  |
| 10000 + size           | photo, square centre crop, size x size                         |
| 20000 + height         | HLS rung playlist of that height                               |
| height * 10000 + index | HLS segment `index` of the rung of that height (.ts)           |
"""

from __future__ import annotations

from typing import Final

from common.photo import ORIGINAL_RENDITION, RENDITION_MAX

ORIGINAL: Final = ORIGINAL_RENDITION
MASTER_PLAYLIST: Final = 1
POSTER: Final = 2
PHOTO_SIZES: Final = (1080, 640, 320, 150)
SQUARE_BASE: Final = 10000
RUNG_PLAYLIST_BASE: Final = 20000
HLS_HEIGHTS: Final = (240, 480, 720, 1080)
SEGMENT_INDEX_MAX: Final = 9999
SEGMENT_STRIDE: Final = SEGMENT_INDEX_MAX + 1

# The ranges never overlap: sizes < SQUARE_BASE, squares < RUNG_PLAYLIST_BASE, rung
# playlists < the first segment, and the last segment fits the u24.
assert max(PHOTO_SIZES) < SQUARE_BASE
assert SQUARE_BASE + max(PHOTO_SIZES) < RUNG_PLAYLIST_BASE
assert RUNG_PLAYLIST_BASE + max(HLS_HEIGHTS) < min(HLS_HEIGHTS) * SEGMENT_STRIDE
assert max(HLS_HEIGHTS) * SEGMENT_STRIDE + SEGMENT_INDEX_MAX <= RENDITION_MAX


def square(size: int) -> int:
    """The rendition of the size x size centre crop."""
    if size not in PHOTO_SIZES:
        raise ValueError(f"no square rendition of size {size}")
    return SQUARE_BASE + size


def rung_playlist(height: int) -> int:
    """The rendition of the HLS playlist of one rung."""
    if height not in HLS_HEIGHTS:
        raise ValueError(f"no HLS rung of height {height}")
    return RUNG_PLAYLIST_BASE + height


def segment(height: int, index: int) -> int:
    """The rendition of segment `index` of the rung of `height`."""
    if height not in HLS_HEIGHTS:
        raise ValueError(f"no HLS rung of height {height}")
    if not 0 <= index <= SEGMENT_INDEX_MAX:
        raise ValueError(f"segment index must be within 0..{SEGMENT_INDEX_MAX}")
    return height * SEGMENT_STRIDE + index


def name(rendition: int) -> str:
    """A short readable name of a rendition, as the API lists variants: "original",
    "1080", "1080_square", "poster", "hls", "hls_720", "hls_720_3"."""
    if rendition == ORIGINAL:
        return "original"
    if rendition == MASTER_PLAYLIST:
        return "hls"
    if rendition == POSTER:
        return "poster"
    if rendition in PHOTO_SIZES:
        return str(rendition)
    if rendition - SQUARE_BASE in PHOTO_SIZES:
        return f"{rendition - SQUARE_BASE}_square"
    if rendition - RUNG_PLAYLIST_BASE in HLS_HEIGHTS:
        return f"hls_{rendition - RUNG_PLAYLIST_BASE}"
    height, index = divmod(rendition, SEGMENT_STRIDE)
    if height in HLS_HEIGHTS:
        return f"hls_{height}_{index}"
    raise ValueError(f"unknown rendition {rendition}")
