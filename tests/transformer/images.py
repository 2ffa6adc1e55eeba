"""Image fixtures made in code (every accepted format, the awkward ones, hostile ones), and
the filter reference images: `python -m tests.transformer.images --write-filter-references`
regenerates tests/transformer/fixtures/filters/ (a changed reference is a reviewed change)."""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import pillow_heif
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
FILTER_DIR = FIXTURES / "filters"
GPS_IFD = 0x8825


def scene(width: int, height: int) -> Image.Image:
    """Gradients and blocks of colour (skin-ish, sky, foliage): what filters act on."""
    ramp = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (ramp, ramp.rotate(90).resize((width, height)), ramp.transpose(0)))
    for box, colour in (
        ((0.05, 0.1, 0.3, 0.5), (224, 172, 140)),
        ((0.4, 0.05, 0.95, 0.35), (110, 160, 230)),
        ((0.55, 0.55, 0.9, 0.95), (60, 140, 50)),
    ):
        x0, y0, x1, y1 = (int(v * s) for v, s in zip(box, (width, height) * 2, strict=True))
        image.paste(colour, (x0, y0, x1, y1))
    return image


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    if fmt == "HEIF":
        pillow_heif.register_heif_opener()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def jpeg_oriented_with_gps(width: int = 640, height: int = 480, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x0110] = "fixture camera"
    exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return encode(scene(width, height), "JPEG", quality=90, exif=exif)


def png_rgba(width: int = 300, height: int = 200) -> bytes:
    image = scene(width, height).convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize((width, height)))
    return encode(image, "PNG")


def png_16bit(width: int = 200, height: int = 150) -> bytes:
    return encode(Image.linear_gradient("L").resize((width, height)).convert("I;16"), "PNG")


def jpeg_cmyk(width: int = 240, height: int = 160) -> bytes:
    return encode(scene(width, height).convert("CMYK"), "JPEG", quality=90)


def webp(width: int = 320, height: int = 240) -> bytes:
    return encode(scene(width, height), "WEBP", quality=80)


def heic(width: int = 320, height: int = 240) -> bytes:
    return encode(scene(width, height), "HEIF", quality=70)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def filter_input() -> bytes:
    return encode(scene(96, 64), "PNG")


def write_filter_references() -> None:
    import pyvips

    from transformer.filters import apply_filter, filter_ids

    FILTER_DIR.mkdir(parents=True, exist_ok=True)
    (FILTER_DIR / "input.png").write_bytes(filter_input())
    source = pyvips.Image.new_from_buffer(filter_input(), "")
    for name in filter_ids():
        (FILTER_DIR / f"{name}.png").write_bytes(bytes(apply_filter(source, name).pngsave_buffer()))


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-filter-references"]:
        write_filter_references()
    else:
        sys.exit("usage: python -m tests.transformer.images --write-filter-references")
