"""Content sniffing, image validation and the photo ladder: every accepted format, every
rejection path, the ladder's 24 outputs (renditions, formats, sizes, no metadata)."""

from __future__ import annotations

import io

import pytest
import pyvips
from PIL import Image

from common.photo import Format
from tests.transformer import images
from transformer import variants
from transformer.errors import Rejected
from transformer.image_probe import probe_image
from transformer.ladder import LADDER_FORMATS, make_photo_ladder
from transformer.ladder_pillow import make_photo_ladder_pillow
from transformer.limits import MediaLimits
from transformer.sniff import sniff

LIMITS = MediaLimits()


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (images.jpeg_oriented_with_gps(), Format.JPEG),
        (images.png_rgba(), Format.PNG),
        (images.webp(), Format.WEBP),
        (images.heic(), Format.HEIC),
        (images.encode(images.scene(64, 64), "GIF"), Format.GIF),
        (images.encode(images.scene(64, 64), "AVIF"), Format.AVIF),
        (b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom", Format.MP4),
        (b"\0\0\0\x14ftypqt  \0\0\0\0qt  ", Format.MOV),
        (b"\0\0\0\x08wide\0\0\0\x08mdat", Format.MOV),
        (b"BM\x36\0\0\0", Format.UNKNOWN),
        (b"", Format.UNKNOWN),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", Format.UNKNOWN),
    ],
)
def test_sniff_by_magic_bytes(data: bytes, fmt: Format) -> None:
    assert sniff(data[:512]) == fmt


@pytest.mark.parametrize(
    ("make", "fmt", "size"),
    [
        (images.jpeg_oriented_with_gps, Format.JPEG, (480, 640)),  # orientation 6: portrait
        (images.png_rgba, Format.PNG, (300, 200)),
        (images.png_16bit, Format.PNG, (200, 150)),
        (images.jpeg_cmyk, Format.JPEG, (240, 160)),
        (images.webp, Format.WEBP, (320, 240)),
        (images.heic, Format.HEIC, (320, 240)),
    ],
)
def test_every_accepted_format_probes_and_makes_a_full_ladder(
    make: object, fmt: Format, size: tuple[int, int]
) -> None:
    data = make()  # type: ignore[operator]
    info = probe_image(data, LIMITS)
    assert (info.fmt, (info.width, info.height)) == (fmt, size)
    ladder = make_photo_ladder(data, limits=LIMITS)
    # blurhash 4x3: size flag 1 + max AC 1 + DC 4 + 11 AC components x 2 characters
    assert (ladder.width, ladder.height) == size and len(ladder.placeholder) == 28
    seen = {(v.rendition, v.fmt) for v in ladder.variants}
    renditions = [*variants.PHOTO_SIZES, *(variants.square(s) for s in variants.PHOTO_SIZES)]
    assert seen == {(r, f) for r in renditions for f in LADDER_FORMATS}
    for v in ladder.variants:
        assert sniff(v.data[:512]) == v.fmt
        decoded = pyvips.Image.new_from_buffer(v.data, "")
        assert (decoded.width, decoded.height) == (v.width, v.height)
        assert not [f for f in decoded.get_fields() if f.startswith(("exif", "xmp", "icc"))]
        assert b"Exif" not in v.data and b"fixture camera" not in v.data
        if v.rendition in variants.PHOTO_SIZES:  # aspect kept, never upscaled
            w, h = size
            assert max(v.width, v.height) == min(v.rendition, max(w, h))
            assert abs(v.width / v.height - w / h) < 0.02
        else:
            side = min(v.rendition - variants.SQUARE_BASE, *size)
            assert (v.width, v.height) == (side, side)
        if v.fmt == Format.JPEG:
            assert not Image.open(io.BytesIO(v.data)).getexif()


def test_a_large_photo_is_cut_at_every_size() -> None:
    data = images.encode(images.scene(2400, 1600), "JPEG", quality=85)
    ladder = make_photo_ladder(data, limits=LIMITS)
    sizes = {(v.rendition, v.width, v.height) for v in ladder.variants}
    assert (1080, 1080, 720) in sizes and (150, 150, 100) in sizes
    assert (variants.square(1080), 1080, 1080) in sizes
    pillow = make_photo_ladder_pillow(data, limits=LIMITS)
    assert {(v.rendition, v.fmt, v.width, v.height) for v in pillow.variants} == {
        (v.rendition, v.fmt, v.width, v.height) for v in ladder.variants
    }
    assert all(b"Exif" not in v.data for v in pillow.variants)


def test_the_same_input_gives_the_same_ladder() -> None:
    data = images.jpeg_oriented_with_gps()
    a = make_photo_ladder(data, limits=LIMITS)
    b = make_photo_ladder(data, limits=LIMITS)
    assert [(v.rendition, v.fmt, v.data) for v in a.variants] == [
        (v.rendition, v.fmt, v.data) for v in b.variants
    ]


def _code(data: bytes, limits: MediaLimits = LIMITS) -> tuple[str, int]:
    with pytest.raises(Rejected) as got:
        probe_image(data, limits)
    assert got.value.message
    return got.value.code, got.value.status


def test_every_rejection_path() -> None:
    jpeg = images.jpeg_oriented_with_gps()
    png = images.png_rgba()
    webp = images.webp()
    heic = images.heic()
    assert _code(jpeg, MediaLimits(image_bytes_max=1000)) == ("file_too_large", 413)
    for data in (b"", b"plain text", images.encode(images.scene(64, 64), "GIF"),
                 images.encode(images.scene(64, 64), "AVIF"), b"BM" + b"\0" * 100):  # fmt: skip
        assert _code(data) == ("unsupported_format", 415)
    for data in (jpeg[: len(jpeg) // 2], png[: len(png) // 2], webp[: len(webp) // 2],
                 heic[: len(heic) // 2], jpeg[:200] + b"\0" * 3000):  # fmt: skip
        assert _code(data) == ("corrupt_file", 422)
    assert _code(images.png_claiming(30000, 30000)) == ("too_many_pixels", 422)
    assert _code(images.encode(images.scene(40, 300), "PNG")) == ("image_too_small", 422)
    wide = images.encode(images.scene(1000, 100), "PNG")
    assert _code(wide, MediaLimits(image_side_px_max=500)) == ("image_too_large", 422)
