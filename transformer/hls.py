"""The HLS ladder as data (pure functions, no tools run here): which rungs a video gets and
their frame sizes, the H.264 level each needs, bandwidths measured from segments, and the
playlists (RFC 8216).

The playlists are rendered by us, not taken from ffmpeg, because every segment becomes a
needle served at a photo URL that is known only once it is written. URIs are kept exactly
as given; root-relative photo URLs (`/p/{volume}/{key}/{cookie}/{rendition}.ts`) resolve
against the playlist's own URL at the router.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from transformer import variants


@dataclass(frozen=True, slots=True)
class Rung:
    """One rendition of the ladder. `height` is its label (one of variants.HLS_HEIGHTS: the
    short side, so a portrait rung labelled 720 is 720 wide); width x frame_height is its
    actual frame size in pixels. Bandwidths in bits/s, measured on the segments as written
    (MPEG-TS overhead included): peak as RFC 8216 defines it, and average. codecs is the
    RFC 6381 string of the CODECS attribute."""

    height: int
    width: int
    frame_height: int
    bandwidth_bps: int
    average_bandwidth_bps: int
    codecs: str
    segments: tuple[Path, ...]
    durations_s: tuple[float, ...]  # one per segment, from ffmpeg's #EXTINF


def _even(x: float, cap: int) -> int:
    """x rounded to an even number (4:2:0 chroma needs even sides), within 2..cap."""
    return max(2, min(2 * round(x / 2), cap - cap % 2))


def rung_sizes(width: int, height: int) -> list[tuple[int, int, int]]:
    """[(label, frame width, frame height)] of the displayed size width x height, lowest
    first: every label of variants.HLS_HEIGHTS up to the short side, the long side scaled
    by the aspect ratio. Never upscales: a source whose short side is under the lowest
    label gets that one label at its own size (evened)."""
    short = min(width, height)
    sizes = []
    for label in variants.HLS_HEIGHTS:
        if label <= short:
            scale = label / short
            sizes.append((label, _even(width * scale, width), _even(height * scale, height)))
    return sizes or [(variants.HLS_HEIGHTS[0], _even(width, width), _even(height, height))]


# H.264 levels (ITU-T H.264 Table A-1): (name, level_idc, max macroblocks/s, max frame
# size in macroblocks, max bit rate in kbit/s for High profile = 1.25 x the table's).
# Level 3.0 is the floor: what every HLS client decodes, and what older ones expect.
_LEVELS: Final = (
    ("3.0", 30, 40_500, 1_620, 12_500),
    ("3.1", 31, 108_000, 3_600, 17_500),
    ("3.2", 32, 216_000, 5_120, 25_000),
    ("4.0", 40, 245_760, 8_192, 25_000),
    ("4.1", 41, 245_760, 8_192, 62_500),
    ("4.2", 42, 522_240, 8_704, 62_500),
    ("5.0", 50, 589_824, 22_080, 168_750),
    ("5.1", 51, 983_040, 36_864, 300_000),
    ("5.2", 52, 2_073_600, 36_864, 300_000),
)
H264_HIGH_PROFILE_IDC: Final = 0x64


def h264_level(width: int, height: int, fps: float, maxrate_bps: int) -> tuple[str, int]:
    """(x264's --level value, level_idc) of the lowest level that holds a High-profile
    stream of that frame size, frame rate and peak bit rate. Raises ValueError beyond 5.2."""
    mbs_w, mbs_h = math.ceil(width / 16), math.ceil(height / 16)
    frame_mbs = mbs_w * mbs_h
    for name, idc, mbps_max, fs_max, kbps_max in _LEVELS:
        side_mbs_max = math.sqrt(8 * fs_max)  # A.3.1: no side longer than sqrt(8 * MaxFS)
        if (
            frame_mbs <= fs_max
            and max(mbs_w, mbs_h) <= side_mbs_max
            and frame_mbs * fps <= mbps_max
            and maxrate_bps <= kbps_max * 1000
        ):
            return name, idc
    raise ValueError(f"{width}x{height} at {fps:g} fps is beyond H.264 level 5.2")


def codecs_string(level_idc: int, *, audio: bool) -> str:
    """RFC 6381 CODECS: H.264 High (constraint flags 0, as x264 writes them) at level_idc,
    plus AAC-LC when there is audio."""
    video = f"avc1.{H264_HIGH_PROFILE_IDC:02x}00{level_idc:02x}"
    return f"{video},mp4a.40.2" if audio else video


def target_duration_s(durations_s: Sequence[float]) -> int:
    """EXT-X-TARGETDURATION: the longest segment rounded to the nearest integer (RFC 8216
    4.3.3.1 compares each EXTINF rounded that way), at least 1."""
    return max([1, *(math.floor(d + 0.5) for d in durations_s)])


def peak_bandwidth_bps(sizes: Sequence[int], durations_s: Sequence[float], target_s: int) -> int:
    """RFC 8216 4.3.4.2 peak segment bit rate: the highest bit rate of any run of
    consecutive segments lasting 0.5 to 1.5 x the target duration (the whole stream when it
    is shorter than that), rounded up to bits/s."""
    if len(sizes) != len(durations_s) or not sizes:
        raise ValueError("one duration per segment, at least one segment")
    total_s = sum(durations_s)
    if total_s < 0.5 * target_s:
        return math.ceil(sum(sizes) * 8 / max(total_s, 1e-3))
    peak = 0.0
    for first in range(len(sizes)):
        bits, seconds = 0, 0.0
        for size, duration in zip(sizes[first:], durations_s[first:], strict=True):
            if seconds + duration > 1.5 * target_s:
                break
            bits, seconds = bits + size * 8, seconds + duration
            if seconds >= 0.5 * target_s:
                peak = max(peak, bits / seconds)
    if peak == 0.0:  # no run fits the window (odd durations): fall back to the average
        peak = sum(sizes) * 8 / total_s
    return math.ceil(peak)


def rung_playlist_text(rung: Rung, segment_urls: Sequence[str], target_duration_s: int) -> str:
    """The VOD media playlist of one rung; segment_urls[i] is the URI of rung.segments[i].
    Raises ValueError unless there is one URL per segment."""
    if len(segment_urls) != len(rung.durations_s):
        raise ValueError("one URL per segment")
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",  # 3: decimal EXTINF durations
        f"#EXT-X-TARGETDURATION:{target_duration_s}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    for duration, url in zip(rung.durations_s, segment_urls, strict=True):
        lines += [f"#EXTINF:{duration:.3f},", url]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def master_playlist_text(rungs: Sequence[Rung], rung_urls: Sequence[str]) -> str:
    """The master playlist: one variant stream per rung, in the order given (lowest first
    from transcode_video); rung_urls[i] is the URI of rungs[i]'s playlist. Every segment
    starts with an IDR frame (keyframes forced at each cut), hence INDEPENDENT-SEGMENTS.
    Raises ValueError unless there is one URL per rung."""
    if len(rungs) != len(rung_urls):
        raise ValueError("one URL per rung")
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rung, url in zip(rungs, rung_urls, strict=True):
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={rung.bandwidth_bps},"
            f"AVERAGE-BANDWIDTH={rung.average_bandwidth_bps},"
            f"RESOLUTION={rung.width}x{rung.frame_height},"
            f'CODECS="{rung.codecs}"'
        )
        lines.append(url)
    return "\n".join(lines) + "\n"
