from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from f4.erasure import (
    DATA_BLOCKS,
    EC_TYPES,
    FRAGMENT_HEADER_BYTES,
    HEADER_LENGTHS_CACHED,
    PAD_FINE_BYTES_MAX,
    STRIPE_BLOCKS,
    Codec,
    padded_length,
)
from f4.errors import StripeUnrecoverable


def _stripe(rng: random.Random, length: int, codec: Codec) -> list[bytes]:
    rows = [rng.randbytes(length) for _ in range(DATA_BLOCKS)]
    return rows + codec.parity(rows)


@pytest.mark.parametrize("ec_type", EC_TYPES)
def test_fragments_are_header_plus_data_rows(ec_type: str) -> None:
    codec = Codec(ec_type)
    rng = random.Random(1)
    rows = [rng.randbytes(1000) for _ in range(DATA_BLOCKS)]
    fragments = codec._driver.encode(b"".join(rows))
    assert len(fragments) == STRIPE_BLOCKS
    for i in range(DATA_BLOCKS):
        assert bytes(fragments[i][FRAGMENT_HEADER_BYTES:]) == rows[i]
    assert [bytes(f[FRAGMENT_HEADER_BYTES:]) for f in fragments[DATA_BLOCKS:]] == codec.parity(rows)


@pytest.mark.parametrize("ec_type", EC_TYPES)
def test_every_four_loss_combination_decodes_a_sub_range(ec_type: str) -> None:
    """All 1001 ways to lose 4 of 14 blocks, decoding an inner range of a stripe encoded
    whole: the zero-derived headers are right for any range."""
    codec = Codec(ec_type)
    stripe = _stripe(random.Random(2), 4096, codec)
    start, end = 1024, 1536
    ranges = [row[start:end] for row in stripe]
    combos = list(itertools.combinations(range(STRIPE_BLOCKS), 4))
    assert len(combos) == 1001
    for lost in combos:
        pieces = {i: r for i, r in enumerate(ranges) if i not in lost}
        out = codec.reconstruct(pieces, list(reversed(lost)))
        assert {i: out[i] for i in lost} == {i: ranges[i] for i in lost}, lost


def test_reconstruct_needs_ten_pieces() -> None:
    codec = Codec()
    stripe = _stripe(random.Random(3), 64, codec)
    with pytest.raises(StripeUnrecoverable):
        codec.reconstruct({i: stripe[i] for i in range(9)}, [13])


def test_parity_rows_must_match() -> None:
    with pytest.raises(ValueError):
        Codec().parity([b"ab"] * 9 + [b"abc"])
    with pytest.raises(ValueError):
        Codec("jerasure_rs_vand")


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(0, 40),
    length=st.integers(1, 300_000),
    lost=st.lists(st.integers(0, STRIPE_BLOCKS - 1), min_size=1, max_size=4, unique=True),
)
def test_a_range_of_any_length_decodes_padded_to_a_few_lengths(
    start: int, length: int, lost: list[int]
) -> None:
    """Decoding pads a range with zeros to padded_length (the headers of few lengths stay
    cached): the rows come back exact, for any length, any start and any loss."""
    codec = _CODECS[0]
    rng = random.Random(length)
    size = start * 16 + length
    stripe = _stripe(rng, size, codec)
    ranges = [row[start * 16 : size] for row in stripe]
    pieces = {i: r for i, r in enumerate(ranges) if i not in lost}
    out = codec.reconstruct(pieces, lost)
    assert {i: out[i] for i in lost} == {i: ranges[i] for i in lost}


_CODECS = [Codec()]


def test_padded_lengths_are_few_and_close() -> None:
    lengths = range(1, 64 << 20, 997)
    padded = {padded_length(n) for n in lengths}
    assert len(padded) <= HEADER_LENGTHS_CACHED
    for n in (*lengths, PAD_FINE_BYTES_MAX, PAD_FINE_BYTES_MAX + 1, 1 << 20, (1 << 20) + 1):
        p = padded_length(n)
        assert n <= p
        assert p - n < 4096 if n <= PAD_FINE_BYTES_MAX else p <= n * 1.125


def test_the_allocator_is_tuned_once_for_pyeclib() -> None:
    """Codec() keeps PyECLib's per-call buffers on glibc's heap (mallopt took on this
    glibc system); asking again changes nothing."""
    from f4.erasure import tune_allocator

    Codec()
    assert tune_allocator() is True
    assert tune_allocator.cache_info().hits >= 1
