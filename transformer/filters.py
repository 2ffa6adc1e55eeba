"""Named photo filters, applied server-side before the ladder is cut (seed 000: "Filter =
Colour LUT + Adjustments + Blending").

Each filter is data: per-channel tone curves (control points, interpolated into one 256-entry
look-up table per channel, applied with libvips `maplut`), then adjustments (contrast around
mid-grey, saturation against the luminance, warmth, brightness), then a radial vignette.
The images under tests/transformer/fixtures/filters/ pin what each filter does: changing a
filter means regenerating them, a reviewed change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pyvips

from transformer.errors import Rejected

Curve = tuple[tuple[int, int], ...]
IDENTITY: Final[Curve] = ((0, 0), (255, 255))


@dataclass(frozen=True, slots=True)
class Filter:
    red: Curve = IDENTITY
    green: Curve = IDENTITY
    blue: Curve = IDENTITY
    contrast: float = 1.0  # around 128
    saturation: float = 1.0  # 0 = black and white
    warmth: float = 0.0  # added to red, taken from blue
    brightness: float = 0.0  # added to every channel
    vignette: float = 0.0  # darkening at the corners, 0..1
    tags: tuple[str, ...] = field(default=())


FILTERS: Final[Mapping[str, Filter]] = {
    # Bright, cool shadows, punchy colour.
    "clarendon": Filter(
        blue=((0, 28), (128, 140), (255, 255)),
        red=((0, 0), (128, 124), (255, 255)),
        contrast=1.2,
        saturation=1.35,
    ),
    # Washed out and faded: lifted blacks, softer contrast, muted colour.
    "gingham": Filter(
        red=((0, 42), (255, 242)),
        green=((0, 40), (255, 240)),
        blue=((0, 44), (255, 236)),
        contrast=0.9,
        saturation=0.75,
        warmth=4.0,
    ),
    # Warm and saturated.
    "juno": Filter(
        red=((0, 8), (128, 140), (255, 255)),
        contrast=1.1,
        saturation=1.25,
        warmth=12.0,
    ),
    # Bright and airy, blues held back.
    "lark": Filter(
        green=((0, 10), (128, 142), (255, 255)),
        blue=((0, 0), (128, 120), (255, 240)),
        brightness=12.0,
        saturation=0.9,
    ),
    # Black and white with deep contrast and a vignette.
    "moon": Filter(
        red=((0, 16), (64, 60), (192, 200), (255, 255)),
        green=((0, 16), (64, 60), (192, 200), (255, 255)),
        blue=((0, 16), (64, 60), (192, 200), (255, 255)),
        contrast=1.25,
        saturation=0.0,
        vignette=0.35,
    ),
}


def filter_ids() -> tuple[str, ...]:
    return tuple(sorted(FILTERS))


def _lut(f: Filter) -> Any:
    """The three curves as one 256x1 three-band uchar image."""
    x = np.arange(256)
    bands = [
        np.interp(x, [p[0] for p in curve], [p[1] for p in curve])
        for curve in (f.red, f.green, f.blue)
    ]
    table = np.clip(np.rint(np.stack(bands, axis=-1)), 0, 255).astype(np.uint8)
    return pyvips.Image.new_from_memory(table.tobytes(), 256, 1, 3, "uchar")


def apply_filter(image: Any, filter_id: str) -> Any:
    """`image` (sRGB, 8 bit, 3 or 4 bands) with the filter applied; alpha is kept as is.
    Raises Rejected for an unknown id."""
    f = FILTERS.get(filter_id)
    if f is None:
        raise Rejected(
            "unknown_filter", f"unknown filter {filter_id!r}; known: {', '.join(filter_ids())}"
        )
    alpha = image[3] if image.bands == 4 else None
    rgb = image[0:3] if image.bands >= 3 else image.colourspace("srgb")[0:3]
    rgb = rgb.maplut(_lut(f)).cast("float")
    if f.contrast != 1.0:
        rgb = (rgb - 128) * f.contrast + 128
    if f.saturation != 1.0:
        luma = rgb[0] * 0.299 + rgb[1] * 0.587 + rgb[2] * 0.114
        rgb = luma + (rgb - luma) * f.saturation
    if f.warmth or f.brightness:
        shift = [f.brightness + f.warmth, f.brightness, f.brightness - f.warmth]
        rgb = rgb.linear([1, 1, 1], shift)
    if f.vignette:
        xy = pyvips.Image.xyz(rgb.width, rgb.height)
        cx, cy = rgb.width / 2, rgb.height / 2
        distance = ((xy[0] - cx) ** 2 / cx**2 + (xy[1] - cy) ** 2 / cy**2) / 2
        rgb = rgb * (1 - distance * f.vignette)
    out = rgb.cast("uchar")  # casting clips to 0..255
    if alpha is not None:
        out = out.bandjoin(alpha)
    return out.copy(interpretation="srgb")
