"""Image validation: the facts of every accepted format, and every rejection path with its
code and status, in the documented order (a bomb is refused from its header, undecoded)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from common.photo import Format
from tests.transformer import images
from transformer.errors import Rejected
from transformer.image_probe import ImageInfo, probe_image, probe_image_file, read_header
from transformer.limits import MediaLimits

LIMITS = MediaLimits()


def rejected(data: bytes, limits: MediaLimits = LIMITS) -> Rejected:
    with pytest.raises(Rejected) as got:
        probe_image(data, limits)
    error = got.value
    assert error.message and "\n" not in error.message and len(error.message) < 200
    return error


@pytest.mark.parametrize(
    ("data", "fmt", "size", "orientation", "alpha"),
    [
        (images.jpeg(640, 480), Format.JPEG, (640, 480), 1, False),
        (images.jpeg(640, 480, orientation=6, gps=True), Format.JPEG, (480, 640), 6, False),
        (images.jpeg(640, 480, orientation=3), Format.JPEG, (640, 480), 3, False),
        (images.jpeg(640, 480, orientation=8), Format.JPEG, (480, 640), 8, False),
        (images.cmyk_jpeg(240, 160), Format.JPEG, (240, 160), 1, False),
        (images.p3_jpeg(200, 100), Format.JPEG, (200, 100), 1, False),
        (images.png(300, 200), Format.PNG, (300, 200), 1, False),
        (images.png_alpha(300, 200), Format.PNG, (300, 200), 1, True),
        (images.png16(200, 150), Format.PNG, (200, 150), 1, False),
        (images.webp(320, 240), Format.WEBP, (320, 240), 1, False),
        (images.heic(320, 240), Format.HEIC, (320, 240), 1, False),
        (images.heic(320, 240, alpha=True), Format.HEIC, (320, 240), 1, True),
    ],
)
def test_accepted_images(
    data: bytes, fmt: Format, size: tuple[int, int], orientation: int, alpha: bool
) -> None:
    info = probe_image(data, LIMITS)
    assert info == ImageInfo(fmt, *size, orientation, alpha, len(data))


def test_a_12_megapixel_camera_photo_is_portrait_as_displayed() -> None:
    data = images.camera_jpeg()
    info = probe_image(data, LIMITS)
    assert (info.fmt, info.width, info.height, info.orientation) == (Format.JPEG, 3000, 4000, 6)


def test_too_large_in_bytes_is_413_before_anything_else() -> None:
    data = images.jpeg(640, 480)
    error = rejected(data, MediaLimits(image_bytes_max=len(data) - 1))
    assert (error.code, error.status) == ("file_too_large", 413)
    assert probe_image(data, MediaLimits(image_bytes_max=len(data))).size_bytes == len(data)
    # size first: even bytes that are no image at all get 413
    error = rejected(b"x" * 2000, MediaLimits(image_bytes_max=1000))
    assert error.code == "file_too_large"


@pytest.mark.parametrize(
    "data",
    [
        images.gif(),
        images.avif(),
        images.bmp(),
        b"just some text, named photo.jpg by its sender\n",
        b"",
        b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom",
    ],
    ids=["gif", "avif", "bmp", "text", "empty", "mp4"],
)
def test_unsupported_formats_are_415_and_name_the_accepted_ones(data: bytes) -> None:
    error = rejected(data)
    assert (error.code, error.status) == ("unsupported_format", 415)
    assert all(name in error.message for name in ("JPEG", "PNG", "HEIC", "WebP"))


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = images.bomb_png(30000)  # valid, 900 MP, ~100 KB
    assert len(bomb) < 200_000
    started = time.perf_counter()
    error = rejected(bomb)
    assert time.perf_counter() - started < 1.0  # decoding it would take minutes and 900 MB
    assert (error.code, error.status) == ("too_many_pixels", 422)
    assert "30000x30000" in error.message
    # a header claim alone is enough: the pixel check comes before any decoding
    assert rejected(images.png_claiming(30000, 30000)).code == "too_many_pixels"
    assert rejected(images.png(300, 200), MediaLimits(image_pixels_max=59_999)).code == (
        "too_many_pixels"
    )


def test_sides_too_short_or_too_long() -> None:
    assert rejected(images.png(40, 300)).code == "image_too_small"
    assert rejected(images.png(300, 63)).code == "image_too_small"
    assert probe_image(images.png(64, 64), LIMITS).width == 64
    wide = images.png(20000, 64)  # 1.3 MP: under the pixel limit, over the side limit
    error = rejected(wide)
    assert (error.code, error.status) == ("image_too_large", 422)
    assert rejected(images.png(300, 200), MediaLimits(image_side_px_max=299)).code == (
        "image_too_large"
    )
    # sides are checked from the header, before the decode check
    assert rejected(images.png_claiming(20000, 100)).code == "image_too_large"


def _truncations(data: bytes, *, tail: int = 64) -> list[bytes]:
    """The file cut in half, and cut `tail` bytes short (into the last pixel data)."""
    return [data[: len(data) // 2], data[: len(data) - tail]]


@pytest.mark.parametrize(
    "data",
    [
        *_truncations(images.jpeg(640, 480)),
        *_truncations(images.camera_jpeg(), tail=2),  # no more than the end-of-image marker
        *_truncations(images.png(300, 200)),
        *_truncations(images.webp(320, 240)),
        *_truncations(images.heic(320, 240)),
        images.jpeg(640, 480)[:300] + bytes(3000),  # the entropy-coded data replaced
        images.png(300, 200)[:100],  # a header and a little data
        b"\xff\xd8\xff\xe0" + bytes(20),
        b"\x89PNG\r\n\x1a\n",
        b"RIFF\x10\0\0\0WEBPVP8 ",
        b"\0\0\0\x18ftypheic\0\0\0\0mif1heic",
    ],
)
def test_truncated_and_corrupt_files_are_corrupt_file(data: bytes) -> None:
    error = rejected(data)
    assert (error.code, error.status) == ("corrupt_file", 422)


def test_read_header_checks_everything_but_the_decode() -> None:
    # Every chunk whole, every CRC right, the compressed pixels garbage: only a decode finds it.
    garbage = images.png_with_garbage_pixels(300, 200)
    assert read_header(garbage, LIMITS).width == 300
    assert rejected(garbage).code == "corrupt_file"
    with pytest.raises(Rejected) as got:
        read_header(images.bomb_png(30000), LIMITS)
    assert got.value.code == "too_many_pixels"
    # the container's structure is no decode: a truncated file fails here already
    with pytest.raises(Rejected) as got:
        read_header(images.jpeg(640, 480)[:-200], LIMITS)
    assert got.value.code == "corrupt_file"


FILE_CASES = {
    "jpeg": images.jpeg(640, 480, orientation=6, gps=True),
    "png": images.png_alpha(300, 200),
    "webp": images.webp(320, 240),
    "heic": images.heic(320, 240),
    "truncated": images.heic(320, 240)[:-64],
    "garbage-pixels": images.png_with_garbage_pixels(300, 200),
    "bomb": images.bomb_png(30000),
    "gif": images.gif(),
    "tiny": images.png(40, 300),
}


@pytest.mark.parametrize("data", FILE_CASES.values(), ids=FILE_CASES.keys())
def test_a_file_gets_the_answer_its_bytes_get(data: bytes, tmp_path: Path) -> None:
    # A name libvips would read load options from, were it given one to parse.
    path = tmp_path / "upload.jpg[shrink=2]"
    path.write_bytes(data)
    try:
        expected: ImageInfo | tuple[str, int] = probe_image(data, LIMITS)
    except Rejected as e:
        expected = (e.code, e.status)
    try:
        got: ImageInfo | tuple[str, int] = probe_image_file(path, LIMITS)
    except Rejected as e:
        got = (e.code, e.status)
    assert got == expected


def test_a_file_over_the_size_limit_is_413_unread(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(images.jpeg(640, 480))
    with pytest.raises(Rejected) as got:
        probe_image_file(path, MediaLimits(image_bytes_max=1000))
    assert (got.value.code, got.value.status) == ("file_too_large", 413)
    with pytest.raises(FileNotFoundError):
        probe_image_file(tmp_path / "gone", LIMITS)
