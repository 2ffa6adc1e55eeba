"""The video side of the transformer on real ffmpeg: validation and every rejection, rungs
never above the source (portrait too), 4 s segments that decode as H.264 + AAC at the
profile and level their CODECS string claims, and a poster and segments with no metadata."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from pathlib import Path

import pytest

from common.photo import Format
from tests.transformer import videos
from tests.transformer.videos import PLACE_BYTES
from transformer.errors import Rejected, TranscodeFailed
from transformer.hls import codecs_string, h264_level, rung_sizes
from transformer.limits import MediaLimits
from transformer.video import VideoLadder, transcode_video
from transformer.video_probe import VideoInfo, frame_rate_and_count, probe_video, run_tool

LIMITS = MediaLimits()


def test_rungs_never_exceed_the_source() -> None:
    assert rung_sizes(1920, 1080) == [
        (240, 426, 240), (480, 854, 480), (720, 1280, 720), (1080, 1920, 1080)
    ]  # fmt: skip
    assert rung_sizes(1080, 1920) == [
        (240, 240, 426), (480, 480, 854), (720, 720, 1280), (1080, 1080, 1920)
    ]  # fmt: skip
    assert rung_sizes(640, 480) == [(240, 320, 240), (480, 640, 480)]
    assert rung_sizes(720, 1280) == [(240, 240, 426), (480, 480, 854), (720, 720, 1280)]
    assert rung_sizes(1000, 700) == [(240, 342, 240), (480, 686, 480)]
    assert rung_sizes(160, 120) == [(240, 160, 120)]  # one rung, at its own size
    assert rung_sizes(161, 121) == [(240, 160, 120)]  # evened down, never up


def test_levels_hold_each_rung_at_30_fps() -> None:
    assert h264_level(426, 240, 30, 306_720) == ("3.0", 30)
    assert h264_level(854, 480, 30, 1_229_760) == ("3.1", 31)  # 1620 MBs x 30 > 40500/s
    assert h264_level(1280, 720, 30, 2_764_800) == ("3.1", 31)
    assert h264_level(1920, 1080, 30, 6_220_800) == ("4.0", 40)
    assert h264_level(1080, 1920, 30, 6_220_800) == ("4.0", 40)
    assert h264_level(4096, 64, 30, 786_432) == ("4.0", 40)  # 256 MBs wide: A.3.1's sqrt
    assert h264_level(1920, 1080, 60, 6_220_800) == ("4.2", 42)
    assert codecs_string(31, audio=True) == "avc1.64001f,mp4a.40.2"
    assert codecs_string(40, audio=False) == "avc1.640028"


async def _check_rung_outputs(ladder: VideoLadder, *, audio: bool) -> None:
    """Every segment decodes, as H.264 High at the level its CODECS claims (+ AAC when the
    source had audio), at the rung's frame size; no output carries the location."""
    assert not any(PLACE_BYTES in b for b in (ladder.poster_jpeg, ladder.poster_webp))
    for rung in ladder.rungs:
        assert rung.codecs == codecs_string(int(rung.codecs[9:11], 16), audio=audio)
        for segment in rung.segments:
            assert PLACE_BYTES not in segment.read_bytes()
            found = await videos.streams(segment)
            video = [s for s in found if s["codec_type"] == "video"]
            assert [(s["codec_name"], s["profile"], s["width"], s["height"]) for s in video] == [
                ("h264", "High", rung.width, rung.frame_height)
            ]
            assert f"{video[0]['level']:02x}" == rung.codecs[9:11]
            audios = [s["codec_name"] for s in found if s["codec_type"] == "audio"]
            assert audios == (["aac"] if audio else [])
            await videos.decodes(segment)
        # Bandwidths are measured: the average is exactly the bytes over the duration.
        total_bits = sum(p.stat().st_size for p in rung.segments) * 8
        assert rung.average_bandwidth_bps == math.ceil(total_bits / sum(rung.durations_s))
        assert rung.bandwidth_bps >= rung.average_bandwidth_bps > 0


def _poster_has_no_metadata(ladder: VideoLadder) -> None:
    jpeg, webp = ladder.poster_jpeg, ladder.poster_webp
    assert jpeg.startswith(b"\xff\xd8\xff") and webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    for marker in (b"\xff\xe1", b"Exif", b"http://ns.adobe.com/xap", b"ICC_PROFILE"):
        assert marker not in jpeg
    assert webp[12:16] in (b"VP8 ", b"VP8L")  # simple format: no VP8X, so no EXIF/XMP chunk


async def test_an_mp4_with_sound_becomes_a_poster_and_two_rungs(tmp_path: Path) -> None:
    source = await videos.clip(tmp_path / "in.mp4", seconds=9, size="640x480", rate=12)
    info = await probe_video(source, LIMITS)
    assert info == VideoInfo(Format.MP4, 640, 480, info.duration_s, True, "h264",
                             source.stat().st_size)  # fmt: skip
    assert 8.9 < info.duration_s < 9.2
    started = time.monotonic()
    ladder = await transcode_video(source, tmp_path / "out", info)
    elapsed_s = time.monotonic() - started
    assert [(r.height, r.width, r.frame_height) for r in ladder.rungs] == [
        (240, 320, 240), (480, 640, 480)
    ]  # fmt: skip
    # 640x480 at 30 fps is 36000 macroblocks/s: level 3.0 holds it.
    assert [r.codecs for r in ladder.rungs] == ["avc1.64001e,mp4a.40.2"] * 2
    for rung in ladder.rungs:  # cut every 4 s: 4 + 4 + 1
        assert [round(d, 2) for d in rung.durations_s] == [4.0, 4.0, 1.0]
        assert all(p.parent == tmp_path / "out" / "hls" / str(rung.height) for p in rung.segments)
    assert ladder.target_duration_s == 4
    assert (ladder.poster_width, ladder.poster_height) == (640, 480)
    _poster_has_no_metadata(ladder)
    await _check_rung_outputs(ladder, audio=True)
    assert elapsed_s < 20, f"two rungs of a 9 s VGA clip took {elapsed_s:.1f} s"


async def test_a_rotated_portrait_mov_keeps_its_orientation(tmp_path: Path) -> None:
    # Stored landscape 1280x720 with a 90 degree display matrix: a phone's portrait clip.
    source = await videos.clip(
        tmp_path / "in.mov", seconds=2, size="1280x720", audio=False, rotate=90
    )
    info = await probe_video(source, LIMITS)
    assert (info.fmt, info.width, info.height, info.has_audio) == (Format.MOV, 720, 1280, False)
    ladder = await transcode_video(source, tmp_path / "out", info)
    assert [(r.height, r.width, r.frame_height) for r in ladder.rungs] == [
        (240, 240, 426), (480, 480, 854), (720, 720, 1280)
    ]  # fmt: skip
    assert [len(r.segments) for r in ladder.rungs] == [1, 1, 1]
    assert ladder.target_duration_s == 2
    assert (ladder.poster_width, ladder.poster_height) == (608, 1080)
    _poster_has_no_metadata(ladder)
    await _check_rung_outputs(ladder, audio=False)


async def test_a_1080p_portrait_clip_gets_all_four_rungs(tmp_path: Path) -> None:
    source = await videos.clip(tmp_path / "in.mp4", seconds=2, size="1080x1920", audio=True)
    info = await probe_video(source, LIMITS)
    assert (info.width, info.height) == (1080, 1920)
    ladder = await transcode_video(source, tmp_path / "out", info)
    assert [(r.height, r.width, r.frame_height) for r in ladder.rungs] == [
        (240, 240, 426), (480, 480, 854), (720, 720, 1280), (1080, 1080, 1920)
    ]  # fmt: skip
    assert ladder.rungs[-1].codecs == "avc1.640028,mp4a.40.2"
    assert (ladder.poster_width, ladder.poster_height) == (608, 1080)
    await _check_rung_outputs(ladder, audio=True)


async def test_a_source_under_240_lines_gets_one_rung_at_its_own_size(tmp_path: Path) -> None:
    source = await videos.clip(tmp_path / "in.mp4", seconds=2, size="160x120")
    ladder = await transcode_video(source, tmp_path / "out", await probe_video(source, LIMITS))
    assert [(r.height, r.width, r.frame_height) for r in ladder.rungs] == [(240, 160, 120)]
    assert (ladder.poster_width, ladder.poster_height) == (160, 120)
    await _check_rung_outputs(ladder, audio=True)


async def test_non_square_pixels_are_measured_as_displayed(tmp_path: Path) -> None:
    info = await probe_video(await videos.anamorphic(tmp_path / "dvd.mp4"), LIMITS)
    assert (info.width, info.height, info.has_audio) == (853, 480, False)


async def _rejected(path: Path, limits: MediaLimits = LIMITS) -> tuple[str, int]:
    with pytest.raises(Rejected) as got:
        await probe_video(path, limits)
    message = got.value.message
    assert message and "\n" not in message and len(message) < 200
    return got.value.code, got.value.status


async def test_a_truncated_mp4_that_probes_fine_is_rejected(tmp_path: Path) -> None:
    source = await videos.clip(tmp_path / "in.mp4", seconds=3, size="320x240", faststart=True)
    data = source.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "the index should come first"
    for fraction in (0.5, 0.9, 0.99):
        cut = tmp_path / f"cut{fraction}.mp4"
        cut.write_bytes(data[: int(len(data) * fraction)])
        # ffprobe alone is fooled: the index still promises all 3 s.
        found = await videos.streams(cut)
        assert [s["codec_name"] for s in found] == ["h264", "aac"]
        assert await _rejected(cut) == ("corrupt_file", 422), fraction
    assert (await probe_video(source, LIMITS)).duration_s > 2.9  # the whole file passes


async def test_rejections(tmp_path: Path) -> None:
    good = await videos.clip(tmp_path / "good.mp4", seconds=3, size="320x240")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(good.read_bytes()[:32] + bytes(range(256)) * 80)
    without_index = tmp_path / "no-moov.mp4"  # the index (at the end) cut off
    without_index.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_mp4 = tmp_path / "clip.mkv"
    await videos.run("ffmpeg", "-v", "error", "-i", str(good), "-c", "copy", str(not_mp4))
    tiny = await videos.clip(tmp_path / "tiny.mp4", seconds=1, size="48x48", audio=False)
    huge = await videos.clip(tmp_path / "huge.mp4", seconds=0.1, size="4096x2400", audio=False)
    assert await _rejected(garbage) == ("corrupt_file", 422)
    assert await _rejected(without_index) == ("corrupt_file", 422)
    assert await _rejected(await videos.audio_only(tmp_path / "a.m4a")) == ("corrupt_file", 422)
    cover = await videos.audio_only(tmp_path / "cover.m4a", cover_art=True)
    assert "mjpeg" in [s["codec_name"] for s in await videos.streams(cover)]
    assert await _rejected(cover) == ("corrupt_file", 422)
    assert await _rejected(not_mp4) == ("unsupported_format", 415)
    assert await _rejected(tiny) == ("image_too_small", 422)
    assert await _rejected(huge) == ("too_many_pixels", 422)
    assert await _rejected(good, MediaLimits(video_duration_s_max=2.0)) == ("video_too_long", 422)
    assert await _rejected(good, MediaLimits(video_bytes_max=1000)) == ("file_too_large", 413)
    assert await _rejected(good, MediaLimits(video_side_px_max=300)) == ("image_too_large", 422)
    assert (await probe_video(good, MediaLimits(video_side_px_max=320))).width == 320


async def test_our_own_faults_are_transcode_failures(tmp_path: Path) -> None:
    good = await videos.clip(tmp_path / "good.mp4", seconds=1, size="320x240", audio=False)
    with pytest.raises(TranscodeFailed, match="cannot run"):
        await probe_video(good, LIMITS, ffprobe=str(tmp_path / "no-such-ffprobe"))
    with pytest.raises(TranscodeFailed, match="cannot read"):
        await probe_video(tmp_path / "gone.mp4", LIMITS)
    info = await probe_video(good, LIMITS)
    # ffmpeg's own error, by its last line: there is no audio stream to map.
    lying = VideoInfo(Format.MP4, 320, 240, info.duration_s, True, "h264", info.size_bytes)
    with pytest.raises(TranscodeFailed, match=r"ffmpeg: .*0:a:0.* matches no streams"):
        await transcode_video(good, tmp_path / "out", lying)
    with pytest.raises(TranscodeFailed, match="took longer than"):
        await transcode_video(good, tmp_path / "out2", info, timeout_s=0.001)


_PID_THEN_SLEEP = (
    "import os, pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text(str(os.getpid())); "
    "time.sleep(60)"
)


async def test_a_tool_past_its_timeout_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await run_tool([sys.executable, "-c", _PID_THEN_SLEEP, str(marker)], timeout_s=2.0)
    assert time.monotonic() - started < 10.0
    # By the time run_tool gives up the tool is dead and reaped: no process, no zombie.
    pid = int(await asyncio.to_thread(marker.read_text))
    alive = await asyncio.to_thread(os.path.exists, f"/proc/{pid}")
    assert not alive, "the tool ran on after its timeout"
    # stderr is kept bounded, to its tail: the last line survives a flood.
    flood = "yes x | head -c 1000000 >&2; echo 'the last line' >&2; exit 3"
    result = await run_tool(["sh", "-c", flood], timeout_s=30)
    assert (result.returncode, result.last_line()) == (3, "the last line")
    assert len(result.stderr_tail) <= 16 * 1024


async def test_frame_rate_and_frame_count_limits(tmp_path: Path) -> None:
    at_rate = await videos.clip(tmp_path / "60.mp4", seconds=1, size="160x120", rate=60)
    assert (await probe_video(at_rate, LIMITS)).duration_s > 0.9  # at the limit: accepted
    fast = await videos.clip(tmp_path / "61.mp4", seconds=1, size="160x120", rate=61)
    with pytest.raises(Rejected) as got:
        await probe_video(fast, LIMITS)
    assert (got.value.code, got.value.status) == ("frame_rate_too_high", 422)
    assert "61 frames per second" in got.value.message
    assert "video_frame_rate_max" in got.value.message
    # 6 s at 10 fps: 60 frames
    clip = await videos.clip(tmp_path / "clip.mp4", seconds=6, size="160x120", rate=10)
    assert (await videos.streams(clip))[0]["nb_frames"] == "60"
    at_count = MediaLimits(video_frame_rate_max=10.0, video_frames_max=60)
    assert (await probe_video(clip, at_count)).duration_s > 5.9
    over = MediaLimits(video_frame_rate_max=10.0, video_frames_max=59)
    with pytest.raises(Rejected) as got:
        await probe_video(clip, over)
    assert (got.value.code, got.value.status) == ("too_many_frames", 422)
    assert "60 frames" in got.value.message and "video_frames_max" in got.value.message
    assert await _rejected(clip, MediaLimits(video_frame_rate_max=9.5)) == (
        "frame_rate_too_high",
        422,
    )


def test_the_frame_rate_is_the_average_and_the_count_can_be_estimated() -> None:
    assert frame_rate_and_count({"avg_frame_rate": "30000/1001", "nb_frames": "300"}, 10.01) == (
        30000 / 1001,
        300,
    )
    # no count: duration x rate; no average: the timestamps' rate
    assert frame_rate_and_count({"avg_frame_rate": "0/0", "r_frame_rate": "25/1"}, 4.0) == (
        25.0,
        100,
    )
    # no rate at all: the count over the duration
    assert frame_rate_and_count({"nb_frames": "90", "avg_frame_rate": "0/0"}, 3.0) == (30.0, 90)
    for unusable in ({}, {"avg_frame_rate": "N/A", "r_frame_rate": "1/0"}):
        with pytest.raises(ValueError, match="no frame rate"):
            frame_rate_and_count(unusable, 2.0)


def test_the_frame_limits_are_validated() -> None:
    assert MediaLimits().video_frames_max == 90 * 60
    for bad in (
        {"video_frame_rate_max": 0.0},
        {"video_frame_rate_max": float("nan")},
        {"video_frames_max": 0},
        {"video_frame_rate_max": 120.0, "video_frames_max": 119},  # not a second at 120 fps
    ):
        with pytest.raises(ValueError, match="video_frame"):
            MediaLimits(**bad)  # type: ignore[arg-type]
    assert MediaLimits(video_frame_rate_max=120.0, video_frames_max=120).video_frames_max == 120
