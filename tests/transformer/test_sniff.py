"""Formats from magic bytes: real files of every kind we meet, the ISO-BMFF brand rules
(AVIF is never HEIC, QuickTime is MOV), and no exception for any byte string."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.photo import Format
from tests.transformer import images
from transformer.sniff import ACCEPTED_IMAGE_FORMATS, ACCEPTED_VIDEO_FORMATS, SNIFF_BYTES, sniff


def ftyp(major: bytes, *compatible: bytes, size: int | None = None) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    box = struct.pack(">I", 8 + len(body) if size is None else size) + b"ftyp" + body
    return box + b"\0\0\0\x08free"


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (images.jpeg(96, 72), Format.JPEG),
        (images.cmyk_jpeg(96, 72), Format.JPEG),
        (images.png(96, 72), Format.PNG),
        (images.png16(96, 72), Format.PNG),
        (images.webp(96, 72), Format.WEBP),
        (images.heic(96, 72), Format.HEIC),
        (images.gif(), Format.GIF),
        (images.avif(), Format.AVIF),
        (ftyp(b"heic", b"mif1", b"heic"), Format.HEIC),
        (ftyp(b"mif1", b"heix", b"miaf"), Format.HEIC),
        (ftyp(b"msf1", b"hevc"), Format.HEIC),
        (ftyp(b"mif1", b"avif", b"miaf"), Format.AVIF),  # AVIF lists mif1 too
        (ftyp(b"avis", b"msf1", b"avis"), Format.AVIF),
        (ftyp(b"heic", b"avif"), Format.AVIF),  # an AVIF brand anywhere wins
        (ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), Format.MP4),
        (ftyp(b"mp42", b"mp42", b"isom"), Format.MP4),
        (ftyp(b"M4V ", b"M4V ", b"M4A ", b"mp42", b"isom"), Format.MP4),
        (ftyp(b"iso6", b"dash"), Format.MP4),
        (ftyp(b"qt  ", b"qt  "), Format.MOV),
        (ftyp(b"XXXX", b"qt  "), Format.MOV),
        (ftyp(b"XXXX", b"YYYY"), Format.UNKNOWN),
        (ftyp(b"heic", size=0), Format.HEIC),  # size 0: "to the end of the file"
        (b"\0\0\0\x08wide\0\0\0\x10mdat", Format.MOV),
        (b"\0\0\x01\x00moov\0\0\0\x6cmvhd", Format.MOV),
        (b"\0\0\0\x10free" + bytes(8), Format.MOV),
        (images.bmp(), Format.UNKNOWN),
        (b"RIFF\x24\0\0\0WAVEfmt ", Format.UNKNOWN),
        (b"%PDF-1.7\n", Format.UNKNOWN),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", Format.UNKNOWN),
        (b"hello, world\n", Format.UNKNOWN),
        (b"\xff\xd8", Format.UNKNOWN),  # too short to be a JPEG
        (b"", Format.UNKNOWN),
    ],
)
def test_format_from_magic_bytes(head: bytes, fmt: Format) -> None:
    assert sniff(head[:SNIFF_BYTES]) == fmt


def test_accepted_formats() -> None:
    assert ACCEPTED_IMAGE_FORMATS == (Format.JPEG, Format.PNG, Format.HEIC, Format.WEBP)
    assert ACCEPTED_VIDEO_FORMATS == (Format.MP4, Format.MOV)


def test_brands_are_read_up_to_sniff_bytes() -> None:
    filler = [b"zz%02d" % i for i in range(100)]
    assert sniff(ftyp(b"XXXX", *filler, b"avif")[:SNIFF_BYTES]) == Format.AVIF


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([b"", b"\0\0\0\x18ftyp", b"RIFF", b"\xff\xd8\xff"]))
def test_any_bytes_give_a_format_and_never_raise(tail: bytes, prefix: bytes) -> None:
    assert isinstance(sniff(prefix + tail), Format)
