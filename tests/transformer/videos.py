"""Synthetic test videos, made by ffmpeg from its lavfi sources (testsrc picture, sine tone)
into the test's own directory, and ffprobe helpers to look at what the transformer wrote.

Every clip carries the Eiffel Tower's coordinates the way phones store them (QuickTime
`location`, and Apple's mdta key in MP4): a builder checks the string really is in its
bytes, so "absent from the outputs" is a claim that can fail.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Final

PLACE: Final = "+48.8584+002.2945/"
PLACE_BYTES: Final = PLACE.encode()
TIMEOUT_S: Final = 60.0


async def run(*argv: str) -> bytes:
    """Runs a tool; returns its stdout. Raises AssertionError with its stderr on failure."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    assert proc.returncode == 0, f"{argv[0]} failed: {err.decode(errors='replace')[-2000:]}"
    return out


async def clip(
    path: Path,
    *,
    seconds: float,
    size: str,
    rate: int = 10,
    audio: bool = True,
    rotate: int | None = None,
    faststart: bool = False,
) -> Path:
    """An H.264 clip of `size` ("WxH" as stored) at `rate` fps, with an AAC tone when
    `audio`, a location tag, in MOV when the name ends in .mov and MP4 otherwise. `rotate`
    adds a display matrix (degrees) as phones do for portrait clips; `faststart` puts the
    index (moov) before the media data."""
    mov = path.suffix == ".mov"
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]  # fmt: skip
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}", "-c:a", "aac"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-metadata", f"location={PLACE}"]  # fmt: skip
    if not mov:  # the MP4 muxer writes such tags only as mdta keys, as iPhones do
        argv += ["-metadata", f"com.apple.quicktime.location.ISO6709={PLACE}"]
    # use_metadata_tags: keep the mdta keys; faststart: move the index to the front.
    flags = ["-movflags", "+use_metadata_tags" + ("+faststart" if faststart else "")]
    muxer = ["-f", "mov" if mov else "mp4"]
    if rotate is None:
        await run(*argv, *flags, *muxer, str(path))
    else:  # ffmpeg 5.1 writes a display matrix from the rotate tag only when copying
        encoded = path.with_name(f"encoded-{path.name}")
        await run(*argv, *flags, *muxer, str(encoded))
        await run(
            "ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(encoded), "-c", "copy",
            "-map_metadata", "0", "-metadata:s:v:0", f"rotate={rotate}", *flags, *muxer,
            str(path),
        )  # fmt: skip
    assert PLACE_BYTES in await asyncio.to_thread(path.read_bytes), "no location in the clip"
    return path


async def audio_only(path: Path, *, cover_art: bool = False) -> Path:
    """An AAC file in an MP4 container (an .m4a), optionally with cover art: a picture the
    container lists as a video stream."""
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", "sine=duration=2"]  # fmt: skip
    if cover_art:
        argv += ["-f", "lavfi", "-i", "testsrc=size=200x200:duration=0.1", "-map", "0",
                 "-map", "1", "-frames:v", "1", "-c:v", "mjpeg",
                 "-disposition:v:0", "attached_pic"]  # fmt: skip
    await run(*argv, "-c:a", "aac", "-f", "mp4", str(path))
    return path


async def anamorphic(path: Path) -> Path:
    """720x480 stored, pixels 32:27 wide (NTSC widescreen DVD): displayed 853x480."""
    await run("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
              "-i", "testsrc=size=720x480:rate=10:duration=1", "-vf", "setsar=32/27",
              "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
              str(path))  # fmt: skip
    return path


async def streams(path: Path) -> list[dict[str, Any]]:
    """ffprobe's streams of a file (codec_name, profile, level, width, height, ...)."""
    out = await run("ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                    str(path))  # fmt: skip
    result: list[dict[str, Any]] = json.loads(out)["streams"]
    return result


async def decodes(path: Path) -> None:
    """Asserts that ffmpeg decodes every stream of `path` to its end without an error."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-map", "0",
        "-f", "null", "-", stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    assert (proc.returncode, err.decode(errors="replace")) == (0, ""), path
