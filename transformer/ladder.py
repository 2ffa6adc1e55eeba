"""The photo ladder (seed 000): for each size of PHOTO_SIZES (1080, 640, 320, 150) the
photo at its original aspect (long side = size, never upscaled) and a centre-cropped square
(size x size; the short side when the photo is smaller), each in AVIF, WebP and JPEG: 24
variants, all 8-bit sRGB, auto-oriented, and stripped of every metadata field (EXIF, GPS,
XMP, ICC). Alpha is kept in AVIF and WebP and flattened onto white in JPEG.

How, with libvips: the source is decoded straight to a *base* whose short side is 1080
(JPEG shrink-on-load: a 12 MP JPEG decodes at 1/2 scale), turned to sRGB (the embedded ICC
profile imported; CMYK and 16 bit too), the filter applied once, and every variant cut from
that base; the eight cuts are encoded on ENCODE_THREADS threads (libvips releases the GIL).

Pure and CPU-bound (a 12 MP JPEG: 0.2 s of wall time for a smooth photo, 0.45 s for a very
detailed one, on 2 cores; mostly the AVIF and WebP encoders): the worker runs it in a
thread. The same input gives byte-identical output. The size math, dataclasses and the
threaded encoding are shared with the Pillow ladder (ladder_pillow.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, TypeVar

import pyvips

from common.photo import Format
from transformer import variants
from transformer.errors import Rejected, TranscodeFailed
from transformer.filters import apply_filter, get_filter
from transformer.image_probe import FAIL_ON, decode_heif, read_header
from transformer.limits import MediaLimits
from transformer.placeholder import blurhash_of

LADDER_FORMATS: Final = (Format.AVIF, Format.WEBP, Format.JPEG)
# Encoder settings: good quality at web sizes for little CPU. Qualities are each library's
# own 0..100 scale; efforts trade time for bytes.
JPEG_QUALITY: Final = 82  # with optimize_coding (Huffman tables fitted: ~5% smaller, free)
WEBP_QUALITY: Final = 80
WEBP_EFFORT: Final = 2  # 0..6: 2 gets most of the bytes 4 would, in half the time
AVIF_QUALITY: Final = 55  # AVIF's scale: 55 looks like JPEG ~80 at about 2/3 of the bytes
AVIF_EFFORT: Final = 0  # 0..9: the fastest; higher efforts cost 2-10x for a few % of bytes
BASE_PX: Final = max(variants.PHOTO_SIZES)  # the base's short side (the largest square)
ENCODE_THREADS: Final = 2  # the machine's cores; more only adds contention
WHITE: Final = (255.0, 255.0, 255.0)  # what JPEG flattens transparency onto
_KEEP_NONE: Final = pyvips.enums.ForeignKeep.NONE  # keep no metadata: no EXIF, XMP, ICC

_Image = TypeVar("_Image")


@dataclass(frozen=True, slots=True)
class Encoded:
    """One variant: its rendition (transformer.variants), format, bytes and pixel size."""

    rendition: int
    fmt: Format
    data: bytes
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class PhotoLadder:
    """All variants of one photo. width and height are the source's, as displayed
    (orientation applied); placeholder is a blurhash (placeholder.py)."""

    width: int
    height: int
    placeholder: str
    variants: tuple[Encoded, ...]


@dataclass(frozen=True, slots=True)
class Cut:
    """One rendition to cut from the base: its pixel size, and whether it is the centre
    square (else the whole photo, scaled)."""

    rendition: int
    width: int
    height: int
    square: bool


def aspect_box(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) of the aspect rendition `size` of a width x height photo: long side = size,
    the aspect kept (rounded to whole pixels, at least 1), never upscaled."""
    long_side = max(width, height)
    if long_side <= size:
        return width, height
    return max(1, round(width * size / long_side)), max(1, round(height * size / long_side))


def square_side(width: int, height: int, size: int) -> int:
    """The side of the square rendition `size` (the short side when the photo is smaller)."""
    return min(size, width, height)


def plan_cuts(width: int, height: int) -> tuple[Cut, ...]:
    """The 8 renditions of a width x height photo (as displayed), largest first."""
    cuts: list[Cut] = []
    for size in variants.PHOTO_SIZES:
        cuts.append(Cut(size, *aspect_box(width, height, size), square=False))
        side = square_side(width, height, size)
        cuts.append(Cut(variants.square(size), side, side, square=True))
    return tuple(cuts)


def base_box(width: int, height: int) -> int:
    """The side of the bounding box a width x height photo is scaled into (never up) so that
    its short side becomes BASE_PX: the largest square is then cut at full resolution."""
    return -(-BASE_PX * max(width, height) // min(width, height))


def encode_all(
    cuts: Sequence[Cut],
    render: Callable[[Cut], _Image],
    encode: Callable[[_Image, Format], bytes],
) -> tuple[Encoded, ...]:
    """Every cut rendered once and encoded in every LADDER_FORMATS, on ENCODE_THREADS
    threads; the result is in (cut, format) order whatever the threads' timing."""

    def one(cut: Cut) -> list[Encoded]:
        image = render(cut)
        return [
            Encoded(cut.rendition, fmt, encode(image, fmt), cut.width, cut.height)
            for fmt in LADDER_FORMATS
        ]

    with ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="ladder") as pool:
        return tuple(e for encoded in pool.map(one, cuts) for e in encoded)


def make_photo_ladder(
    data: bytes, *, limits: MediaLimits, filter_id: str | None = None
) -> PhotoLadder:
    """The 24 variants of an image (see the module docstring), `filter_id` (filters.py)
    applied first when given. Raises Rejected for input that fails `limits` or does not
    decode (or an unknown filter), TranscodeFailed if an encoder fails on a good image."""
    if filter_id is not None:
        get_filter(filter_id)  # an unknown id fails before any decoding
    base, width, height = load_base(data, limits)
    if filter_id is not None:
        base = apply_filter(base, filter_id).copy_memory()
    try:
        encoded = encode_all(plan_cuts(width, height), lambda cut: _render(base, cut), _encode)
        placeholder = blurhash_of(base)
    except pyvips.Error as e:
        raise TranscodeFailed(f"libvips failed on a decoded image: {e.message}") from e
    return PhotoLadder(width, height, placeholder, encoded)


def load_base(data: bytes, limits: MediaLimits) -> tuple[pyvips.Image, int, int]:
    """(the base: the source scaled so its short side is BASE_PX (never enlarged), oriented,
    8-bit sRGB with 3 bands or 4 with alpha, in memory; the source's displayed width and
    height). Checks the header against `limits` first (read_header) so a decompression
    bomb is never decoded. Raises Rejected."""
    info = read_header(data, limits)
    box = base_box(info.width, info.height)
    try:
        if info.fmt == Format.HEIC:
            base = decode_heif(data).thumbnail_image(box, height=box, size="down")
        else:
            # thumbnail_buffer: shrink-on-load, auto-rotate, CMYK to sRGB, premultiplied
            # alpha while scaling. An embedded profile is imported only when asked for, and
            # asking costs a colour transform even without one: ask only when there is one.
            header = pyvips.Image.new_from_buffer(data, "", fail_on=FAIL_ON)
            profile = {"output_profile": "srgb"} if header.get_typeof("icc-profile-data") else {}
            # (thumbnail's own fail_on argument does not reach the loader: the option
            # string does.)
            base = pyvips.Image.thumbnail_buffer(
                data, box, height=box, size="down", option_string=f"fail_on={FAIL_ON}", **profile
            )
        base = base.copy_memory()  # the decode happens here: errors are data errors
        base = _srgb8(base).copy_memory()
    except Rejected:
        raise
    except Exception as e:  # pyvips.Error mostly: truncated or corrupt data
        raise Rejected(
            "corrupt_file", "The image is truncated or corrupt and cannot be decoded."
        ) from e
    return base, info.width, info.height


def _srgb8(image: pyvips.Image) -> pyvips.Image:
    """`image` as 8-bit sRGB, 3 bands, or 4 when its alpha is not opaque everywhere."""
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")  # grey, 16 bit, CMYK...; alpha is carried along
    if image.format != "uchar":
        image = image.cast("uchar")
    if image.bands > 4:
        image = image[0:4]
    elif image.bands < 3:  # grey (+ alpha) that colourspace left alone: replicate the grey
        grey = image[0]
        image = grey.bandjoin([grey, grey, *([image[1]] if image.bands == 2 else [])])
    if image.hasalpha() and image[3].min() == 255:
        image = image[0:3]  # an opaque alpha band only costs bytes and encoder time
    return image.copy(interpretation="srgb")


def _render(base: pyvips.Image, cut: Cut) -> pyvips.Image:
    """The pixels of `cut`, in memory (encoded three times: decoded once)."""
    if cut.square:
        short = min(base.width, base.height)
        left, top = (base.width - short) // 2, (base.height - short) // 2
        image = base.crop(left, top, short, short)
    else:
        image = base
    if (image.width, image.height) != (cut.width, cut.height):
        alpha = image.hasalpha()
        if alpha:  # premultiplied while resampling, or transparent pixels bleed their colour
            image = image.premultiply()
        image = image.resize(cut.width / image.width, vscale=cut.height / image.height)
        if alpha:
            image = image.unpremultiply().cast("uchar")
    return image.copy_memory()


def _encode(image: pyvips.Image, fmt: Format) -> bytes:
    if fmt == Format.JPEG:
        if image.hasalpha():
            image = image.flatten(background=list(WHITE))
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
