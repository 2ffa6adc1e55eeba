"""Named limits on what an upload may be (config [media]; docs/api/media.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MediaLimits:
    image_bytes_max: int = 30 * 1024 * 1024
    image_pixels_max: int = 50_000_000  # from the header, checked before any decoding
    image_side_px_min: int = 64
    image_side_px_max: int = 16384
    video_bytes_max: int = 256 * 1024 * 1024
    video_duration_s_max: float = 90.0
    video_side_px_min: int = 64
    video_side_px_max: int = 4096

    def __post_init__(self) -> None:
        if not 0 < self.image_side_px_min <= self.image_side_px_max:
            raise ValueError("image_side_px_min must be within 1..image_side_px_max")
        if not 0 < self.video_side_px_min <= self.video_side_px_max:
            raise ValueError("video_side_px_min must be within 1..video_side_px_max")
        for name in ("image_bytes_max", "image_pixels_max", "video_bytes_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.video_duration_s_max <= 0:
            raise ValueError("video_duration_s_max must be positive")
