"""Tiny placeholders for progressive loading: a blurhash (4x3 components, about 20 ASCII
characters) computed on a ~32 px thumbnail, so it costs well under a millisecond of work.

The encoder is blurhash-python's C core, fed our pixel buffer directly: its Python wrapper
goes through a Pillow call that Pillow has deprecated, and the buffer is what it needs."""

from __future__ import annotations

from typing import Any, Final

from blurhash._functions import ffi, lib

X_COMPONENTS: Final = 4
Y_COMPONENTS: Final = 3
THUMB_PX: Final = 32
_HASH_CHARS_MAX: Final = 2 + 4 + (9 * 9 - 1) * 2 + 1


def blurhash_of(image: Any) -> str:
    """The blurhash of a pyvips image (any size; sRGB, alpha ignored)."""
    small = image.thumbnail_image(THUMB_PX, height=THUMB_PX)
    if small.hasalpha():
        small = small.flatten(background=[255, 255, 255])
    if small.bands < 3:
        small = small.colourspace("srgb")
    small = small[0:3].cast("uchar")
    pixels = bytes(small.write_to_memory())
    rgb = ffi.new("uint8_t[]", pixels)
    out = ffi.new("char[]", _HASH_CHARS_MAX)
    result = lib.create_hash_from_pixels(
        X_COMPONENTS, Y_COMPONENTS, small.width, small.height, rgb, small.width * 3, out
    )
    if result == ffi.NULL:
        raise ValueError("blurhash: bad component counts")
    return str(ffi.string(result).decode("ascii"))
