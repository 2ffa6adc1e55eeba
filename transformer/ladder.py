"""The photo ladder (seed 000): 1080, 640, 320 and 150, each at the original aspect (long
side = size, never upscaled) and as a centre-cropped square, each in AVIF, WebP and JPEG:
24 variants, all sRGB, auto-oriented, and stripped of every metadata field (EXIF, GPS, XMP,
ICC). Made with libvips: the source is decoded straight to a base whose short side is 1080
(shrink-on-load), the filter applied once, every variant cut from that base.

Pure and CPU-bound: the worker runs it in a thread (libvips releases the GIL). The same
input gives the same output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import pyvips

from common.photo import Format
from transformer import variants
from transformer.errors import Rejected
from transformer.filters import apply_filter
from transformer.image_probe import FAIL_ON, decode_heif
from transformer.limits import MediaLimits
from transformer.placeholder import blurhash_of
from transformer.sniff import sniff

LADDER_FORMATS: Final = (Format.AVIF, Format.WEBP, Format.JPEG)
JPEG_QUALITY: Final = 82
WEBP_QUALITY: Final = 80
WEBP_EFFORT: Final = 2  # 0..6: a little effort buys most of the size; more costs time
AVIF_QUALITY: Final = 55
AVIF_EFFORT: Final = 0  # 0..9: the fastest encoder setting keeps the ladder under budget
BASE_PX: Final = max(variants.PHOTO_SIZES)
_KEEP_NONE: Final = pyvips.enums.ForeignKeep.NONE
WHITE: Final = [255, 255, 255]


@dataclass(frozen=True, slots=True)
class Encoded:
    rendition: int
    fmt: Format
    data: bytes
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class PhotoLadder:
    width: int  # the source as displayed (orientation applied)
    height: int
    placeholder: str
    variants: tuple[Encoded, ...]


def aspect_box(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) of the aspect rendition `size`: long side = size, never upscaled."""
    long_side = max(width, height)
    if long_side <= size:
        return width, height
    scale = size / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def square_side(width: int, height: int, size: int) -> int:
    """The side of the square rendition `size` (the short side when the source is smaller)."""
    return min(size, width, height)


def _encode_vips(image: Any, fmt: Format) -> bytes:
    if fmt == Format.JPEG:
        if image.hasalpha():
            image = image.flatten(background=WHITE)
        return bytes(
            image.jpegsave_buffer(
                Q=JPEG_QUALITY, optimize_coding=True, interlace=True, keep=_KEEP_NONE
            )
        )
    if fmt == Format.WEBP:
        return bytes(image.webpsave_buffer(Q=WEBP_QUALITY, effort=WEBP_EFFORT, keep=_KEEP_NONE))
    if fmt == Format.AVIF:
        return bytes(
            image.heifsave_buffer(
                Q=AVIF_QUALITY, compression="av1", effort=AVIF_EFFORT, keep=_KEEP_NONE
            )
        )
    raise ValueError(f"no ladder encoder for {fmt!r}")


def _srgb8(image: Any) -> Any:
    """sRGB, 8 bits per band, 3 bands (+ alpha)."""
    if image.interpretation not in ("srgb",) or image.format != "uchar":
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    if image.bands == 2:  # grey + alpha
        image = image[0].bandjoin([image[0], image[0], image[1]])
    elif image.bands == 1:
        image = image.bandjoin([image, image])
    return image.copy(interpretation="srgb")


def _box(width: int, height: int) -> int:
    """The box the base is reduced to: its short side still BASE_PX, so that the largest
    square is cut at full size."""
    return -(-BASE_PX * max(width, height) // min(width, height))


def load_base(data: bytes) -> tuple[Any, int, int]:
    """(the source reduced so its short side is BASE_PX (never enlarged), sRGB 8 bit,
    oriented; its displayed width, height). Raises Rejected for undecodable data."""
    fmt = sniff(data[:512])
    try:
        if fmt == Format.HEIC:
            full = decode_heif(data)
            width, height = full.width, full.height
            box = _box(width, height)
            base = full.thumbnail_image(box, height=box, size="down")
        else:
            header = pyvips.Image.new_from_buffer(data, "", fail_on=FAIL_ON)
            orientation = header.get("orientation") if header.get_typeof("orientation") else 1
            swap = orientation in (5, 6, 7, 8)
            width, height = (header.height, header.width) if swap else (header.width, header.height)
            box = _box(width, height)
            # thumbnail_buffer: shrink-on-load, auto-rotate, embedded ICC (CMYK too) -> sRGB.
            base = pyvips.Image.thumbnail_buffer(
                data, box, height=box, size="down", option_string=f"fail_on={FAIL_ON}"
            )
        base = _srgb8(base).copy_memory()
    except pyvips.Error as e:
        raise Rejected("corrupt_file", "the image cannot be decoded") from e
    return base, int(width), int(height)


def make_photo_ladder(
    data: bytes, *, limits: MediaLimits, filter_id: str | None = None
) -> PhotoLadder:
    """The 24 variants of a validated image (see module docstring)."""
    base, width, height = load_base(data)
    if filter_id is not None:
        base = apply_filter(base, filter_id).copy_memory()
    return cut_ladder(base, width, height, _encode_vips)


def cut_ladder(
    base: Any, width: int, height: int, encode: Callable[[Any, Format], bytes]
) -> PhotoLadder:
    out: list[Encoded] = []
    for size in variants.PHOTO_SIZES:
        w, h = aspect_box(base.width, base.height, size)
        aspect = (
            base
            if (w, h) == (base.width, base.height)
            else base.resize(w / base.width, vscale=h / base.height)
        )
        side = square_side(base.width, base.height, size)
        short = min(base.width, base.height)
        left, top = (base.width - short) // 2, (base.height - short) // 2
        square = base.crop(left, top, short, short)
        if side != short:
            square = square.resize(side / short)
        for rendition, image in ((size, aspect), (variants.square(size), square)):
            image = image.copy_memory()
            for fmt in LADDER_FORMATS:
                out.append(Encoded(rendition, fmt, encode(image, fmt), image.width, image.height))
    return PhotoLadder(width, height, blurhash_of(base), tuple(out))
