"""The photo ladder (libvips) and its Pillow twin: 24 variants of every accepted format with
the right renditions, formats (sniffed and decoded), sizes (aspect, square, no upscaling),
orientation and colours, and no metadata left (EXIF, GPS, XMP, ICC)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
import pyvips
from PIL import Image

from common.photo import Format
from tests.transformer import images
from transformer import variants
from transformer.errors import Rejected
from transformer.ladder import (
    LADDER_FORMATS,
    Encoded,
    PhotoLadder,
    aspect_box,
    make_photo_ladder,
    plan_cuts,
)
from transformer.ladder_pillow import make_photo_ladder_pillow
from transformer.limits import MediaLimits
from transformer.placeholder import HASH_CHARS, blurhash_of
from transformer.sniff import sniff

LIMITS = MediaLimits()
RENDITIONS = [r for s in variants.PHOTO_SIZES for r in (s, variants.square(s))]
Make = Callable[..., PhotoLadder]
CASE_IDS = [
    *("jpeg", "png", "png-alpha", "png-16bit", "webp"),
    *("heic", "heic-alpha", "cmyk", "p3", "bad-icc"),
]


@pytest.fixture(scope="module")
def camera() -> PhotoLadder:
    """The ladder of a 12 MP camera JPEG: orientation 6, GPS, XMP (made once: ~0.3 s)."""
    return make_photo_ladder(images.camera_jpeg(), limits=LIMITS)


def decode(e: Encoded) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(e.data, "", fail_on="error")


def pixel(e: Encoded, x: int, y: int) -> tuple[float, ...]:
    return tuple(decode(e).getpoint(x, y))


def find(ladder: PhotoLadder, rendition: int, fmt: Format) -> Encoded:
    (found,) = [e for e in ladder.variants if (e.rendition, e.fmt) == (rendition, fmt)]
    return found


def check_ladder(ladder: PhotoLadder, width: int, height: int) -> None:
    """24 variants in (rendition, format) order with the planned sizes, each decoding (by
    libvips and Pillow) to its format and size, none carrying metadata."""
    assert (ladder.width, ladder.height) == (width, height)
    assert [(e.rendition, e.fmt) for e in ladder.variants] == [
        (r, f) for r in RENDITIONS for f in LADDER_FORMATS
    ]
    planned = {c.rendition: (c.width, c.height) for c in plan_cuts(width, height)}
    for e in ladder.variants:
        assert (e.width, e.height) == planned[e.rendition]
        assert sniff(e.data[:512]) == e.fmt
        image = decode(e)
        assert (image.width, image.height) == (e.width, e.height)
        assert image.avg() > 0  # decoded every pixel without error
        assert not [f for f in image.get_fields() if f.startswith(("exif", "xmp", "icc", "iptc"))]
        # No EXIF block at all (so no GPS IFD either), no XMP packet, no camera make.
        for secret in (b"Exif", b"http://ns.adobe.com/xap", images.CAMERA_MAKE.encode()):
            assert secret not in e.data
        with Image.open(io.BytesIO(e.data)) as pil:
            assert pil.size == (e.width, e.height)
            assert (
                pil.format == {Format.JPEG: "JPEG", Format.WEBP: "WEBP", Format.AVIF: "AVIF"}[e.fmt]
            )
            assert not pil.getexif() and not pil.getexif().get_ifd(0x8825)  # 0x8825: GPS
            assert not {"icc_profile", "xmp", "exif"} & set(pil.info)


def test_the_camera_photo_ladder(camera: PhotoLadder) -> None:
    check_ladder(camera, 3000, 4000)  # orientation 6: the 4000x3000 JPEG is portrait
    sizes = {e.rendition: (e.width, e.height) for e in camera.variants}
    assert sizes == {
        1080: (810, 1080), 640: (480, 640), 320: (240, 320), 150: (112, 150),
        11080: (1080, 1080), 10640: (640, 640), 10320: (320, 320), 10150: (150, 150),
    }  # fmt: skip
    assert len(camera.placeholder) == HASH_CHARS


def test_orientation_6_turns_the_stored_top_left_to_the_top_right(camera: PhotoLadder) -> None:
    # Orientation 6 = rotate 90 degrees clockwise to display: the stored top-left (the red
    # marker) shows top-right, the stored bottom-left (green) top-left, the stored top-right
    # (magenta) bottom-right.
    for fmt in LADDER_FORMATS:
        e = find(camera, 1080, fmt)
        red = pixel(e, e.width - 10, 10)
        assert red[0] > 200 and red[1] < 60 and red[2] < 60, (fmt, red)
        green = pixel(e, 10, 10)
        assert green[1] > 180 and green[0] < 100, (fmt, green)
        magenta = pixel(e, e.width - 10, e.height - 10)
        assert magenta[0] > 170 and magenta[2] > 130 and magenta[1] < 80, (fmt, magenta)


def test_every_variant_is_smaller_than_its_jpeg_or_close(camera: PhotoLadder) -> None:
    # The point of AVIF and WebP is fewer bytes: over the whole ladder they must win.
    total = {f: sum(len(e.data) for e in camera.variants if e.fmt == f) for f in LADDER_FORMATS}
    assert total[Format.AVIF] < total[Format.JPEG] and total[Format.WEBP] < total[Format.JPEG]


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (images.jpeg(1600, 1200, orientation=3, gps=True, xmp=True), (1600, 1200)),
        (images.png(1300, 1100), (1300, 1100)),
        (images.png_alpha(1200, 1500), (1200, 1500)),
        (images.png16(400, 300), (400, 300)),
        (images.webp(1280, 720), (1280, 720)),
        (images.heic(1200, 900), (1200, 900)),
        (images.heic(300, 200, alpha=True), (300, 200)),
        (images.cmyk_jpeg(800, 600), (800, 600)),
        (images.p3_jpeg(640, 480), (640, 480)),
        (images.with_bad_icc(images.jpeg(300, 200)), (300, 200)),  # the profile is ignored
    ],
    ids=CASE_IDS,
)
@pytest.mark.parametrize("make", [make_photo_ladder, make_photo_ladder_pillow], ids=["vips", "pil"])
def test_every_accepted_format_makes_a_full_ladder(
    make: Make, data: bytes, size: tuple[int, int]
) -> None:
    check_ladder(make(data, limits=LIMITS), *size)


def test_a_small_photo_is_never_upscaled() -> None:
    ladder = make_photo_ladder(images.png(500, 300), limits=LIMITS)
    check_ladder(ladder, 500, 300)
    sizes = {e.rendition: (e.width, e.height) for e in ladder.variants}
    assert sizes == {
        1080: (500, 300), 640: (500, 300), 320: (320, 192), 150: (150, 90),
        11080: (300, 300), 10640: (300, 300), 10320: (300, 300), 10150: (150, 150),
    }  # fmt: skip


def test_aspect_box_keeps_the_aspect_and_never_upscales() -> None:
    assert aspect_box(4000, 3000, 1080) == (1080, 810)
    assert aspect_box(3000, 4000, 150) == (112, 150)
    assert aspect_box(4000, 2999, 1080) == (1080, 810)  # rounded from the source, not a base
    assert aspect_box(100, 16384, 150) == (1, 150)
    assert aspect_box(500, 300, 640) == (500, 300)


def test_colours_are_converted_to_srgb() -> None:
    # A Display P3 photo holds other numbers for the same colour: decoded right (its
    # embedded profile imported), it is sRGB 200,80,40 again.
    p3 = images.p3_jpeg(640, 480)
    raw = pyvips.Image.new_from_buffer(p3, "").getpoint(320, 240)
    assert abs(raw[0] - 200) > 12  # so the check below can fail
    for data in (p3, images.p3_heic(640, 480)):
        for make in (make_photo_ladder, make_photo_ladder_pillow):
            ladder = make(data, limits=LIMITS)
            for fmt in LADDER_FORMATS:
                got = pixel(find(ladder, 320, fmt), 160, 120)
                assert np.allclose(got, (200, 80, 40), atol=9), (make, fmt, got)
    # CMYK becomes 3-band sRGB; the red marker stays red.
    cmyk = make_photo_ladder(images.cmyk_jpeg(800, 600), limits=LIMITS)
    e = find(cmyk, 320, Format.JPEG)
    assert decode(e).bands == 3
    red = pixel(e, 5, 5)
    assert red[0] > 150 and red[1] < 90 and red[2] < 90, red


def test_alpha_is_kept_in_webp_and_avif_and_flattened_onto_white_in_jpeg() -> None:
    ladder = make_photo_ladder(images.png_alpha(1200, 800), limits=LIMITS)
    for fmt in (Format.WEBP, Format.AVIF):
        image = decode(find(ladder, 640, fmt))
        assert image.hasalpha() and image[3].getpoint(639, 200)[0] < 10
        assert image[3].getpoint(10, 200)[0] > 245
    jpeg = find(ladder, 640, Format.JPEG)
    assert decode(jpeg).bands == 3
    assert min(pixel(jpeg, 639, 200)) > 240  # transparent: white, not black
    # an alpha band that is opaque everywhere is dropped
    opaque = images.encode(
        np.dstack([images.scene(200, 100), np.full((100, 200), 255, np.uint8)]), "PNG"
    )
    assert not decode(find(make_photo_ladder(opaque, limits=LIMITS), 150, Format.WEBP)).hasalpha()


def test_the_same_input_gives_byte_identical_output() -> None:
    data = images.jpeg(1200, 900, orientation=6)
    first = make_photo_ladder(data, limits=LIMITS)
    again = make_photo_ladder(data, limits=LIMITS)
    assert first == again


def test_a_filter_is_applied_before_the_ladder() -> None:
    data = images.jpeg(800, 600)
    plain = make_photo_ladder(data, limits=LIMITS)
    moon = make_photo_ladder(data, limits=LIMITS, filter_id="moon")
    check_ladder(moon, 800, 600)
    for fmt in LADDER_FORMATS:
        lab = decode(find(moon, 320, fmt)).colourspace("lab")
        assert abs(lab[1].avg()) < 1.5 and abs(lab[2].avg()) < 1.5  # black and white
        colour = decode(find(plain, 320, fmt)).colourspace("lab")
        assert abs(colour[1].avg()) > 5 or abs(colour[2].avg()) > 5
    assert moon.placeholder != plain.placeholder


def test_an_unknown_filter_is_rejected_before_decoding() -> None:
    with pytest.raises(Rejected) as got:
        make_photo_ladder(b"not even an image", limits=LIMITS, filter_id="sepia-deluxe")
    assert (got.value.code, got.value.status) == ("unknown_filter", 422)


@pytest.mark.parametrize("make", [make_photo_ladder, make_photo_ladder_pillow], ids=["vips", "pil"])
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (images.jpeg(640, 480)[:-300], "corrupt_file"),
        (images.png(300, 200)[:-100], "corrupt_file"),
        (images.heic(320, 240)[:-100], "corrupt_file"),
        (images.bomb_png(30000), "too_many_pixels"),
        (images.gif(), "unsupported_format"),
        (images.png(40, 40), "image_too_small"),
    ],
    ids=["jpeg-truncated", "png-truncated", "heic-truncated", "bomb", "gif", "tiny"],
)
def test_the_ladder_checks_its_input_too(make: Make, data: bytes, code: str) -> None:
    with pytest.raises(Rejected) as got:
        make(data, limits=LIMITS)
    assert got.value.code == code


def test_pillow_makes_the_same_ladder(camera: PhotoLadder) -> None:
    pillow = make_photo_ladder_pillow(images.camera_jpeg(), limits=LIMITS)
    check_ladder(pillow, 3000, 4000)

    def shape(ladder: PhotoLadder) -> list[tuple[int, Format, int, int]]:
        return [(e.rendition, e.fmt, e.width, e.height) for e in ladder.variants]

    assert shape(pillow) == shape(camera)
    assert len(pillow.placeholder) == HASH_CHARS
    # same picture: the red marker top-right, and similar pixels overall
    a, b = decode(find(camera, 320, Format.JPEG)), decode(find(pillow, 320, Format.JPEG))
    assert (a - b).abs().avg() < 4


def test_placeholder_is_a_4x3_blurhash_that_tells_colours_apart() -> None:
    import blurhash

    red = blurhash_of(pyvips.Image.black(64, 48).new_from_image([220, 20, 20]).cast("uchar"))
    blue = blurhash_of(pyvips.Image.black(64, 48).new_from_image([20, 20, 220]).cast("uchar"))
    assert len(red) == len(blue) == HASH_CHARS == 28
    assert red != blue
    assert blurhash.is_valid_blurhash(red)
    # size flag: (x - 1) + (y - 1) * 9 in base 83
    assert red[0] == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[3 + 2 * 9]
    decoded = np.asarray(blurhash.decode(red, 8, 6))
    assert decoded[..., 0].mean() > 150 and decoded[..., 2].mean() < 80
