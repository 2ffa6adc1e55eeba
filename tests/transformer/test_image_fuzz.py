"""Mutated image files (bit flips, truncation, spliced garbage, rewritten header fields):
validation and then the ladder either succeed or raise Rejected, never anything else (an
unexpected exception would be a 5xx at the API, or a job retried for nothing) and never
hang. Derandomized: the same 150 examples on every run, ~15 s."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.transformer import images
from transformer.errors import Rejected
from transformer.image_probe import probe_image
from transformer.ladder import make_photo_ladder, plan_cuts
from transformer.limits import MediaLimits

LIMITS = MediaLimits()
# Small valid files (96x72: above the 64 px minimum) of every accepted format.
SEEDS = (
    images.jpeg(96, 72, orientation=6, gps=True),
    images.png(96, 72),
    images.png_alpha(96, 72),
    images.webp(96, 72),
    images.heic(96, 72),
)
HEADER_BYTES = 160  # where the headers and the size fields of all four formats live
PROBE_CODES = {"file_too_large", "unsupported_format", "too_many_pixels", "image_too_small",
               "image_too_large", "corrupt_file"}  # fmt: skip


MAGIC_BYTES = 12  # header mutations start after the magic bytes, to get further in
# The mutations, repeated by weight: mostly ones that pass the sniffing and reach a decoder.
KINDS = ("flip", "flip", "flip", "truncate", "splice", "header", "header", "field", "size",
         "size", "size", "magic")  # fmt: skip


def dimension_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of the width and height fields of a seed: rewriting them
    makes the bombs, slivers and lies about sizes that the checks must catch."""
    if data.startswith(b"\x89PNG"):
        return [(16, ">I"), (20, ">I")]  # IHDR
    if data[12:16] == b"VP8X":
        return [(24, "<I"), (27, "<I")]  # canvas width - 1, height - 1 (24 bits, LE)
    sof = data.find(b"\xff\xc0")
    if data.startswith(b"\xff\xd8") and sof > 0:
        return [(sof + 5, ">H"), (sof + 7, ">H")]  # SOF0 height, width
    ispe = data.find(b"ispe")
    if ispe > 0:
        return [(ispe + 8, ">I"), (ispe + 12, ">I")]  # HEIF image spatial extents
    return []


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(KINDS))
        # Past the magic bytes (Hypothesis favours small integers: they would be hit often).
        where = draw(st.integers(min(MAGIC_BYTES, len(data) - 1), len(data) - 1))
        if kind == "magic":
            data[where % MAGIC_BYTES % len(data)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[where:]
        elif kind == "splice":
            data[where:where] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "header":
            at = MAGIC_BYTES + where % max(1, min(HEADER_BYTES, len(data)) - MAGIC_BYTES)
            if at < len(data):
                data[at] = draw(st.integers(0, 255))
        elif kind == "size":
            fields = dimension_fields(bytes(data))
            if fields:
                at, fmt = draw(st.sampled_from(fields))
                value = draw(st.sampled_from((0, 1, 63, 64, 16385, 30000, 65535)))
                packed = struct.pack(fmt, value)[: 3 if fmt == "<I" else None]
                data[at : at + len(packed)] = packed
        else:  # a 16- or 32-bit big-endian field (sizes, lengths, dimensions) rewritten
            wide = draw(st.booleans())
            value = draw(st.sampled_from((0, 1, 63, 64, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)))
            packed = struct.pack(">I", value) if wide else struct.pack(">H", value & 0xFFFF)
            at = MAGIC_BYTES + where % max(1, min(HEADER_BYTES, len(data)) - MAGIC_BYTES - 4)
            data[at : at + len(packed)] = packed
        if not data:
            break
    return bytes(data)


def test_the_seeds_are_valid() -> None:
    for seed in SEEDS:
        assert len(make_photo_ladder(seed, limits=LIMITS).variants) == 24


@pytest.mark.timeout(90)
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_images_are_accepted_or_rejected_and_nothing_else(data: bytes) -> None:
    try:
        info = probe_image(data, LIMITS)
    except Rejected as e:
        assert e.code in PROBE_CODES and e.status in (413, 415, 422)
        event(f"probe: {e.code}")  # --hypothesis-show-statistics shows the mix
        return
    try:
        ladder = make_photo_ladder(data, limits=LIMITS)
    except Rejected as e:
        assert e.code == "corrupt_file"  # passed validation: only a deeper decode may fail
        event("ladder: corrupt_file")
        return
    event("ladder: made")
    assert (ladder.width, ladder.height) == (info.width, info.height)
    planned = {(c.rendition, c.width, c.height) for c in plan_cuts(info.width, info.height)}
    assert {(e.rendition, e.width, e.height) for e in ladder.variants} == planned
    assert len(ladder.variants) == 24 and all(e.data for e in ladder.variants)
