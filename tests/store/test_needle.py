from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import needle
from store.errors import CorruptNeedle

FIXTURES = Path(__file__).parent / "fixtures"

keys = st.integers(0, needle.KEY_MAX)
alts = st.integers(0, needle.ALT_KEY_MAX)
cookies = st.integers(0, needle.COOKIE_MAX)
datas = st.binary(max_size=3000)


def test_layout_constants_match_the_documented_sizes() -> None:
    assert needle.HEADER_BYTES == 32
    assert needle.FOOTER_BYTES == 16
    assert needle.NEEDLE_ALIGNMENT_BYTES == 32
    assert needle.needle_length(0) == 64
    assert needle.needle_length(16) == 64
    assert needle.needle_length(17) == 96
    assert needle.needle_length(20 * 1024) == 20 * 1024 + 64


def test_golden_bytes_of_format_v1() -> None:
    """A committed needle: any change to the byte layout shows up here."""
    raw = needle.encode(
        key=0x0123456789ABCDEF, alt_key=7, cookie=0xFEEDFACECAFEBEEF, data=b"pinhole"
    )
    assert raw.hex() == (FIXTURES / "needle_v1.hex").read_text().strip()


@given(key=keys, alt=alts, cookie=cookies, data=datas)
def test_encode_verify_round_trip(key: int, alt: int, cookie: int, data: bytes) -> None:
    raw = needle.encode(key=key, alt_key=alt, cookie=cookie, data=data)
    assert len(raw) == needle.needle_length(len(data))
    assert len(raw) % needle.NEEDLE_ALIGNMENT_BYTES == 0
    h = needle.verify(raw)
    assert (h.key, h.alt_key, h.cookie, h.data_size, h.flags) == (key, alt, cookie, len(data), 0)
    assert bytes(needle.data_view(raw, h)) == data


@given(data=st.binary(min_size=1, max_size=200), where=st.floats(0, 1), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(data: bytes, where: float, bit: int) -> None:
    raw = bytearray(needle.encode(key=5, alt_key=1, cookie=9, data=data))
    covered = needle.HEADER_BYTES + len(data) + needle.FOOTER_BYTES
    pos = min(int(where * covered), covered - 1)
    if pos == needle.FLAGS_OFFSET and bit == 0:
        pos += 1  # the DELETED bit is the one bit left out on purpose (tested below)
    raw[pos] ^= 1 << bit
    with pytest.raises(CorruptNeedle):
        needle.verify(raw)


def test_deleted_flag_set_in_place_keeps_the_checksum_valid() -> None:
    raw = bytearray(needle.encode(key=5, alt_key=1, cookie=9, data=b"x" * 100))
    raw[needle.FLAGS_OFFSET] |= needle.FLAG_DELETED
    h = needle.verify(raw)
    assert h.deleted and not h.tombstone


def test_tombstone_flag_is_covered_by_the_checksum() -> None:
    raw = bytearray(needle.encode(key=5, alt_key=1, cookie=9, data=b"abc"))
    raw[needle.FLAGS_OFFSET] |= needle.FLAG_TOMBSTONE
    with pytest.raises(CorruptNeedle, match="checksum"):
        needle.verify(raw)


def test_truncated_needle_is_corrupt() -> None:
    raw = needle.encode(key=1, alt_key=0, cookie=2, data=b"y" * 500)
    with pytest.raises(CorruptNeedle):
        needle.verify(raw[:300])
    with pytest.raises(CorruptNeedle):
        needle.verify(raw[:10])


def test_unknown_flags_and_bad_magic_are_rejected() -> None:
    raw = bytearray(needle.encode(key=1, alt_key=0, cookie=2, data=b"z"))
    bad = bytearray(raw)
    bad[needle.FLAGS_OFFSET] = 0x80
    with pytest.raises(CorruptNeedle, match="flags"):
        needle.parse_header(bad)
    bad = bytearray(raw)
    bad[0:4] = b"XXXX"
    with pytest.raises(CorruptNeedle, match="magic"):
        needle.parse_header(bad)


@pytest.mark.parametrize(
    ("field", "value"),
    [("key", -1), ("key", 2**64), ("alt_key", 2**32), ("cookie", -5)],
)
def test_out_of_range_fields_are_refused(field: str, value: int) -> None:
    args = {"key": 1, "alt_key": 1, "cookie": 1}
    args[field] = value
    with pytest.raises(ValueError):
        needle.encode(data=b"d", **args)
