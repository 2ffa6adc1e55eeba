"""Validation of an uploaded image by its content, in an order that never decodes what it
should not: size -> magic bytes -> header -> pixel count (the decompression-bomb guard) ->
side lengths -> a decode check that catches truncated and corrupt data. Every failure is a
`Rejected`; no other exception escapes for any byte string.

`decode` is shared with the ladder: a HEIC is decoded by pillow-heif (libvips here has no
HEVC decoder), everything else by libvips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import pyvips

from common.photo import Format
from transformer.errors import Rejected
from transformer.limits import MediaLimits
from transformer.sniff import ACCEPTED_IMAGE_FORMATS, sniff

# libvips: fail on errors and truncation (not on mere warnings such as odd markers).
FAIL_ON: Final = "error"
# EXIF orientations 5..8 swap width and height on display.
_SWAPPING_ORIENTATIONS: Final = frozenset({5, 6, 7, 8})
_NAMES: Final = "JPEG, PNG, HEIC or WebP"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    fmt: Format
    width: int  # as displayed: EXIF orientation applied
    height: int
    orientation: int
    has_alpha: bool
    size_bytes: int


def _corrupt(what: str = "the image") -> Rejected:
    return Rejected("corrupt_file", f"{what} is truncated or corrupt and cannot be decoded")


def _heif_header(data: bytes) -> tuple[int, int, bool]:
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=True)
        return int(heif.size[0]), int(heif.size[1]), bool(heif.has_alpha)
    except Exception as e:  # the library raises many kinds; all mean "not a valid HEIC"
        raise _corrupt() from e


def _vips_header(data: bytes) -> tuple[int, int, bool, int]:
    try:
        image = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on=FAIL_ON)
        orientation = image.get("orientation") if image.get_typeof("orientation") else 1
        return int(image.width), int(image.height), bool(image.hasalpha()), int(orientation)
    except pyvips.Error as e:
        raise _corrupt() from e


def probe_image(data: bytes, limits: MediaLimits) -> ImageInfo:
    """The validated image's facts; raises Rejected (see module docstring)."""
    if len(data) > limits.image_bytes_max:
        raise Rejected(
            "file_too_large", f"images are limited to {limits.image_bytes_max} bytes", status=413
        )
    fmt = sniff(data[:512])
    if fmt not in ACCEPTED_IMAGE_FORMATS:
        raise Rejected("unsupported_format", f"the file is not a {_NAMES} image", status=415)
    orientation = 1
    if fmt == Format.HEIC:
        width, height, has_alpha = _heif_header(data)
    else:
        width, height, has_alpha, orientation = _vips_header(data)
        if not 1 <= orientation <= 8:
            orientation = 1
    if width * height > limits.image_pixels_max:
        raise Rejected(
            "too_many_pixels",
            f"{width}x{height} is more than {limits.image_pixels_max} pixels",
        )
    if min(width, height) < limits.image_side_px_min:
        raise Rejected(
            "image_too_small",
            f"{width}x{height}: each side must be at least {limits.image_side_px_min} pixels",
        )
    if max(width, height) > limits.image_side_px_max:
        raise Rejected(
            "image_too_large",
            f"{width}x{height}: no side may exceed {limits.image_side_px_max} pixels",
        )
    check_decodes(data, fmt)
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(fmt, width, height, orientation, has_alpha, len(data))


def check_decodes(data: bytes, fmt: Format) -> None:
    """Decodes every pixel once (a JPEG at 1/8 scale: that still reads its whole entropy
    stream) so that truncation and corruption are found now, not in a worker."""
    try:
        if fmt == Format.HEIC:
            decode_heif(data)
            return
        options = "shrink=8" if fmt == Format.JPEG else ""
        image = pyvips.Image.new_from_buffer(data, options, access="sequential", fail_on=FAIL_ON)
        image.avg()
    except Rejected:
        raise
    except pyvips.Error as e:
        raise _corrupt() from e


def decode_heif(data: bytes) -> Any:
    """A HEIC as a pyvips image (sRGB, 8 bit, orientation applied); raises Rejected."""
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=True)
        bands = 4 if heif.has_alpha else 3
        width, height = heif.size
        pixels = bytes(heif.data)
        stride = heif.stride
    except Exception as e:  # the library raises many kinds; all mean "not a valid HEIC"
        raise _corrupt() from e
    if stride != width * bands:  # rows are padded: drop the padding
        row = width * bands
        pixels = b"".join(pixels[y * stride : y * stride + row] for y in range(height))
    image = pyvips.Image.new_from_memory(pixels, width, height, bands, "uchar")
    return image.copy(interpretation="srgb")


def open_image(data: bytes, fmt: Format) -> Any:
    """The whole image as pyvips, orientation applied (random access; for small sources)."""
    if fmt == Format.HEIC:
        return decode_heif(data)
    try:
        return pyvips.Image.new_from_buffer(data, "", fail_on=FAIL_ON).autorot()
    except pyvips.Error as e:
        raise _corrupt() from e
