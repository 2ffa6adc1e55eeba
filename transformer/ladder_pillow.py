"""The same photo ladder made with Pillow (and pillow-heif for HEIC): the comparison of
`pinhole bench media` (ladders per second, pyvips against Pillow, in one run). Same
renditions, sizes, formats and qualities, metadata stripped; filters are not offered here."""

from __future__ import annotations

import io
from typing import Final

from PIL import Image, ImageOps

from common.photo import Format
from transformer import variants
from transformer.ladder import (
    AVIF_QUALITY,
    BASE_PX,
    JPEG_QUALITY,
    LADDER_FORMATS,
    WEBP_QUALITY,
    Encoded,
    PhotoLadder,
    aspect_box,
    square_side,
)
from transformer.limits import MediaLimits

AVIF_SPEED: Final = 10  # libavif speed 0..10: the fastest, like the libvips ladder's effort 0
_SAVE_ARGS: Final = {
    Format.JPEG: ("JPEG", {"quality": JPEG_QUALITY, "optimize": True, "progressive": True}),
    Format.WEBP: ("WEBP", {"quality": WEBP_QUALITY, "method": 2}),
    Format.AVIF: ("AVIF", {"quality": AVIF_QUALITY, "speed": AVIF_SPEED}),
}


def _encode(image: Image.Image, fmt: Format) -> bytes:
    name, args = _SAVE_ARGS[fmt]
    if fmt == Format.JPEG and image.mode != "RGB":
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, name, **args)  # no exif=, no icc_profile=: nothing is carried over
    return out.getvalue()


def make_photo_ladder_pillow(data: bytes, *, limits: MediaLimits) -> PhotoLadder:
    import pillow_heif

    pillow_heif.register_heif_opener()
    with Image.open(io.BytesIO(data)) as source:
        short = min(source.size)
        source.draft("RGB", (source.size[0] * BASE_PX // short, source.size[1] * BASE_PX // short))
        oriented = ImageOps.exif_transpose(source)
        width, height = oriented.size
        base = oriented.convert("RGBA" if "A" in oriented.mode else "RGB")
    if min(base.size) > BASE_PX:
        scale = BASE_PX / min(base.size)
        base = base.resize(
            (round(base.width * scale), round(base.height * scale)), Image.Resampling.LANCZOS
        )
    out: list[Encoded] = []
    for size in variants.PHOTO_SIZES:
        aspect = base.resize(aspect_box(base.width, base.height, size), Image.Resampling.LANCZOS)
        side = square_side(base.width, base.height, size)
        square = ImageOps.fit(base, (side, side), Image.Resampling.LANCZOS)
        for rendition, image in ((size, aspect), (variants.square(size), square)):
            for fmt in LADDER_FORMATS:
                out.append(Encoded(rendition, fmt, _encode(image, fmt), image.width, image.height))
    return PhotoLadder(width, height, "", tuple(out))
