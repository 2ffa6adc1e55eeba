"""Named photo filters, applied server-side before the ladder is cut (seed 000: "Filter =
Colour LUT + Adjustments + Blending").

A filter is data (`Filter`), applied in this order to 8-bit sRGB values:

1. tone curves: one per channel, control points interpolated linearly into a 256-entry
   look-up table, applied with libvips `maplut` (one table read per pixel and band);
2. adjustments, in floating point: contrast (around mid-grey 128), saturation (against the
   Rec. 601 luma: 0 is black and white), warmth (added to red, taken from blue) and
   brightness (added to every channel), all in 0..255 units;
3. blending: a radial vignette, a darkening mask that is 0 at the centre and `vignette` at
   the corners;

then rounded and clipped to 0..255. Alpha passes through untouched.

The images under tests/transformer/fixtures/filters/ pin what each filter does: changing a
filter means regenerating them (python -m tests.transformer.images
--write-filter-references), a reviewed change.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np
import pyvips

from transformer.errors import Rejected

Curve = tuple[tuple[int, int], ...]  # (input, output) control points, 0..255, input rising
IDENTITY: Final[Curve] = ((0, 0), (255, 255))
_LUMA: Final = (0.299, 0.587, 0.114)  # Rec. 601 weights of R, G, B


@dataclass(frozen=True, slots=True)
class Filter:
    """The parameters of one filter (see the module docstring for the order and units)."""

    red: Curve = IDENTITY
    green: Curve = IDENTITY
    blue: Curve = IDENTITY
    contrast: float = 1.0  # 1 = unchanged; the slope around 128
    saturation: float = 1.0  # 1 = unchanged, 0 = grey
    warmth: float = 0.0  # + red, - blue, in 0..255 units
    brightness: float = 0.0  # + every channel, in 0..255 units
    vignette: float = 0.0  # 0..1: the fraction of brightness taken at the corners

    def __post_init__(self) -> None:
        for curve in (self.red, self.green, self.blue):
            xs = [x for x, _ in curve]
            if xs[0] != 0 or xs[-1] != 255 or any(a >= b for a, b in itertools.pairwise(xs)):
                raise ValueError("a curve's inputs must rise strictly from 0 to 255")
            if any(not 0 <= y <= 255 for _, y in curve):
                raise ValueError("a curve's outputs must be within 0..255")
        if not 0.0 <= self.vignette <= 1.0:
            raise ValueError("vignette must be within 0..1")


_MOON_CURVE: Final[Curve] = ((0, 16), (64, 60), (192, 200), (255, 255))

FILTERS: Final[Mapping[str, Filter]] = MappingProxyType(
    {
        # Bright and punchy: cool lifted shadows, more contrast and colour.
        "clarendon": Filter(
            red=((0, 0), (128, 124), (255, 255)),
            blue=((0, 28), (128, 140), (255, 255)),
            contrast=1.2,
            saturation=1.35,
        ),
        # Washed out and faded: lifted blacks, dimmed whites, softer contrast, muted colour.
        "gingham": Filter(
            red=((0, 42), (255, 242)),
            green=((0, 40), (255, 240)),
            blue=((0, 44), (255, 236)),
            contrast=0.9,
            saturation=0.75,
            warmth=4.0,
        ),
        # Warm and saturated: reds lifted in the mid-tones.
        "juno": Filter(
            red=((0, 8), (128, 140), (255, 255)),
            contrast=1.1,
            saturation=1.25,
            warmth=12.0,
        ),
        # Bright and airy: greens lifted, blues held back, a little desaturated.
        "lark": Filter(
            green=((0, 10), (128, 142), (255, 255)),
            blue=((0, 0), (128, 120), (255, 240)),
            saturation=0.9,
            brightness=12.0,
        ),
        # Black and white with deep contrast and a vignette.
        "moon": Filter(
            red=_MOON_CURVE,
            green=_MOON_CURVE,
            blue=_MOON_CURVE,
            contrast=1.25,
            saturation=0.0,
            vignette=0.35,
        ),
    }
)


def filter_ids() -> tuple[str, ...]:
    """The known filter ids, sorted."""
    return tuple(sorted(FILTERS))


def get_filter(filter_id: str) -> Filter:
    """The filter of `filter_id`; raises Rejected("unknown_filter") for an unknown id."""
    f = FILTERS.get(filter_id)
    if f is None:
        raise Rejected(
            "unknown_filter",
            f"There is no filter {filter_id[:40]!r}; the filters are {', '.join(filter_ids())}.",
        )
    return f


def _lut(f: Filter) -> pyvips.Image:
    """The three curves as one 256x1 three-band uchar image (band i maps band i)."""
    x = np.arange(256)
    bands = [
        np.interp(x, [p[0] for p in curve], [p[1] for p in curve])
        for curve in (f.red, f.green, f.blue)
    ]
    table = np.clip(np.rint(np.stack(bands, axis=-1)), 0, 255).astype(np.uint8)
    return pyvips.Image.new_from_memory(table.tobytes(), 256, 1, 3, "uchar")


def apply_filter(image: pyvips.Image, filter_id: str) -> pyvips.Image:
    """`image` with the filter `filter_id` applied: 8-bit sRGB, 3 bands (4 if `image` has
    alpha, which is kept as is), same size. The input should be 8-bit sRGB (the ladder's
    base); anything else is converted first. Raises Rejected for an unknown id."""
    f = get_filter(filter_id)
    if image.interpretation != "srgb" or image.format != "uchar" or image.bands < 3:
        image = image.colourspace("srgb").cast("uchar")
    alpha = image[3] if image.bands >= 4 else None
    rgb = image[0:3].maplut(_lut(f)).cast("float")
    if f.contrast != 1.0:
        rgb = (rgb - 128.0) * f.contrast + 128.0
    if f.saturation != 1.0:
        luma = rgb[0] * _LUMA[0] + rgb[1] * _LUMA[1] + rgb[2] * _LUMA[2]
        rgb = luma + (rgb - luma) * f.saturation
    if f.warmth or f.brightness:
        shift = [f.brightness + f.warmth, f.brightness, f.brightness - f.warmth]
        rgb = rgb.linear([1.0, 1.0, 1.0], shift)
    if f.vignette:
        # Normalised squared distance from the centre: 0 there, 1 in the corners.
        xy = pyvips.Image.xyz(rgb.width, rgb.height)
        cx, cy = (rgb.width - 1) / 2 or 1.0, (rgb.height - 1) / 2 or 1.0
        distance = ((xy[0] - cx) ** 2 / cx**2 + (xy[1] - cy) ** 2 / cy**2) / 2
        rgb = rgb * (1.0 - distance * f.vignette)
    out = rgb.rint().cast("uchar")  # cast clips to 0..255
    if alpha is not None:
        out = out.bandjoin(alpha)
    return out.copy(interpretation="srgb")
