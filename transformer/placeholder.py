"""Tiny placeholders for progressive loading: a blurhash (https://blurha.sh) of X_COMPONENTS
x Y_COMPONENTS (4x3) components, a 28-character ASCII string, computed on a thumbnail of at
most THUMB_PX pixels a side so it costs well under a millisecond.

The encoder is blurhash-python's C core fed our pixel buffer directly: its Python `encode`
wants a PIL image and copies it pixel by pixel through `Image.getdata`, which Pillow has
deprecated (our tests turn warnings into errors).
"""

from __future__ import annotations

from typing import Final

import pyvips
from blurhash._functions import ffi, lib

X_COMPONENTS: Final = 4
Y_COMPONENTS: Final = 3
THUMB_PX: Final = 32
# 1 (size flag) + 1 (max AC) + 4 (DC) + 2 per AC component.
HASH_CHARS: Final = 2 + 4 + 2 * (X_COMPONENTS * Y_COMPONENTS - 1)
_HASH_CHARS_MAX: Final = 2 + 4 + (9 * 9 - 1) * 2 + 1  # the library's buffer size, NUL incl.
_WHITE: Final = [255.0, 255.0, 255.0]


def blurhash_of(image: pyvips.Image) -> str:
    """The blurhash of a pyvips image of any size (sRGB or grey; transparency is flattened
    onto white, as the JPEG variants are)."""
    small = image.thumbnail_image(THUMB_PX, height=THUMB_PX)
    if small.hasalpha():
        small = small.flatten(background=_WHITE)
    if small.bands < 3 or small.interpretation != "srgb":
        small = small.colourspace("srgb")
    small = small[0:3].cast("uchar")
    return blurhash_of_rgb(bytes(small.write_to_memory()), small.width, small.height)


def blurhash_of_rgb(rgb: bytes, width: int, height: int) -> str:
    """The blurhash of packed 8-bit RGB pixels (3 * width * height bytes, rows top down).
    Keep the image small (THUMB_PX): the cost is per pixel and component."""
    if width <= 0 or height <= 0 or len(rgb) != 3 * width * height:
        raise ValueError(f"{len(rgb)} bytes are not {width}x{height} RGB pixels")
    pixels = ffi.new("uint8_t[]", rgb)
    out = ffi.new("char[]", _HASH_CHARS_MAX)
    result = lib.create_hash_from_pixels(
        X_COMPONENTS, Y_COMPONENTS, width, height, pixels, width * 3, out
    )
    if result == ffi.NULL:
        raise ValueError("blurhash: component counts out of range")
    return str(ffi.string(result).decode("ascii"))
