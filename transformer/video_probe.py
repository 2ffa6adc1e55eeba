"""Validation of an uploaded video by its content (ffprobe), before anything is stored:
size -> container and streams -> duration -> dimensions -> a decode check of the first and
the last second (a truncated MP4 with its index at the front probes fine but cannot be
played to its end). Every failure is a `Rejected`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.photo import Format
from transformer.errors import Rejected
from transformer.limits import MediaLimits

PROBE_TIMEOUT_S: Final = 30.0
DECODE_CHECK_TIMEOUT_S: Final = 60.0
STDERR_BYTES_MAX: Final = 64 * 1024
PIXELS_MAX: Final = 4096 * 2304


@dataclass(frozen=True, slots=True)
class VideoInfo:
    fmt: Format
    width: int  # as displayed (rotation applied)
    height: int
    duration_s: float
    has_audio: bool
    video_codec: str
    size_bytes: int


async def run_tool(argv: list[str], *, timeout_s: float) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, the first STDERR_BYTES_MAX of stderr); killed on timeout
    (exit code -9)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out, err[:STDERR_BYTES_MAX]


def _corrupt() -> Rejected:
    return Rejected("corrupt_file", "the video is truncated or corrupt and cannot be decoded")


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            with contextlib.suppress(TypeError, ValueError):
                return int(float(side["rotation"])) % 360
    with contextlib.suppress(TypeError, ValueError):
        return int(stream.get("tags", {}).get("rotate", 0)) % 360
    return 0


async def probe_video(path: Path, limits: MediaLimits, *, ffprobe: str = "ffprobe") -> VideoInfo:
    size_bytes = (await asyncio.to_thread(path.stat)).st_size
    if size_bytes > limits.video_bytes_max:
        raise Rejected(
            "file_too_large", f"videos are limited to {limits.video_bytes_max} bytes", status=413
        )
    code, out, _ = await run_tool(
        [ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        timeout_s=PROBE_TIMEOUT_S,
    )  # fmt: skip
    try:
        doc = json.loads(out) if code == 0 else {}
    except ValueError:
        doc = {}
    streams = doc.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None or not doc.get("format"):
        raise _corrupt()
    try:
        duration_s = float(doc["format"].get("duration") or video.get("duration") or 0)
        width, height = int(video["width"]), int(video["height"])
    except (KeyError, TypeError, ValueError):
        raise _corrupt() from None
    if duration_s <= 0 or width <= 0 or height <= 0:
        raise _corrupt()
    if duration_s > limits.video_duration_s_max:
        raise Rejected(
            "video_too_long",
            f"{duration_s:.1f} s is longer than the {limits.video_duration_s_max:.0f} s allowed",
        )
    if _rotation(video) in (90, 270):
        width, height = height, width
    if width * height > PIXELS_MAX:
        raise Rejected("too_many_pixels", f"{width}x{height} is larger than 4096x2304")
    if min(width, height) < limits.video_side_px_min:
        raise Rejected(
            "image_too_small",
            f"{width}x{height}: each side must be at least {limits.video_side_px_min} pixels",
        )
    if max(width, height) > limits.video_side_px_max:
        raise Rejected(
            "image_too_large",
            f"{width}x{height}: no side may exceed {limits.video_side_px_max} pixels",
        )
    await _decode_check(path, duration_s)
    format_name = str(doc["format"].get("format_name", ""))
    brand = str(doc["format"].get("tags", {}).get("major_brand", "")).strip()
    fmt = Format.MOV if brand == "qt" or format_name == "mov" else Format.MP4
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    return VideoInfo(
        fmt, width, height, duration_s, has_audio, str(video.get("codec_name")), size_bytes
    )


async def _decode_check(path: Path, duration_s: float, *, ffmpeg: str = "ffmpeg") -> None:
    """Decodes the first second and the last one; any decoder error rejects the file."""
    tail_start = max(0.0, duration_s - 1.0)
    for start in (0.0, tail_start):
        code, _, err = await run_tool(
            [ffmpeg, "-v", "error", "-xerror", "-ss", f"{start:.3f}", "-t", "1",
             "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
            timeout_s=DECODE_CHECK_TIMEOUT_S,
        )  # fmt: skip
        if code != 0 or err.strip():
            raise _corrupt()
