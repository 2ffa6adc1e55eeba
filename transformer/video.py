"""The video ladder: a poster frame and HLS rungs of 240, 480, 720 and 1080 lines (never
above the source; transformer.hls decides which), H.264 + AAC in MPEG-TS segments of 4 s,
with every metadata tag (the location phones record included) left behind.

One ffmpeg run makes every rung: the source is decoded once and split, which matters for a
4K phone clip on a 2-core box. Keyframes are forced every SEGMENT_S seconds and scene-cut
keyframes are off, so every rung cuts its segments at the same instants (a player can
switch rungs at any segment boundary) and every segment starts with an IDR frame.

The playlists ffmpeg writes are read for the segment list and durations only; the served
ones are rendered by transformer.hls once each segment has its photo URL.
"""

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
from transformer.hls import (
    Rung as Rung,  # re-exported: the ladder's callers take it from here
)
from transformer.hls import (
    codecs_string,
    h264_level,
    peak_bandwidth_bps,
    rung_sizes,
    target_duration_s,
)
from transformer.video_probe import INPUT_OPTIONS, VideoInfo, input_url, run_tool

SEGMENT_S: Final = 4
FPS_MAX: Final = 30  # higher rates (60 fps phone clips) are halved: half the encoding work
X264_PRESET: Final = "veryfast"
X264_CRF: Final = 23
# Capped CRF: a rung's peak rate is at most this many bits per pixel per frame at FPS_MAX
# (1080p: 6.2 Mbit/s, 240p: 0.3 Mbit/s), so a noisy clip cannot stall a slow connection.
BITS_PER_PIXEL_MAX: Final = 0.1
VBV_BUFFER_S: Final = 2  # bufsize = 2 s at maxrate
AUDIO_KBPS_LOW: Final = 96  # the 240 and 480 rungs
AUDIO_KBPS: Final = 128
POSTER_SIDE_PX_MAX: Final = 1080
POSTER_AT_S_MAX: Final = 1.0
POSTER_TIMEOUT_S: Final = 60.0
JPEG_QUALITY: Final = 82
WEBP_QUALITY: Final = 80
ERROR_LINES: Final = 3  # of ffmpeg's stderr, in a TranscodeFailed message
_EXTINF: Final = re.compile(r"#EXTINF:([0-9]+(?:\.[0-9]+)?),")
_SEGMENT_NAME: Final = re.compile(r"seg_[0-9]{5}\.ts")


@dataclass(frozen=True, slots=True)
class VideoLadder:
    """What transcode_video made: the poster (JPEG and WebP bytes without metadata,
    poster_width x poster_height pixels, long side <= POSTER_SIDE_PX_MAX) and the rungs,
    lowest first, their segment files under the work directory. target_duration_s is the
    EXT-X-TARGETDURATION of every rung playlist."""

    info: VideoInfo
    poster_jpeg: bytes
    poster_webp: bytes
    poster_width: int
    poster_height: int
    rungs: tuple[Rung, ...]
    target_duration_s: int


async def transcode_video(
    path: Path,
    work_dir: Path,
    info: VideoInfo,
    *,
    ffmpeg: str = "ffmpeg",
    timeout_s: float = 600.0,
    threads: int = 2,
) -> VideoLadder:
    """Poster and HLS rungs of the video at `path`, validated by probe_video into `info`;
    the segments are written under `work_dir` (created; the caller removes it). `threads`
    is per encoder. Raises TranscodeFailed when a tool fails (with its last line of
    stderr), cannot be run, or the whole ladder takes longer than timeout_s seconds (the
    tool is killed); nothing else."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        url = await asyncio.to_thread(_prepare, path, work_dir)
        poster = await _poster(url, info, ffmpeg, min(POSTER_TIMEOUT_S, timeout_s))
        rungs = await _ladder(url, work_dir, info, ffmpeg, deadline - loop.time(), threads)
    except TimeoutError:
        raise TranscodeFailed(f"the video ladder took longer than {timeout_s:g} s") from None
    except OSError as e:
        raise TranscodeFailed(f"cannot run ffmpeg or write its output: {e}") from e
    except ValueError as e:  # a frame size beyond H.264 (probe_video rules it out)
        raise TranscodeFailed(str(e)) from e
    except pyvips.Error as e:
        raise TranscodeFailed(f"poster: {str(e).strip()[:200]}") from e
    return VideoLadder(info, *poster, rungs, target_duration_s(_all_durations(rungs)))


def _prepare(path: Path, work_dir: Path) -> str:
    work_dir.mkdir(parents=True, exist_ok=True)
    return input_url(path)


def _all_durations(rungs: tuple[Rung, ...]) -> list[float]:
    return [d for rung in rungs for d in rung.durations_s]


def poster_size(width: int, height: int) -> tuple[int, int]:
    """The displayed size fitted within POSTER_SIDE_PX_MAX (never enlarged)."""
    scale = min(1.0, POSTER_SIDE_PX_MAX / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


async def _poster(
    url: str, info: VideoInfo, ffmpeg: str, timeout_s: float
) -> tuple[bytes, bytes, int, int]:
    """(JPEG, WebP, width, height) of the frame at min(1 s, half the duration). ffmpeg
    turns and scales it (rotation and pixel aspect as displayed) and hands over raw RGB;
    libvips encodes it, writing no metadata at all."""
    width, height = poster_size(info.width, info.height)
    frame_bytes = width * height * 3
    at_s = min(POSTER_AT_S_MAX, info.duration_s / 2)
    rgb = b""
    # A video stream that ends before the audio has no frame at `at_s`: then the first one.
    for seek_s in (at_s, 0.0):
        argv = [ffmpeg, "-nostdin", "-v", "error", "-ss", f"{seek_s:.3f}", *INPUT_OPTIONS,
                "-i", url, "-map", "0:V:0", "-frames:v", "1",
                "-vf", f"scale={width}:{height}:flags=lanczos,setsar=1,format=rgb24",
                "-map_metadata", "-1", "-f", "rawvideo", "-"]  # fmt: skip
        result = await run_tool(argv, timeout_s=timeout_s, stdout_bytes_max=frame_bytes)
        if result.returncode != 0:
            raise TranscodeFailed(f"poster: ffmpeg: {result.last_lines(ERROR_LINES)}")
        rgb = result.stdout
        if len(rgb) == frame_bytes:
            break
    else:
        raise TranscodeFailed(f"poster: ffmpeg gave {len(rgb)} bytes, not one frame")
    jpeg, webp = await asyncio.to_thread(_encode_poster, rgb, width, height)
    return jpeg, webp, width, height


def _encode_poster(rgb: bytes, width: int, height: int) -> tuple[bytes, bytes]:
    image = pyvips.Image.new_from_memory(rgb, width, height, 3, "uchar")
    image = image.copy(interpretation="srgb")
    keep = pyvips.enums.ForeignKeep.NONE
    jpeg = image.jpegsave_buffer(Q=JPEG_QUALITY, optimize_coding=True, keep=keep)
    webp = image.webpsave_buffer(Q=WEBP_QUALITY, keep=keep)
    return bytes(jpeg), bytes(webp)


def _rate_and_level(width: int, height: int) -> tuple[int, str, int]:
    """(peak bit rate cap in bits/s, x264 level, level_idc) of a rung's frame size."""
    maxrate = math.ceil(width * height * FPS_MAX * BITS_PER_PIXEL_MAX)
    return (maxrate, *h264_level(width, height, FPS_MAX, maxrate))


def ladder_argv(
    url: str, out: Path, info: VideoInfo, sizes: list[tuple[int, int, int]], *, ffmpeg: str,
    threads: int,
) -> list[str]:  # fmt: skip
    """The one ffmpeg command that writes every rung: out/{label}/seg_NNNNN.ts and
    out/{label}/index.m3u8. `out` must be absolute."""
    chains = [f"[0:V:0]split={len(sizes)}{''.join(f'[s{i}]' for i in range(len(sizes)))}"]
    argv = [ffmpeg, "-nostdin", "-v", "error", "-y", *INPUT_OPTIONS, "-i", url]
    per_stream: list[str] = []
    stream_map = []
    for i, (label, width, height) in enumerate(sizes):
        chains.append(f"[s{i}]scale={width}:{height},setsar=1,format=yuv420p[v{i}]")
        maxrate, level, _ = _rate_and_level(width, height)
        per_stream += [f"-level:v:{i}", level, f"-maxrate:v:{i}", str(maxrate),
                       f"-bufsize:v:{i}", str(maxrate * VBV_BUFFER_S)]  # fmt: skip
        argv += ["-map", f"[v{i}]"]
        if info.has_audio:
            argv += ["-map", "0:a:0"]
            kbps = AUDIO_KBPS_LOW if label <= 480 else AUDIO_KBPS
            per_stream += [f"-b:a:{i}", f"{kbps}k"]
            stream_map.append(f"v:{i},a:{i},name:{label}")
        else:
            stream_map.append(f"v:{i},name:{label}")
    argv += ["-filter_complex", ";".join(chains)]
    argv += ["-c:v", "libx264", "-preset", X264_PRESET, "-crf", str(X264_CRF),
             "-profile:v", "high", "-sc_threshold", "0", "-fpsmax", str(FPS_MAX),
             "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_S})"]  # fmt: skip
    if info.has_audio:
        argv += ["-c:a", "aac", "-ac", "2"]
    argv += per_stream
    argv += ["-map_metadata", "-1", "-map_metadata:s", "-1", "-map_chapters", "-1",
             "-threads", str(threads),
             "-f", "hls", "-hls_time", str(SEGMENT_S), "-hls_playlist_type", "vod",
             "-hls_segment_type", "mpegts",
             "-hls_segment_filename", str(out / "%v" / "seg_%05d.ts"),
             "-var_stream_map", " ".join(stream_map), str(out / "%v" / "index.m3u8")]  # fmt: skip
    return argv


async def _ladder(
    url: str, work_dir: Path, info: VideoInfo, ffmpeg: str, timeout_s: float, threads: int
) -> tuple[Rung, ...]:
    if timeout_s <= 0:
        raise TimeoutError
    sizes = rung_sizes(info.width, info.height)
    out = await asyncio.to_thread(lambda: (work_dir / "hls").absolute())
    argv = ladder_argv(url, out, info, sizes, ffmpeg=ffmpeg, threads=threads)
    result = await run_tool(argv, timeout_s=timeout_s)
    if result.returncode != 0:
        raise TranscodeFailed(f"ffmpeg: {result.last_lines(ERROR_LINES)}")
    return tuple([await asyncio.to_thread(_read_rung, out / str(s[0]), info, s) for s in sizes])


def _read_rung(directory: Path, info: VideoInfo, size: tuple[int, int, int]) -> Rung:
    """The rung ffmpeg wrote into `directory`, from its playlist and segment files."""
    label, width, height = size
    segments: list[Path] = []
    durations: list[float] = []
    for line in (directory / "index.m3u8").read_text().splitlines():
        if m := _EXTINF.match(line):
            durations.append(float(m[1]))
        elif line and not line.startswith("#"):
            if not _SEGMENT_NAME.fullmatch(line):  # ours, never a path elsewhere
                raise TranscodeFailed(f"ffmpeg listed an unexpected segment {line[:80]!r}")
            segments.append(directory / line)
    if not segments or len(segments) != len(durations):
        raise TranscodeFailed(f"ffmpeg wrote no usable playlist for the {label} rung")
    if len(segments) > variants.SEGMENT_INDEX_MAX + 1:
        raise TranscodeFailed(f"{len(segments)} segments: more than a rendition can number")
    sizes = [p.stat().st_size for p in segments]
    *_, level_idc = _rate_and_level(width, height)
    return Rung(
        height=label,
        width=width,
        frame_height=height,
        bandwidth_bps=peak_bandwidth_bps(sizes, durations, target_duration_s(durations)),
        average_bandwidth_bps=math.ceil(sum(sizes) * 8 / max(sum(durations), 1e-3)),
        codecs=codecs_string(level_idc, audio=info.has_audio),
        segments=tuple(segments),
        durations_s=tuple(durations),
    )
