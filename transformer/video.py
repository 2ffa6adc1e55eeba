"""The video ladder (seed 001): a poster frame and HLS rungs of 240, 480, 720 and 1080 lines
(never above the source), H.264 + AAC in MPEG-TS segments of 4 s, every metadata tag
(including the location phones record) stripped. One ffmpeg run per rung, killed beyond the
job's timeout; the playlists are rendered later by transformer.hls, once every segment's
photo URL is known."""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyvips

from transformer import variants
from transformer.errors import TranscodeFailed
from transformer.video_probe import VideoInfo, run_tool

SEGMENT_S: Final = 4
POSTER_PX_MAX: Final = 1080
POSTER_AT_S_MAX: Final = 1.0
JPEG_QUALITY: Final = 82
WEBP_QUALITY: Final = 80
X264_PRESET: Final = "veryfast"
X264_CRF: Final = 23
# H.264 High profile levels by rung height (the CODECS string of the master playlist).
_LEVELS: Final = {240: ("3.0", "64001e"), 480: ("3.0", "64001e"), 720: ("3.1", "64001f"),
                  1080: ("4.0", "640028")}  # fmt: skip
_AUDIO_KBPS: Final = {240: 96, 480: 96, 720: 128, 1080: 128}
_KEEP_NONE: Final = pyvips.enums.ForeignKeep.NONE
_EXTINF: Final = re.compile(r"^#EXTINF:([0-9.]+),")


@dataclass(frozen=True, slots=True)
class Rung:
    height: int  # the rung's label (240, 480, 720, 1080)
    width: int  # its frame size (portrait clips: width < height)
    frame_height: int
    bandwidth_bps: int  # peak of its segments
    average_bandwidth_bps: int
    codecs: str
    segments: tuple[Path, ...]
    durations_s: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class VideoLadder:
    info: VideoInfo
    poster_jpeg: bytes
    poster_webp: bytes
    poster_width: int
    poster_height: int
    rungs: tuple[Rung, ...]
    target_duration_s: int


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def rung_sizes(width: int, height: int) -> list[tuple[int, int, int]]:
    """[(label, frame width, frame height)]: the rungs whose label is at most the source's
    short side (a source under 240 lines gets one rung, labelled 240, at its own size)."""
    short = min(width, height)
    out = []
    for label in variants.HLS_HEIGHTS:
        if label > short:
            continue
        scale = label / short
        out.append((label, _even(width * scale), _even(height * scale)))
    if not out:
        out.append((variants.HLS_HEIGHTS[0], _even(width), _even(height)))
    return out


async def _poster(source: Path, info: VideoInfo, ffmpeg: str) -> tuple[bytes, bytes, int, int]:
    at_s = min(POSTER_AT_S_MAX, info.duration_s / 2)
    code, png, err = await run_tool(
        [ffmpeg, "-v", "error", "-ss", f"{at_s:.3f}", "-i", str(source), "-frames:v", "1",
         "-map_metadata", "-1", "-f", "image2pipe", "-c:v", "png", "-"],
        timeout_s=60,
    )  # fmt: skip
    if code != 0 or not png:
        raise TranscodeFailed(f"poster frame: {_last_line(err)}")
    image = pyvips.Image.new_from_buffer(png, "")
    if max(image.width, image.height) > POSTER_PX_MAX:
        image = image.thumbnail_image(POSTER_PX_MAX, height=POSTER_PX_MAX)
    image = image.colourspace("srgb")
    if image.hasalpha():
        image = image.flatten(background=[0, 0, 0])
    jpeg = bytes(image.jpegsave_buffer(Q=JPEG_QUALITY, optimize_coding=True, keep=_KEEP_NONE))
    webp = bytes(image.webpsave_buffer(Q=WEBP_QUALITY, keep=_KEEP_NONE))
    return jpeg, webp, int(image.width), int(image.height)


def _last_line(err: bytes) -> str:
    lines = err.decode(errors="replace").strip().splitlines()
    return lines[-1][:300] if lines else "no message"


async def _rung(
    source: Path, out: Path, info: VideoInfo, size: tuple[int, int, int], *,
    ffmpeg: str, timeout_s: float, threads: int,
) -> Rung:  # fmt: skip
    label, width, height = size
    level, profile_hex = _LEVELS[label]
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    argv = [
        ffmpeg, "-v", "error", "-y", "-i", str(source),
        "-map", "0:v:0", "-map", "0:a:0?",
        "-vf", f"scale={width}:{height},format=yuv420p",
        "-c:v", "libx264", "-preset", X264_PRESET, "-crf", str(X264_CRF),
        "-profile:v", "high", "-level", level,
        "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_S})", "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", f"{_AUDIO_KBPS[label]}k", "-ac", "2",
        "-map_metadata", "-1", "-map_chapters", "-1", "-threads", str(threads),
        "-f", "hls", "-hls_time", str(SEGMENT_S), "-hls_playlist_type", "vod",
        "-hls_segment_filename", str(out / "seg_%04d.ts"), str(out / "index.m3u8"),
    ]  # fmt: skip
    try:
        code, _, err = await run_tool(argv, timeout_s=timeout_s)
    except TimeoutError:
        raise TranscodeFailed(f"the {label}p rung took longer than {timeout_s:.0f} s") from None
    if code != 0:
        raise TranscodeFailed(f"ffmpeg ({label}p): {_last_line(err)}")
    playlist = await asyncio.to_thread((out / "index.m3u8").read_text)
    segments, durations = [], []
    for line in playlist.splitlines():
        m = _EXTINF.match(line)
        if m:
            durations.append(float(m.group(1)))
        elif line and not line.startswith("#"):
            segments.append(out / line)
    if not segments or len(segments) != len(durations):
        raise TranscodeFailed(f"ffmpeg ({label}p) wrote no usable playlist")
    if len(segments) > variants.SEGMENT_INDEX_MAX + 1:
        raise TranscodeFailed(f"{len(segments)} segments: more than a rendition can number")
    sizes = await asyncio.to_thread(lambda: [p.stat().st_size for p in segments])
    peak = max(s * 8 / max(d, 0.1) for s, d in zip(sizes, durations, strict=True))
    average = sum(sizes) * 8 / max(sum(durations), 0.1)
    codecs = f"avc1.{profile_hex}" + (",mp4a.40.2" if info.has_audio else "")
    return Rung(
        label, width, height, math.ceil(peak), math.ceil(average), codecs,
        tuple(segments), tuple(durations),
    )  # fmt: skip


async def transcode_video(
    source: Path, work_dir: Path, info: VideoInfo, *,
    ffmpeg: str = "ffmpeg", timeout_s: float = 900.0, threads: int = 2,
) -> VideoLadder:  # fmt: skip
    """Poster and HLS rungs of a validated video into `work_dir` (created). Raises
    TranscodeFailed when a tool fails or the whole ladder exceeds `timeout_s`."""
    await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        jpeg, webp, pw, ph = await _poster(source, info, ffmpeg)
    except pyvips.Error as e:
        raise TranscodeFailed(f"poster frame: {e}") from e
    rungs = []
    for size in rung_sizes(info.width, info.height):
        left_s = deadline - loop.time()
        if left_s <= 0:
            raise TranscodeFailed(f"the ladder took longer than {timeout_s:.0f} s")
        rungs.append(
            await _rung(
                source,
                work_dir / f"r{size[0]}",
                info,
                size,
                ffmpeg=ffmpeg,
                timeout_s=left_s,
                threads=threads,
            )
        )
    longest = max(d for r in rungs for d in r.durations_s)
    return VideoLadder(info, jpeg, webp, pw, ph, tuple(rungs), math.ceil(longest))
