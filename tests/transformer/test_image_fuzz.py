"""Mutated image files: validation and the ladder either succeed or raise Rejected, never
anything else (an unexpected exception would be a 5xx at the API)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.transformer import images
from transformer.errors import Rejected
from transformer.image_probe import probe_image
from transformer.ladder import make_photo_ladder
from transformer.limits import MediaLimits

LIMITS = MediaLimits()
SEEDS = (
    images.encode(images.scene(96, 72), "JPEG", quality=80),
    images.encode(images.scene(96, 72), "PNG"),
    images.webp(96, 72),
    images.heic(96, 72),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(("flip", "truncate", "splice", "header")))
        where = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[max(1, where) :]
        elif kind == "splice":
            data[where:where] = draw(st.binary(min_size=1, max_size=64))
        else:  # the first bytes hold the headers and sizes
            data[min(where, 40) % len(data)] = draw(st.integers(0, 255))
    return bytes(data)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated())
def test_mutated_images_are_accepted_or_rejected_never_crash(data: bytes) -> None:
    try:
        probe_image(data, LIMITS)
    except Rejected as e:
        assert e.status in (413, 415, 422) and e.code
        return
    try:
        ladder = make_photo_ladder(data, limits=LIMITS)
    except Rejected as e:
        assert e.code == "corrupt_file"
        return
    assert len(ladder.variants) == 24
