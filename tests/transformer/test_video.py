"""The video ladder on real ffmpeg: validation and rejections, rungs never above the source
(portrait too), 4 s segments that decode, a stripped poster and outputs, and playlists a
stock HLS client (ffmpeg) plays end to end."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from common.photo import Format
from transformer.errors import Rejected
from transformer.hls import master_playlist_text, rung_playlist_text
from transformer.limits import MediaLimits
from transformer.video import Rung, rung_sizes, transcode_video
from transformer.video_probe import probe_video

LIMITS = MediaLimits()
PLACE = "+48.8584+002.2945/"


def clip(path: Path, *, seconds: float, size: str, audio: bool = True, mov: bool = False) -> Path:
    argv = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc=size={size}:rate=12:duration={seconds}"]  # fmt: skip
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}", "-c:a", "aac"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-metadata", f"location={PLACE}", "-shortest", str(path)]  # fmt: skip
    if mov:
        argv[-1:-1] = ["-f", "mov"]
    subprocess.run(argv, check=True, timeout=60)
    return path


def _streams(path: Path) -> list[str]:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split()  # fmt: skip


def _audio_only(path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac",
         str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def test_rungs_never_exceed_the_source() -> None:
    assert rung_sizes(1920, 1080) == [
        (240, 426, 240), (480, 854, 480), (720, 1280, 720), (1080, 1920, 1080)
    ]  # fmt: skip
    assert rung_sizes(854, 480) == [(240, 428, 240), (480, 854, 480)]
    assert rung_sizes(720, 1280) == [(240, 240, 426), (480, 480, 854), (720, 720, 1280)]
    assert rung_sizes(160, 120) == [(240, 160, 120)]


async def test_an_mp4_becomes_poster_and_hls_rungs(tmp_path: Path) -> None:
    source = clip(tmp_path / "in.mp4", seconds=9, size="640x480")
    info = await probe_video(source, LIMITS)
    assert (info.fmt, info.width, info.height, info.has_audio) == (Format.MP4, 640, 480, True)
    assert 8.9 < info.duration_s < 9.2
    ladder = await transcode_video(source, tmp_path / "out", info)
    assert [(r.height, r.width, r.frame_height) for r in ladder.rungs] == [
        (240, 320, 240), (480, 640, 480)
    ]  # fmt: skip
    assert ladder.target_duration_s == 4
    for rung in ladder.rungs:
        assert [round(d) for d in rung.durations_s] == [4, 4, 1]
        assert rung.codecs == "avc1.64001e,mp4a.40.2" and rung.bandwidth_bps > 0
        for segment in rung.segments:
            data = segment.read_bytes()
            assert PLACE.encode() not in data
            streams = await asyncio.to_thread(_streams, segment)
            assert streams[0] == f"h264,{rung.width},{rung.frame_height}" and "aac" in streams
    assert ladder.poster_jpeg.startswith(b"\xff\xd8\xff") and b"Exif" not in ladder.poster_jpeg
    assert ladder.poster_webp[8:12] == b"WEBP"
    assert (ladder.poster_width, ladder.poster_height) == (640, 480)

    # Playlists with file paths for URLs: ffmpeg, a stock HLS client, plays the ladder.
    rung_files = []
    for rung in ladder.rungs:
        path = tmp_path / f"rung{rung.height}.m3u8"
        path.write_text(rung_playlist_text(rung, [str(s) for s in rung.segments], 4))
        rung_files.append(str(path))
    master = tmp_path / "master.m3u8"
    master.write_text(master_playlist_text(ladder.rungs, rung_files))
    played = await asyncio.create_subprocess_exec(
        "ffmpeg", "-v", "error", "-allowed_extensions", "ALL", "-i", str(master),
        "-map", "0:v:0", "-f", "null", "-", stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await played.communicate()
    assert played.returncode == 0, err.decode()


async def test_a_portrait_mov_without_audio_keeps_its_orientation(tmp_path: Path) -> None:
    source = clip(tmp_path / "in.mov", seconds=2, size="270x480", audio=False, mov=True)
    info = await probe_video(source, LIMITS)
    assert (info.fmt, info.width, info.height, info.has_audio) == (Format.MOV, 270, 480, False)
    ladder = await transcode_video(source, tmp_path / "out", info)
    assert [(r.height, r.width, r.frame_height) for r in ladder.rungs] == [(240, 240, 426)]
    assert ladder.rungs[0].codecs == "avc1.64001e"
    assert ladder.poster_height > ladder.poster_width


async def _code(path: Path, limits: MediaLimits = LIMITS) -> str:
    with pytest.raises(Rejected) as got:
        await probe_video(path, limits)
    assert got.value.message
    return got.value.code


async def test_rejections(tmp_path: Path) -> None:
    good = clip(tmp_path / "good.mp4", seconds=3, size="320x240")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(data[:64] + b"\x42" * 20000)
    audio_only = await asyncio.to_thread(_audio_only, tmp_path / "audio.mp4")
    tiny = clip(tmp_path / "tiny.mp4", seconds=1, size="48x48", audio=False)
    assert await _code(truncated) == "corrupt_file"
    assert await _code(garbage) == "corrupt_file"
    assert await _code(audio_only) == "corrupt_file"
    assert await _code(tiny) == "image_too_small"
    assert await _code(good, MediaLimits(video_duration_s_max=2.0)) == "video_too_long"
    assert await _code(good, MediaLimits(video_bytes_max=1000)) == "file_too_large"
    assert await _code(good, MediaLimits(video_side_px_max=300)) == "image_too_large"


def test_playlist_text_is_exact() -> None:
    rung = Rung(240, 320, 240, 300000, 250000, "avc1.64001e,mp4a.40.2",
                (Path("a"), Path("b")), (4.0, 1.5))  # fmt: skip
    assert rung_playlist_text(rung, ["/p/1/2/00/2400000.ts", "/p/1/2/00/2400001.ts"], 4) == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:4.000,\n/p/1/2/00/2400000.ts\n"
        "#EXTINF:1.500,\n/p/1/2/00/2400001.ts\n#EXT-X-ENDLIST\n"
    )
    assert master_playlist_text([rung], ["/p/1/2/00/20240.m3u8"]) == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=300000,AVERAGE-BANDWIDTH=250000,RESOLUTION=320x240,"
        'CODECS="avc1.64001e,mp4a.40.2"\n/p/1/2/00/20240.m3u8\n'
    )
    with pytest.raises(ValueError):
        rung_playlist_text(rung, ["/only-one"], 4)
