"""Synthetic test photos, made in code (deterministic: the same bytes on every run), and the
filter reference images.

Every builder returns the bytes of an encoded file. The scene is a smooth photo-like
picture (gradients, soft discs, a little grain) with a pure red block in its stored top-left
corner, so that a test can tell where the top-left went after orientation.

Regenerate the committed filter references (tests/transformer/fixtures/filters/) with

    .venv/bin/python -m tests.transformer.images --write-filter-references

A changed reference image is a reviewed change: it means a filter now looks different.
"""

from __future__ import annotations

import argparse
import functools
import io
import struct
import zlib
from pathlib import Path
from typing import Final

import numpy as np
import pillow_heif
import pyvips
from PIL import Image

FIXTURES: Final = Path(__file__).parent / "fixtures"
FILTER_FIXTURES: Final = FIXTURES / "filters"
FILTER_DIR: Final = FILTER_FIXTURES
FILTER_INPUT: Final = FILTER_FIXTURES / "input.png"
MARKER: Final = (255, 0, 0)  # the red block in the stored top-left corner
MARKER_FRACTION: Final = 8  # the block is 1/8 of each side

XMP_PACKET: Final = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>Secret Person</dc:creator>'
    b"</rdf:Description></rdf:RDF></x:xmpmeta>"
)
GPS_LATITUDE: Final = (52.0, 31.0, 12.5)
CAMERA_MAKE: Final = "fixture camera"  # in every EXIF block written here: grep outputs for it


def scene(width: int, height: int) -> np.ndarray:
    """A (height, width, 3) uint8 photo-like picture with the red marker top-left."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    r = 60 + 150 * u
    g = 40 + 170 * v
    b = 170 - 120 * u * v
    for cx, cy, rad, colour in ((0.3, 0.6, 0.2, (230, 190, 160)), (0.7, 0.35, 0.15, (40, 90, 200))):
        d = np.hypot(u - cx, (v - cy) * height / width) / rad
        w = np.clip(1.2 - d, 0.0, 1.0)
        r, g, b = (c * (1 - w) + k * w for c, k in zip((r, g, b), colour, strict=True))
    grain = np.random.default_rng(7).normal(0.0, 3.0, size=(height, width)).astype(np.float32)
    rgb = np.stack([r + grain, g + grain, b + grain], axis=-1)
    pixels: np.ndarray = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    pixels[: height // MARKER_FRACTION, : width // MARKER_FRACTION] = MARKER
    return pixels


def _save(image: Image.Image, fmt: str, **args: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **args)
    return out.getvalue()


def encode(pixels: np.ndarray, fmt: str, **args: object) -> bytes:
    """`pixels` ((h, w, 3 or 4) uint8) encoded by Pillow as `fmt` ("PNG", "GIF", ...)."""
    return _save(Image.fromarray(pixels), fmt, **args)


def exif_bytes(*, orientation: int = 1, gps: bool = False) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = CAMERA_MAKE
    if gps:
        gps_ifd = exif.get_ifd(0x8825)
        gps_ifd[1] = "N"  # GPSLatitudeRef
        gps_ifd[2] = GPS_LATITUDE  # GPSLatitude
        gps_ifd[3] = "E"
        gps_ifd[4] = (13.0, 24.0, 36.0)
    return exif.tobytes()


@functools.cache
def jpeg(
    width: int,
    height: int,
    *,
    orientation: int = 1,
    gps: bool = False,
    xmp: bool = False,
    quality: int = 90,
) -> bytes:
    """A baseline JPEG of the scene, with EXIF (orientation, camera make, optionally a GPS
    IFD) and optionally an XMP packet."""
    args: dict[str, object] = {
        "quality": quality,
        "exif": exif_bytes(orientation=orientation, gps=gps),
    }
    if xmp:
        args["xmp"] = XMP_PACKET
    return _save(Image.fromarray(scene(width, height)), "JPEG", **args)


def camera_jpeg() -> bytes:
    """A 12 MP camera photo: 4000x3000 stored, EXIF orientation 6 (displayed 3000x4000,
    portrait), a GPS IFD and XMP."""
    return jpeg(4000, 3000, orientation=6, gps=True, xmp=True)


@functools.cache
def progressive_jpeg(width: int, height: int) -> bytes:
    """A progressive JPEG (several scans, tables between them), as web tools save them."""
    return _save(Image.fromarray(scene(width, height)), "JPEG", quality=85, progressive=True)


@functools.cache
def restart_jpeg(width: int, height: int) -> bytes:
    """A JPEG with a restart marker after every row of blocks, as cameras write them."""
    args: dict[str, object] = {"quality": 85, "restart_marker_rows": 1, "exif": exif_bytes()}
    return _save(Image.fromarray(scene(width, height)), "JPEG", **args)


@functools.cache
def png(width: int, height: int) -> bytes:
    return _save(Image.fromarray(scene(width, height)), "PNG", compress_level=1)


@functools.cache
def png_alpha(width: int, height: int) -> bytes:
    """RGBA: opaque on the left half, fading to fully transparent on the right."""
    rgb = scene(width, height)
    alpha = np.clip(np.linspace(510, -255, width), 0, 255).astype(np.uint8)
    rgba = np.dstack([rgb, np.broadcast_to(alpha, (height, width))])
    return _save(Image.fromarray(rgba, "RGBA"), "PNG", compress_level=1)


@functools.cache
def png16(width: int, height: int) -> bytes:
    """A 16-bit-per-channel RGB PNG (written by libvips: Pillow cannot write one)."""
    wide = scene(width, height).astype(np.uint16) * 257
    image = pyvips.Image.new_from_array(wide).copy(interpretation="rgb16")
    return bytes(image.pngsave_buffer(bitdepth=16, compression=1))


@functools.cache
def webp(width: int = 320, height: int = 240) -> bytes:
    return _save(
        Image.fromarray(scene(width, height)), "WEBP", quality=85, exif=exif_bytes(gps=True)
    )


@functools.cache
def webp_lossless(width: int = 320, height: int = 240) -> bytes:
    """A lossless WebP (a VP8L chunk, the simple format)."""
    return _save(Image.fromarray(scene(width, height)), "WEBP", lossless=True)


@functools.cache
def webp_alpha(width: int = 320, height: int = 240) -> bytes:
    """A lossy WebP with alpha (VP8X, ALPH, VP8)."""
    rgb = scene(width, height)
    rgba = np.dstack([rgb, np.full((height, width), 128, np.uint8)])
    return _save(Image.fromarray(rgba, "RGBA"), "WEBP", quality=85)


@functools.cache
def heic(width: int = 320, height: int = 240, *, alpha: bool = False) -> bytes:
    """An HEIC (HEVC, by pillow-heif), with EXIF including GPS."""
    pixels = scene(width, height)
    if alpha:
        image = Image.fromarray(np.dstack([pixels, np.full(pixels.shape[:2], 128, np.uint8)]))
    else:
        image = Image.fromarray(pixels)
    heif = pillow_heif.from_pillow(image)
    out = io.BytesIO()
    heif.save(out, quality=80, exif=exif_bytes(gps=True))
    return out.getvalue()


@functools.cache
def cmyk_jpeg(width: int, height: int) -> bytes:
    """A CMYK JPEG without an embedded profile (Pillow's naive RGB -> CMYK)."""
    return _save(Image.fromarray(scene(width, height)).convert("CMYK"), "JPEG", quality=90)


@functools.cache
def p3_jpeg(width: int, height: int, rgb: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A flat sRGB colour `rgb` converted to Display P3 and saved with the P3 ICC profile
    embedded (an iPhone-like wide-gamut photo): decoded right, it shows `rgb` again."""
    srgb = pyvips.Image.black(width, height).new_from_image(list(rgb)).cast("uchar")
    p3 = srgb.copy(interpretation="srgb").icc_export(output_profile="p3")
    return bytes(p3.jpegsave_buffer(Q=95))


def with_bad_icc(jpeg_bytes: bytes) -> bytes:
    """`jpeg_bytes` with an APP2 ICC_PROFILE segment of garbage inserted after SOI."""
    payload = b"ICC_PROFILE\x00\x01\x01" + b"not a profile" * 20
    segment = b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg_bytes[:2] + segment + jpeg_bytes[2:]


@functools.cache
def p3_heic(width: int, height: int, rgb: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """p3_jpeg as an HEIC (how an iPhone stores a wide-gamut photo)."""
    srgb = pyvips.Image.black(width, height).new_from_image(list(rgb)).cast("uchar")
    p3 = srgb.copy(interpretation="srgb").icc_export(output_profile="p3")
    image = Image.fromarray(p3.numpy())
    out = io.BytesIO()
    pillow_heif.from_pillow(image).save(out, quality=90, icc_profile=p3.get("icc-profile-data"))
    return out.getvalue()


@functools.cache
def gif(width: int = 100, height: int = 80) -> bytes:
    return _save(Image.fromarray(scene(width, height)).convert("P"), "GIF")


@functools.cache
def bmp(width: int = 100, height: int = 80) -> bytes:
    return _save(Image.fromarray(scene(width, height)), "BMP")


@functools.cache
def avif(width: int = 100, height: int = 80) -> bytes:
    return _save(Image.fromarray(scene(width, height)), "AVIF", quality=60, speed=10)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a well-formed PNG, in order."""
    chunks = []
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_of(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG of these (type, data) chunks, each with its right CRC."""
    return PNG_SIGNATURE + b"".join(_png_chunk(kind, body) for kind, body in chunks)


@functools.cache
def png_with_garbage_pixels(width: int, height: int) -> bytes:
    """png(width, height) with the second half of its compressed pixel data replaced by
    garbage, every chunk whole and its CRC right: only a decoder can tell."""
    chunks = []
    for kind, body in png_chunks(png(width, height)):
        if kind == b"IDAT":
            half = len(body) // 2
            body = body[:half] + (bytes(range(256)) * (len(body) // 256 + 1))[: len(body) - half]
        chunks.append((kind, body))
    return png_of(chunks)


@functools.cache
def bomb_png(side: int = 30000) -> bytes:
    """A valid 1-bit grey PNG of side x side pixels (900 MP for 30000) that is about 100 KB
    on disk: a decompression bomb."""
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row * 1000) for _ in range(side // 1000))
    body += packer.compress(row * (side % 1000)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height 8-bit RGB pixels but whose data is a few
    bytes: what a bomb looks like to a header check, without the cost of building one."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(64))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


# Small defaults, by what they are (test_image_pipeline.py uses these names).


def jpeg_oriented_with_gps() -> bytes:
    """640x480 stored, EXIF orientation 6 (displayed 480x640), GPS and XMP."""
    return jpeg(640, 480, orientation=6, gps=True, xmp=True)


def png_rgba() -> bytes:
    return png_alpha(300, 200)


def png_16bit() -> bytes:
    return png16(200, 150)


def jpeg_cmyk() -> bytes:
    return cmyk_jpeg(240, 160)


# -- filter references ---------------------------------------------------------------------

FILTER_INPUT_SIZE: Final = (96, 64)


def filter_input() -> np.ndarray:
    """The filter test picture, 96x64: grey, red, green and blue ramps in the top half, skin
    tones and a sky-ish gradient in the bottom half."""
    width, height = FILTER_INPUT_SIZE
    ramp = np.linspace(0, 255, width)
    out = np.zeros((height, width, 3), np.float64)
    quarter = height // 8
    out[0:quarter] = ramp[None, :, None]  # grey
    for band in range(3):  # red, green, blue
        out[quarter * (band + 1) : quarter * (band + 2), :, band] = ramp[None, :]
    skins = np.array(
        [(255, 224, 196), (234, 192, 160), (198, 134, 96), (141, 85, 54), (80, 50, 35)]
    )
    half = height // 2
    for i, skin in enumerate(skins):
        left, right = i * width // len(skins), (i + 1) * width // len(skins)
        out[half : half + quarter * 2, left:right] = skin
    sky = np.linspace(0, 1, height - half - quarter * 2)[:, None, None]
    out[half + quarter * 2 :] = (1 - sky) * np.array([90, 150, 230]) + sky * np.array(
        [250, 210, 150]
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_filter_references() -> list[Path]:
    """Writes input.png and one <id>.png per filter; returns the paths written."""
    from transformer.filters import apply_filter, filter_ids

    FILTER_FIXTURES.mkdir(parents=True, exist_ok=True)
    written = [FILTER_INPUT]
    Image.fromarray(filter_input()).save(FILTER_INPUT)
    source = pyvips.Image.new_from_file(str(FILTER_INPUT))
    for fid in filter_ids():
        path = FILTER_FIXTURES / f"{fid}.png"
        apply_filter(source, fid).pngsave(str(path), keep=pyvips.enums.ForeignKeep.NONE)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--write-filter-references",
        action="store_true",
        help="rewrite tests/transformer/fixtures/filters/ (a reviewed change)",
    )
    args = parser.parse_args()
    if not args.write_filter_references:
        parser.error("nothing to do: pass --write-filter-references")
    for path in write_filter_references():
        print(path)


if __name__ == "__main__":
    main()
