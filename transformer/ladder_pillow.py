"""The same photo ladder made with Pillow (pillow-heif for HEIC, Pillow's own AVIF): the
comparison of `pinhole bench media` (ladders per second, pyvips against Pillow, in one run).

Same renditions, sizes, formats, qualities and efforts, the same threads (ladder.encode_all),
orientation applied, embedded ICC profiles converted to sRGB, transparency flattened onto
white for JPEG, every metadata field dropped. Filters are not offered here. JPEG decoding
uses Pillow's `draft` (libjpeg DCT scaling), the counterpart of libvips' shrink-on-load.
"""

from __future__ import annotations

import functools
import io
from typing import Any, Final

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps

from common.photo import Format
from transformer.errors import Rejected
from transformer.image_probe import read_header
from transformer.ladder import (
    AVIF_EFFORT,
    AVIF_QUALITY,
    BASE_PX,
    JPEG_QUALITY,
    WEBP_EFFORT,
    WEBP_QUALITY,
    WHITE,
    Cut,
    PhotoLadder,
    encode_all,
    plan_cuts,
)
from transformer.limits import MediaLimits
from transformer.placeholder import THUMB_PX, blurhash_of_rgb

# libavif's speed runs 0..10 where libheif's effort runs 9..0 (both map onto aom's cpu-used):
# this is the same setting as the libvips ladder's AVIF_EFFORT.
AVIF_SPEED: Final = 9 - AVIF_EFFORT
_SAVE_ARGS: Final[dict[Format, tuple[str, dict[str, Any]]]] = {
    Format.JPEG: ("JPEG", {"quality": JPEG_QUALITY, "optimize": True, "progressive": True}),
    Format.WEBP: ("WEBP", {"quality": WEBP_QUALITY, "method": WEBP_EFFORT}),
    Format.AVIF: ("AVIF", {"quality": AVIF_QUALITY, "speed": AVIF_SPEED}),
}
_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_ORIENTATION_TAG: Final = 0x0112
_GREY16_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


@functools.cache
def _register_heif() -> None:
    pillow_heif.register_heif_opener()


def make_photo_ladder_pillow(data: bytes, *, limits: MediaLimits) -> PhotoLadder:
    """The ladder of ladder.make_photo_ladder (without a filter), made with Pillow. Raises
    Rejected for input that fails `limits` or does not decode."""
    info = read_header(data, limits)  # the same checks, and no bomb is ever decoded
    _register_heif()
    try:
        base = _load_base(data)
    except Rejected:
        raise
    except Exception as e:  # OSError ("truncated"), SyntaxError, ValueError, ...
        raise Rejected(
            "corrupt_file", "The image is truncated or corrupt and cannot be decoded."
        ) from e
    encoded = encode_all(plan_cuts(info.width, info.height), lambda c: _render(base, c), _encode)
    return PhotoLadder(info.width, info.height, _placeholder(base), encoded)


def _load_base(data: bytes) -> Image.Image:
    """The oriented 8-bit sRGB source, scaled (never up) so its short side is BASE_PX."""
    with Image.open(io.BytesIO(data)) as source:
        short = min(source.size)
        if short > BASE_PX:  # JPEG: decode at the smallest DCT scale that is still >= base
            scale = BASE_PX / short
            source.draft(source.mode, (int(source.width * scale), int(source.height * scale)))
        image = ImageOps.exif_transpose(source)  # a copy, pixels loaded
    image = _srgb8(image)
    short = min(image.size)
    if short > BASE_PX:
        scale = BASE_PX / short
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.LANCZOS)
    image.info.clear()  # Pillow's savers fall back to info's ICC profile, EXIF and XMP
    return image


def _srgb8(image: Image.Image) -> Image.Image:
    """`image` as sRGB "RGB", or "RGBA" when its alpha is not opaque everywhere."""
    if image.mode in _GREY16_MODES:  # 16-bit grey: keep the high byte
        grey = np.asarray(image, dtype=np.uint32) >> 8
        image = Image.fromarray(grey.astype(np.uint8))
    icc = image.info.get("icc_profile")
    if image.mode in ("P", "PA", "LA", "La", "RGBa") or image.has_transparency_data:
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "RGBA", "CMYK"):
        image = image.convert("RGB")
    if icc and image.mode in ("RGB", "RGBA", "CMYK"):
        image = _to_srgb(image, icc)
    if image.mode != "RGBA":
        return image.convert("RGB") if image.mode != "RGB" else image
    if image.getchannel("A").getextrema() == (255, 255):
        return image.convert("RGB")  # an opaque alpha band only costs bytes
    return image


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """`image` converted from its embedded profile to sRGB; as is if the profile is
    unusable (as browsers do)."""
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    rgb = image.convert("RGB") if alpha is not None else image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(rgb, source, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image
    assert converted is not None  # profileToProfile returns None only with inPlace=True
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _render(base: Image.Image, cut: Cut) -> Image.Image:
    size = (cut.width, cut.height)
    if cut.square:  # ImageOps.fit: the centred square, then scaled (alpha premultiplied)
        return ImageOps.fit(base, size, Image.Resampling.LANCZOS)
    if base.size == size:
        return base
    return base.resize(size, Image.Resampling.LANCZOS)


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image
    flat = Image.new("RGB", image.size, tuple(int(c) for c in WHITE))
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def _encode(image: Image.Image, fmt: Format) -> bytes:
    name, args = _SAVE_ARGS[fmt]
    if fmt == Format.JPEG:
        image = _flatten(image)
    out = io.BytesIO()
    image.save(out, name, **args)  # no exif=, icc_profile=, xmp=: nothing is carried over
    return out.getvalue()


def _placeholder(base: Image.Image) -> str:
    small = base.copy()
    small.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.BILINEAR)
    small = _flatten(small)
    return blurhash_of_rgb(small.tobytes(), small.width, small.height)
