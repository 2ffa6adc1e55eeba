"""Validation of an uploaded image by its content, in an order that never decodes what it
should not:

    byte size (413) -> magic bytes (415) -> container structure (container.py) -> header
    only -> pixel count (the decompression-bomb guard, before any pixel is decoded) -> side
    lengths -> one full decode that finds corrupt data

Every failure is a `Rejected`; no other exception escapes, for any byte string. The
structure check comes before any decoder sees the bytes: decoders are lenient (some decode a
truncated HEIC or PNG and make up the rest), so truncation is found there, not by them.

An image is bytes in memory or the path of its file (`probe_image_file`): a file is checked
in bounded reads and handed to the decoders by its path, so that validating it needs no
copy of it in memory (libvips streams it; libheif may read it whole).

HEIC is read with pillow-heif: the libvips bundled here has libheif without an HEVC decoder
(it decodes and encodes AVIF only). Everything else is read with libvips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pillow_heif
import pyvips

from common.photo import Format
from transformer.byte_source import ByteSource, BytesSource, open_file_source
from transformer.container import check_container
from transformer.errors import Rejected
from transformer.limits import MediaLimits
from transformer.sniff import ACCEPTED_IMAGE_FORMATS, SNIFF_BYTES, sniff

# libvips loaders are lenient by default (a truncated JPEG decodes to a grey bottom half):
# fail on errors, truncation included, but not on mere warnings such as an odd marker.
FAIL_ON: Final = "error"
# A JPEG is checked at 1/8 scale: libjpeg still reads the whole entropy-coded stream (so
# truncation and corrupt data are found) but skips most of the inverse DCT.
_JPEG_CHECK_SHRINK: Final = 8
# A file is opened by the loader of its sniffed format: libvips then neither guesses from
# the name nor reads load options out of it ("photo.jpg[shrink=8]").
_VIPS_FILE_LOADERS: Final = {
    Format.JPEG: "jpegload",
    Format.PNG: "pngload",
    Format.WEBP: "webpload",
}
# EXIF orientations 5..8 rotate by 90 degrees: the displayed width is the stored height.
_SWAPPING_ORIENTATIONS: Final = frozenset({5, 6, 7, 8})
_HEIF_BANDS: Final = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_ACCEPTED_NAMES: Final = "JPEG, PNG, HEIC or WebP"

# An image in memory, or the path of its file.
ImageInput = bytes | Path


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """The facts of a valid image. width and height are in pixels as displayed (EXIF
    orientation applied); orientation is the EXIF orientation (1..8) the decoder applies,
    1 for HEIC (libheif applies the file's own rotation and mirror boxes itself)."""

    fmt: Format
    width: int
    height: int
    orientation: int
    has_alpha: bool
    size_bytes: int


def _corrupt() -> Rejected:
    return Rejected("corrupt_file", "The image is truncated or corrupt and cannot be decoded.")


def probe_image(data: bytes, limits: MediaLimits) -> ImageInfo:
    """The validated image's facts, after the checks of the module docstring (the decode
    included: 20-50 ms for a 12 MP JPEG, read at 1/8 scale; a full decode for PNG, WebP and
    HEIC). Raises Rejected, and only Rejected."""
    info = read_header(data, limits)
    check_decodes(data, info.fmt)
    return info


def probe_image_file(path: Path, limits: MediaLimits) -> ImageInfo:
    """probe_image for the image file at `path`: checked in bounded reads, decoded from its
    path. Blocking: run it on a thread. Raises Rejected, or OSError when the file cannot be
    opened."""
    info = read_header(path, limits)
    check_decodes(path, info.fmt)
    return info


def read_header(image: ImageInput, limits: MediaLimits) -> ImageInfo:
    """Every check of `probe_image` but the decode: byte size, format, container structure,
    pixel count and side lengths, from the header alone (cheap even for a decompression
    bomb). Raises Rejected, and only Rejected (OSError too for a path it cannot read)."""
    if isinstance(image, Path):
        with open_file_source(image) as src:
            fmt, size_bytes = _check_bytes(src, limits)
    else:
        fmt, size_bytes = _check_bytes(BytesSource(image), limits)
    try:
        if fmt == Format.HEIC:
            width, height, has_alpha, orientation = _heif_header(image)
        else:
            width, height, has_alpha, orientation = _vips_header(image, fmt)
    except Rejected:
        raise
    except Exception as e:  # pyvips.Error, and whatever a library raises on odd bytes
        raise _corrupt() from e
    pixels = width * height
    if pixels > limits.image_pixels_max:
        raise Rejected(
            "too_many_pixels",
            f"The image is {width}x{height} ({pixels} pixels); "
            f"the limit is {limits.image_pixels_max} pixels.",
        )
    if min(width, height) < limits.image_side_px_min:
        raise Rejected(
            "image_too_small",
            f"The image is {width}x{height}; "
            f"each side must be at least {limits.image_side_px_min} pixels.",
        )
    if max(width, height) > limits.image_side_px_max:
        raise Rejected(
            "image_too_large",
            f"The image is {width}x{height}; "
            f"no side may be longer than {limits.image_side_px_max} pixels.",
        )
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(fmt, width, height, orientation, has_alpha, size_bytes)


def _check_bytes(src: ByteSource, limits: MediaLimits) -> tuple[Format, int]:
    """(format, size in bytes) after the checks that need no decoder: size, magic bytes,
    container structure."""
    if src.size > limits.image_bytes_max:
        raise Rejected(
            "file_too_large",
            f"The image is {src.size} bytes; the limit is {limits.image_bytes_max} bytes.",
            status=413,
        )
    fmt = sniff(bytes(src.read(0, min(src.size, SNIFF_BYTES))))
    if fmt not in ACCEPTED_IMAGE_FORMATS:
        raise Rejected(
            "unsupported_format",
            f"The file is not an image we accept; send a {_ACCEPTED_NAMES} image.",
            status=415,
        )
    check_container(src, fmt, limits)
    return fmt, src.size


def _vips_open(image: ImageInput, fmt: Format, **options: Any) -> pyvips.Image:
    """`image` opened by libvips, for one sequential pass; nothing is decoded yet."""
    if isinstance(image, Path):
        loader = _VIPS_FILE_LOADERS[fmt]
        return pyvips.Operation.call(
            loader, str(image), access="sequential", fail_on=FAIL_ON, **options
        )
    return pyvips.Image.new_from_buffer(image, "", access="sequential", fail_on=FAIL_ON, **options)


def _vips_header(source: ImageInput, fmt: Format) -> tuple[int, int, bool, int]:
    """(stored width, stored height, has alpha, orientation): libvips reads only the header
    here; pixels are decoded when something asks for them."""
    image = _vips_open(source, fmt)
    orientation = image.get("orientation") if image.get_typeof("orientation") else 1
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1  # what libvips' autorot does with an out-of-range value
    return int(image.width), int(image.height), bool(image.hasalpha()), orientation


def _heif_header(image: ImageInput) -> tuple[int, int, bool, int]:
    """As _vips_header, for HEIC: open_heif parses the boxes and decodes nothing yet. Its
    size is the displayed size already (libheif applies irot/imir), so orientation is 1."""
    heif = pillow_heif.open_heif(image, convert_hdr_to_8bit=True)
    width, height = heif.size
    return int(width), int(height), bool(heif.has_alpha), 1


def check_decodes(image: ImageInput, fmt: Format) -> None:
    """Decodes every pixel once, so that corruption is found now (a 4xx to the uploader) and
    not later in a worker. Raises Rejected("corrupt_file") only (OSError too for a path it
    cannot read)."""
    try:
        if fmt == Format.HEIC:
            decode_heif(image)
            return
        options = {"shrink": _JPEG_CHECK_SHRINK} if fmt == Format.JPEG else {}
        # A full pass over the pixels: the loader fails here on bad data.
        _vips_open(image, fmt, **options).avg()
    except Rejected:
        raise
    except Exception as e:  # pyvips.Error mostly; see read_header
        raise _corrupt() from e


def decode_heif(source: ImageInput) -> pyvips.Image:
    """A whole HEIC as a pyvips image: 8 bit, sRGB (an embedded ICC profile, e.g. an iPhone's
    Display P3, is converted), 3 or 4 bands, displayed orientation. Raises Rejected."""
    try:
        heif = pillow_heif.open_heif(source, convert_hdr_to_8bit=True)
        bands = _HEIF_BANDS.get(heif.mode)
        if bands is None:
            raise _corrupt()
        width, height = heif.size
        stride = heif.stride
        # Rows may be padded to `stride` bytes: numpy drops the padding in one copy.
        rows = np.frombuffer(heif.data, dtype=np.uint8, count=stride * height)
        pixels = np.ascontiguousarray(rows.reshape(height, stride)[:, : width * bands])
        icc = heif.info.get("icc_profile")
    except Rejected:
        raise
    except Exception as e:  # libheif errors come as RuntimeError, ValueError, ...
        raise _corrupt() from e
    image = pyvips.Image.new_from_memory(pixels.data, width, height, bands, "uchar")
    image = image.copy(interpretation="b-w" if bands <= 2 else "srgb")
    if isinstance(icc, bytes) and icc:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
        try:
            image = image.icc_transform("srgb", embedded=True).copy_memory()
        except pyvips.Error:
            # An unusable profile: the pixels are taken as sRGB, as browsers do.
            image.remove("icc-profile-data")
        else:
            return image
    return image.colourspace("srgb") if bands <= 2 else image
