"""Each filter pinned by a perceptual check against its committed reference image, and each
one clearly different from no filter (a filter that does nothing fails).

The references are tests/transformer/fixtures/filters/<id>.png, made from input.png there by
`python -m tests.transformer.images --write-filter-references`. Changing one is a reviewed
change: it means the filter looks different now.
"""

from __future__ import annotations

import pytest
import pyvips

from tests.transformer.images import FILTER_DIR, FILTER_INPUT_SIZE
from transformer.errors import Rejected
from transformer.filters import FILTERS, Filter, apply_filter, filter_ids

# Mean CIE76 colour difference (Lab units): about 1 is a just noticeable difference; the
# references are made by this code, so only library drift may move them, and barely.
SAME_DE_MAX = 1.0
CHANGED_DE_MIN = 5.0


def mean_de(a: pyvips.Image, b: pyvips.Image) -> float:
    return float(a.colourspace("lab").dE76(b.colourspace("lab")).avg())


@pytest.fixture(scope="module")
def source() -> pyvips.Image:
    image = pyvips.Image.new_from_file(str(FILTER_DIR / "input.png"))
    assert (image.width, image.height, image.bands) == (*FILTER_INPUT_SIZE, 3)
    return image


def test_there_are_at_least_five_named_filters() -> None:
    assert {"clarendon", "gingham", "juno", "lark", "moon"} <= set(filter_ids())
    assert list(filter_ids()) == sorted(FILTERS)


@pytest.mark.parametrize("filter_id", filter_ids())
def test_each_filter_matches_its_reference(source: pyvips.Image, filter_id: str) -> None:
    out = apply_filter(source, filter_id)
    reference = pyvips.Image.new_from_file(str(FILTER_DIR / f"{filter_id}.png"))
    assert (out.width, out.height, out.bands, out.format) == (96, 64, 3, "uchar")
    assert (reference.width, reference.height) == (out.width, out.height)
    assert mean_de(out, reference) <= SAME_DE_MAX
    assert mean_de(out, source) >= CHANGED_DE_MIN


def test_filters_differ_from_each_other(source: pyvips.Image) -> None:
    outs = {fid: apply_filter(source, fid) for fid in filter_ids()}
    for a in outs:
        for b in outs:
            if a < b:
                assert mean_de(outs[a], outs[b]) >= CHANGED_DE_MIN, (a, b)


def test_moon_is_black_and_white_with_a_vignette(source: pyvips.Image) -> None:
    lab = apply_filter(source, "moon").colourspace("lab")
    assert lab[1].abs().max() < 1.0 and lab[2].abs().max() < 1.0  # a and b: no colour
    flat = apply_filter((pyvips.Image.black(101, 101, bands=3) + 128).cast("uchar"), "moon")
    centre, corner = flat.getpoint(50, 50)[0], flat.getpoint(0, 0)[0]
    assert corner < centre - 20


def test_alpha_passes_through_and_values_clip(source: pyvips.Image) -> None:
    alpha = pyvips.Image.xyz(96, 64)[0].cast("uchar")
    out = apply_filter(source.bandjoin(alpha), "lark")
    assert out.bands == 4 and (out[3] - alpha).abs().max() == 0
    white = (pyvips.Image.black(8, 8, bands=3) + 255).cast("uchar")
    assert apply_filter(white, "lark").min() > 200  # brightened white clips, never wraps


def test_grey_and_16_bit_input_is_converted_first() -> None:
    grey = pyvips.Image.xyz(64, 64)[0].cast("uchar").copy(interpretation="b-w")
    out = apply_filter(grey, "juno")
    assert (out.bands, out.format, out.interpretation) == (3, "uchar", "srgb")


def test_an_unknown_filter_is_rejected() -> None:
    with pytest.raises(Rejected) as got:
        apply_filter(pyvips.Image.black(10, 10, bands=3), "sepia-deluxe")
    assert (got.value.code, got.value.status) == ("unknown_filter", 422)
    assert "moon" in got.value.message


def test_a_malformed_filter_cannot_be_defined() -> None:
    with pytest.raises(ValueError):
        Filter(red=((10, 0), (255, 255)))  # does not start at 0
    with pytest.raises(ValueError):
        Filter(blue=((0, 0), (128, 300), (255, 255)))
    with pytest.raises(ValueError):
        Filter(vignette=1.5)
