"""Each filter pinned by a perceptual check against its committed reference, and each one
visibly different from no filter (a filter that does nothing fails)."""

from __future__ import annotations

import pytest
import pyvips

from tests.transformer.images import FILTER_DIR
from transformer.errors import Rejected
from transformer.filters import apply_filter, filter_ids

# Mean CIE76 colour difference: under ~1 is invisible, several units is a clear change.
SAME_DE_MAX = 1.0
CHANGED_DE_MIN = 4.0


def _mean_de(a: pyvips.Image, b: pyvips.Image) -> float:
    return float(a.colourspace("lab").dE76(b.colourspace("lab")).avg())


def test_there_are_five_named_filters() -> None:
    assert set(filter_ids()) >= {"clarendon", "gingham", "juno", "lark", "moon"}


@pytest.mark.parametrize("name", filter_ids())
def test_each_filter_matches_its_reference(name: str) -> None:
    source = pyvips.Image.new_from_file(str(FILTER_DIR / "input.png"))
    out = apply_filter(source, name)
    reference = pyvips.Image.new_from_file(str(FILTER_DIR / f"{name}.png"))
    assert (out.width, out.height, out.bands) == (reference.width, reference.height, 3)
    assert _mean_de(out, reference) <= SAME_DE_MAX
    assert _mean_de(out, source) >= CHANGED_DE_MIN


def test_moon_is_black_and_white_and_vignetted() -> None:
    source = pyvips.Image.new_from_file(str(FILTER_DIR / "input.png"))
    out = apply_filter(source, "moon").colourspace("lab")
    assert abs(out[1].avg()) < 1.0 and abs(out[2].avg()) < 1.0  # a and b: no colour
    flat = apply_filter(pyvips.Image.black(100, 100, bands=3) + 128, "moon")
    centre, corner = flat.getpoint(50, 50)[0], flat.getpoint(0, 0)[0]
    assert corner < centre - 10


def test_an_unknown_filter_is_rejected() -> None:
    with pytest.raises(Rejected) as got:
        apply_filter(pyvips.Image.black(10, 10, bands=3), "sepia-deluxe")
    assert got.value.code == "unknown_filter"
