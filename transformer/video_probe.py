"""Validation of an uploaded video by its content, before anything is stored, and the one
way this package runs ffmpeg and ffprobe (`run_tool`).

Checks, cheapest first: file size -> magic bytes -> the container's structure (bmff.py:
every box, and every chunk of every track, inside the file) -> streams (ffprobe) ->
duration -> frame rate and frame count -> the displayed size -> a decode of the first frame
and of the last second. A truncated MP4 whose index (moov) is at the front probes fine,
with its full duration: the structure check refuses it, and the decode check stays for what
only a decoder finds.

Every input is opened with the mov demuxer forced (`-f mov`, which reads MP4 too) and the
file protocol only: whatever the bytes claim, ffmpeg never reads them as a playlist, a
concat script or anything else that could make it open other files or URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from common.photo import Format
from transformer.container import check_container_file
from transformer.errors import Rejected, TranscodeFailed
from transformer.limits import MediaLimits
from transformer.sniff import SNIFF_BYTES, sniff

PROBE_TIMEOUT_S: Final = 30.0
DECODE_CHECK_TIMEOUT_S: Final = 60.0
# What we keep of a tool's output: the tail of stderr (its last line is the useful one),
# the head of stdout (ffprobe's JSON; a longer answer is treated as a broken file).
STDERR_BYTES_MAX: Final = 16 * 1024
PROBE_JSON_BYTES_MAX: Final = 4 * 1024 * 1024
# 4096 x 2304 (16:9 "4K"): the most pixels per frame we transcode; a side limit alone would
# let 4096 x 4096 through.
VIDEO_PIXELS_MAX: Final = 4096 * 2304
TAIL_CHECK_S: Final = 1.0
# Input options put before every `-i`: the container is MP4/QuickTime, read from a file.
INPUT_OPTIONS: Final = ("-protocol_whitelist", "file", "-f", "mov")


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """A validated video. width and height are as displayed: rotation and non-square pixels
    applied, so a phone's portrait clip has width < height. duration_s is the container's
    duration in seconds (> 0); size_bytes the file's size."""

    fmt: Format  # MP4 or MOV
    width: int
    height: int
    duration_s: float
    has_audio: bool
    video_codec: str  # ffprobe's codec name, e.g. "h264", "hevc"
    size_bytes: int


@dataclass(frozen=True, slots=True)
class ToolResult:
    returncode: int  # negative: killed by that signal
    stdout: bytes  # at most the stdout_bytes_max asked for
    stdout_overflow: bool  # stdout was longer (the rest was read and dropped)
    stderr_tail: bytes  # the last STDERR_BYTES_MAX bytes of stderr

    def last_line(self) -> str:
        """The tool's last line of stderr, at most 200 characters."""
        return self.last_lines(1)

    def last_lines(self, count: int) -> str:
        """The tool's last `count` lines of stderr, joined by " | ", at most 200 characters
        each (ffmpeg ends a fatal error with a hint line, so a message wants two or three);
        the exit code when it printed nothing."""
        lines = [line.strip() for line in self.stderr_tail.decode(errors="replace").splitlines()]
        kept = [line[:200] for line in lines if line][-count:]
        return " | ".join(kept) if kept else f"exit code {self.returncode}"


async def _read_head(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    buf = bytearray()
    overflow = False
    while chunk := await stream.read(65536):
        room = limit - len(buf)
        if len(chunk) > room:
            overflow = True
        buf += chunk[: max(room, 0)]
    return bytes(buf), overflow


async def _read_tail(stream: asyncio.StreamReader, limit: int) -> bytes:
    buf = bytearray()
    while chunk := await stream.read(65536):
        buf += chunk
        if len(buf) > 2 * limit:  # trim in batches, not on every chunk
            del buf[:-limit]
    return bytes(buf[-limit:])


async def run_tool(argv: list[str], *, timeout_s: float, stdout_bytes_max: int = 0) -> ToolResult:
    """Runs argv (no shell), its stdin closed. Raises TimeoutError after timeout_s seconds
    and re-raises cancellation, having killed the process and reaped it either way; raises
    OSError when the program cannot be started. Memory is bounded by stdout_bytes_max plus
    STDERR_BYTES_MAX whatever the tool prints."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    reading = asyncio.gather(
        _read_head(proc.stdout, stdout_bytes_max), _read_tail(proc.stderr, STDERR_BYTES_MAX)
    )
    try:
        async with asyncio.timeout(timeout_s):
            (out, overflow), err = await reading
            returncode = await proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        reading.cancel()
        await asyncio.wait([reading])  # never raises the readers' CancelledError
        await proc.wait()
        raise
    return ToolResult(returncode, out, overflow, err)


def _corrupt(why: str = "is truncated or corrupt") -> Rejected:
    return Rejected("corrupt_file", f"the video {why} and cannot be played")


def _tool_missing(tool: str, e: OSError) -> TranscodeFailed:
    return TranscodeFailed(f"cannot run {tool}: {e.strerror or e}")


async def probe_video(
    path: Path, limits: MediaLimits, *, ffprobe: str = "ffprobe", ffmpeg: str = "ffmpeg"
) -> VideoInfo:
    """Validates the video at `path` (already sniffed as MP4 or MOV) and describes it.

    Raises Rejected, in this order of checks: file_too_large (413, from the file's size
    before reading it), unsupported_format (415, not an MP4/QuickTime container),
    corrupt_file (a broken container structure, ffprobe fails, no video stream, no positive
    duration, no frame rate, or the first frame or the last second does not decode),
    video_too_long, frame_rate_too_high (over video_frame_rate_max), too_many_frames (over
    video_frames_max), image_too_small / image_too_large (a displayed side outside
    video_side_px_min..max), too_many_pixels (more than 4096 x 2304); all 422 but the first
    two. Raises TranscodeFailed only when the tools cannot be run at all (missing binary,
    the file unreadable): a fault of ours, not of the upload. Nothing else escapes.
    `ffmpeg` runs the decode check.
    """
    try:
        url, size_bytes, head = await asyncio.to_thread(_open, path)
    except OSError as e:
        raise TranscodeFailed(f"cannot read the upload: {e.strerror or e}") from e
    if size_bytes > limits.video_bytes_max:
        raise Rejected(
            "file_too_large", f"videos are limited to {limits.video_bytes_max} bytes", status=413
        )
    fmt = sniff(head)
    if fmt not in (Format.MP4, Format.MOV):
        raise Rejected(
            "unsupported_format", "the file is not an MP4 or QuickTime video", status=415
        )
    try:
        await asyncio.to_thread(check_container_file, path, fmt, limits)
    except OSError as e:
        raise TranscodeFailed(f"cannot read the upload: {e.strerror or e}") from e
    argv = [ffprobe, "-v", "error", *INPUT_OPTIONS, "-print_format", "json",
            "-show_format", "-show_streams", url]  # fmt: skip
    try:
        probed = await run_tool(
            argv, timeout_s=PROBE_TIMEOUT_S, stdout_bytes_max=PROBE_JSON_BYTES_MAX
        )
    except TimeoutError:
        raise _corrupt("could not be read in time") from None
    except OSError as e:
        raise _tool_missing(ffprobe, e) from e
    if probed.returncode != 0 or probed.stdout_overflow:
        raise _corrupt()
    try:
        found = _parse(probed.stdout)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise _corrupt() from None
    width, height, duration_s = found.width, found.height, found.duration_s
    if duration_s > limits.video_duration_s_max:
        raise Rejected(
            "video_too_long",
            f"the video lasts {duration_s:.1f} s; at most {limits.video_duration_s_max:g} s "
            "are allowed",
        )
    if found.frame_rate > limits.video_frame_rate_max:
        raise Rejected(
            "frame_rate_too_high",
            f"the video runs at {found.frame_rate:.4g} frames per second; the limit "
            f"(video_frame_rate_max) is {limits.video_frame_rate_max:g}",
        )
    if found.frames > limits.video_frames_max:
        raise Rejected(
            "too_many_frames",
            f"the video has {found.frames} frames; the limit (video_frames_max) is "
            f"{limits.video_frames_max}",
        )
    if min(width, height) < limits.video_side_px_min:
        raise Rejected(
            "image_too_small",
            f"the video is {width}x{height}; each side must be at least "
            f"{limits.video_side_px_min} pixels",
        )
    if max(width, height) > limits.video_side_px_max:
        raise Rejected(
            "image_too_large",
            f"the video is {width}x{height}; no side may exceed {limits.video_side_px_max} pixels",
        )
    if width * height > VIDEO_PIXELS_MAX:
        raise Rejected(
            "too_many_pixels", f"the video is {width}x{height}; at most 4096x2304 pixels"
        )
    await _decode_check(url, found.video_duration_s, ffmpeg)
    return VideoInfo(fmt, width, height, duration_s, found.has_audio, found.video_codec, size_bytes)


def _open(path: Path) -> tuple[str, int, bytes]:
    """(the file: URL ffmpeg is given, the size in bytes, the first SNIFF_BYTES bytes)."""
    with path.open("rb") as f:
        return input_url(path), path.stat().st_size, f.read(SNIFF_BYTES)


def input_url(path: Path) -> str:
    """The ffmpeg input URL of a local file: absolute, so that no name is read as an option
    or a protocol. (Blocking: os.getcwd for a relative path.)"""
    return f"file:{path.absolute()}"


class _Probed(NamedTuple):
    width: int  # displayed
    height: int
    duration_s: float  # the container's
    video_duration_s: float  # the video stream's (the container's when it has none)
    has_audio: bool
    video_codec: str
    frame_rate: float  # frames per second, > 0
    frames: int  # in the video stream


def _parse(raw: bytes) -> _Probed:
    """What ffprobe's JSON says. Raises ValueError (KeyError, TypeError, AttributeError) for
    anything unusable: no video stream, no size, no positive duration, no frame rate."""
    doc = json.loads(raw)
    streams: list[dict[str, Any]] = doc["streams"]
    # Cover art (an attached picture) is a "video" stream of an audio file, not a video.
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video"
        and not s.get("disposition", {}).get("attached_pic")
        and not s.get("disposition", {}).get("timed_thumbnails")
    ]
    if not videos:
        raise ValueError("no video stream")
    video = videos[0]
    width, height = int(video["width"]), int(video["height"])
    duration_s = float(doc["format"].get("duration") or video.get("duration") or "nan")
    video_duration_s = float(video.get("duration") or duration_s)
    if not (width > 0 and height > 0 and math.isfinite(duration_s) and duration_s > 0):
        raise ValueError("no size or duration")
    if not (math.isfinite(video_duration_s) and video_duration_s > 0):
        video_duration_s = duration_s
    # Non-square pixels (anamorphic SD): the displayed width is the stored one times the
    # sample aspect ratio ("0:1" means unknown, i.e. square).
    num, _, den = str(video.get("sample_aspect_ratio") or "1:1").partition(":")
    if int(num) > 0 and int(den) > 0 and int(num) != int(den):
        width = max(1, round(width * int(num) / int(den)))
    if _rotation(video) in (90, 270):
        width, height = height, width
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    codec = str(video.get("codec_name") or "unknown")
    frame_rate, frames = frame_rate_and_count(video, video_duration_s)
    return _Probed(
        width, height, duration_s, video_duration_s, has_audio, codec, frame_rate, frames
    )


def frame_rate_and_count(stream: dict[str, Any], duration_s: float) -> tuple[float, int]:
    """(frames per second, frames) of a video stream ffprobe described, lasting duration_s.
    The rate is the average (avg_frame_rate), else the rate all timestamps fit
    (r_frame_rate, an upper bound for variable-rate video), else nb_frames over the
    duration; the count is nb_frames, else the duration times the rate. Raises ValueError
    when neither a rate nor a count is given."""
    frames = round(_ratio(stream.get("nb_frames")))
    rate = _ratio(stream.get("avg_frame_rate")) or _ratio(stream.get("r_frame_rate"))
    if rate <= 0 < frames:
        rate = frames / duration_s
    if rate <= 0:
        raise ValueError("no frame rate")
    if frames <= 0:
        frames = round(duration_s * rate)
    return rate, frames


def _ratio(text: object) -> float:
    """A ratio such as "30000/1001", or a count, as a number; 0.0 for "0/0", nothing, or
    anything else unusable."""
    num, _, den = str(text or "").partition("/")
    try:
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def _rotation(stream: dict[str, Any]) -> int:
    """Degrees the player turns the picture (0, 90, 180, 270): the display matrix side data
    (ffprobe >= 5) or, from older muxers, the `rotate` tag."""
    for side in stream.get("side_data_list") or []:
        if isinstance(side, dict) and "rotation" in side:
            with contextlib.suppress(TypeError, ValueError):
                return round(float(side["rotation"]) / 90) * 90 % 360
    with contextlib.suppress(TypeError, ValueError):
        return round(float(stream.get("tags", {}).get("rotate", 0)) / 90) * 90 % 360
    return 0


async def _decode_check(url: str, video_duration_s: float, ffmpeg: str) -> None:
    """Decodes the first video frame, then the last second of the first video and audio
    streams. Rejects when ffmpeg stops on an error (-xerror: a sample past the end of the
    file, an undecodable packet) or decodes no video frame.

    Decoder complaints that ffmpeg survives are not errors here: seeking into a valid
    open-GOP H.264 stream logs some ("mmco: unref short failure") and exits 0."""
    tail_start_s = max(0.0, video_duration_s - TAIL_CHECK_S)
    for seek in (["-frames:v", "1"], ["-ss", f"{tail_start_s:.3f}"]):
        start, limit = (seek, []) if seek[0] == "-ss" else ([], seek)
        argv = [ffmpeg, "-nostdin", "-v", "error", "-xerror", *start, *INPUT_OPTIONS,
                "-i", url, "-map", "0:V:0", "-map", "0:a:0?", *limit,
                "-f", "null", "-progress", "pipe:1", "-nostats", "-"]  # fmt: skip
        try:
            result = await run_tool(argv, timeout_s=DECODE_CHECK_TIMEOUT_S, stdout_bytes_max=65536)
        except TimeoutError:
            raise _corrupt("could not be decoded in time") from None
        except OSError as e:
            raise _tool_missing(ffmpeg, e) from e
        if result.returncode != 0 or _frames(result.stdout) < 1:
            raise _corrupt()


def _frames(progress: bytes) -> int:
    """The last `frame=` count of ffmpeg's -progress output (0 when there is none)."""
    frames = 0
    for line in progress.decode(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key == "frame" and value.strip().isdigit():
            frames = int(value)
    return frames
