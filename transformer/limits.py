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
    # Frames per second (ffprobe's average rate) and frames in the video stream: decoding
    # costs per frame, and the ladder decodes every source frame whatever rate it writes.
    video_frame_rate_max: float = 60.0
    video_frames_max: int = 5400  # 90 s at 60 fps
    # The container check (container.py, bmff.py) does bounded work whatever the bytes
    # claim: boxes, chunks or segments read in one file; how deep ISO-BMFF boxes nest; the
    # entries of one HEIF item table (items, extents, references); the entries of one sample
    # table of one MP4/MOV track (chunk offsets, sample sizes, sample-to-chunk runs).
    container_parts_max: int = 65_536
    container_depth_max: int = 16
    heif_entries_max: int = 16_384
    mp4_table_entries_max: int = 500_000

    def __post_init__(self) -> None:
        if not 0 < self.image_side_px_min <= self.image_side_px_max:
            raise ValueError("image_side_px_min must be within 1..image_side_px_max")
        if not 0 < self.video_side_px_min <= self.video_side_px_max:
            raise ValueError("video_side_px_min must be within 1..video_side_px_max")
        positive = (
            "image_bytes_max",
            "image_pixels_max",
            "video_bytes_max",
            "video_frames_max",
            "container_parts_max",
            "container_depth_max",
            "heif_entries_max",
            "mp4_table_entries_max",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("video_duration_s_max", "video_frame_rate_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        # Otherwise not even one second at the highest rate allowed would pass.
        if self.video_frames_max < self.video_frame_rate_max:
            raise ValueError("video_frames_max must be at least video_frame_rate_max")
        # A HEIF file is at least ftyp, meta and four boxes in it; a PNG is IHDR, IDAT, IEND.
        if self.container_parts_max < 8:
            raise ValueError("container_parts_max must be at least 8")
        # At least moov/trak/mdia/minf/stbl/stco, the deepest boxes the check needs; at most
        # what the reader's recursion affords.
        if not 6 <= self.container_depth_max <= 64:
            raise ValueError("container_depth_max must be within 6..64")
