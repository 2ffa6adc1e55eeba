"""HLS playlists and bandwidths: exact text for a given rung and URLs, the RFC 8216 peak and
target duration rules, and a real client (ffmpeg's HLS demuxer) playing a rendered master
playlist through every rung to the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.transformer import videos
from transformer.hls import (
    Rung,
    master_playlist_text,
    peak_bandwidth_bps,
    rung_playlist_text,
    target_duration_s,
)
from transformer.limits import MediaLimits
from transformer.video import transcode_video
from transformer.video_probe import probe_video

COOKIE = "00ab00ab00ab00ab"
RUNG = Rung(
    height=240,
    width=320,
    frame_height=240,
    bandwidth_bps=310_000,
    average_bandwidth_bps=250_000,
    codecs="avc1.64001e,mp4a.40.2",
    segments=(Path("seg_00000.ts"), Path("seg_00001.ts")),
    durations_s=(4.0, 1.5),
)


def test_the_rung_playlist_is_exact() -> None:
    urls = [f"/p/3/123/{COOKIE}/2400000.ts", f"/p/3/123/{COOKIE}/2400001.ts"]
    assert rung_playlist_text(RUNG, urls, 4) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:4\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXTINF:4.000,\n"
        f"/p/3/123/{COOKIE}/2400000.ts\n"
        "#EXTINF:1.500,\n"
        f"/p/3/123/{COOKIE}/2400001.ts\n"
        "#EXT-X-ENDLIST\n"
    )
    with pytest.raises(ValueError, match="one URL per segment"):
        rung_playlist_text(RUNG, urls[:1], 4)


def test_the_master_playlist_is_exact() -> None:
    portrait = Rung(480, 480, 854, 1_200_000, 900_000, "avc1.64001f", (), ())
    urls = [f"/p/3/123/{COOKIE}/20240.m3u8", f"/p/3/123/{COOKIE}/20480.m3u8"]
    assert master_playlist_text([RUNG, portrait], urls) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=310000,AVERAGE-BANDWIDTH=250000,RESOLUTION=320x240,"
        'CODECS="avc1.64001e,mp4a.40.2"\n'
        f"/p/3/123/{COOKIE}/20240.m3u8\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=1200000,AVERAGE-BANDWIDTH=900000,RESOLUTION=480x854,"
        'CODECS="avc1.64001f"\n'
        f"/p/3/123/{COOKIE}/20480.m3u8\n"
    )
    with pytest.raises(ValueError, match="one URL per rung"):
        master_playlist_text([RUNG], urls)


def test_peak_bandwidth_is_the_busiest_run_of_half_to_one_and_a_half_targets() -> None:
    # Runs of 2..6 s with a 4 s target: the 1 s tail counts only with the segment before.
    assert peak_bandwidth_bps([1000, 1000, 100], [4.0, 4.0, 1.0], 4) == 2000
    assert peak_bandwidth_bps([1000, 1000, 900], [4.0, 4.0, 1.0], 4) == 3040  # 15200 b / 5 s
    assert peak_bandwidth_bps([1000, 3000], [4.0, 4.0], 4) == 6000
    assert peak_bandwidth_bps([500], [1.0], 4) == 4000  # shorter than half a target: all
    assert peak_bandwidth_bps([1001], [3.0], 4) == 2670  # rounded up
    with pytest.raises(ValueError):
        peak_bandwidth_bps([1], [], 4)


def test_target_duration_rounds_to_the_nearest_second() -> None:
    assert target_duration_s([4.0, 4.004, 1.0]) == 4  # a 29.97 fps cut is still "4"
    assert target_duration_s([4.5]) == 5
    assert target_duration_s([0.2]) == 1
    assert target_duration_s([]) == 1


async def test_a_stock_hls_client_plays_the_rendered_playlists(tmp_path: Path) -> None:
    source = await videos.clip(tmp_path / "in.mov", seconds=6, size="640x480", rate=10)
    info = await probe_video(source, MediaLimits())
    ladder = await transcode_video(source, tmp_path / "out", info)
    assert [r.height for r in ladder.rungs] == [240, 480]
    # Rendered with absolute file paths standing in for the photo URLs, from another
    # directory, so nothing resolves relative to ffmpeg's own playlists.
    served = tmp_path / "served"
    served.mkdir()
    rung_paths = []
    for rung in ladder.rungs:
        assert len(rung.segments) == 2
        text = rung_playlist_text(rung, [str(s) for s in rung.segments], ladder.target_duration_s)
        path = served / f"{20000 + rung.height}.m3u8"
        path.write_text(text)
        rung_paths.append(str(path))
    master = served / "1.m3u8"
    master.write_text(master_playlist_text(ladder.rungs, rung_paths))

    # The client reads the master, every rung playlist and every segment, and decodes all.
    await videos.decodes(master)
    counted = await videos.run(
        "ffprobe", "-v", "error", "-count_frames", "-print_format", "json",
        "-show_entries", "stream=codec_type,width,height,nb_read_frames", str(master),
    )  # fmt: skip
    found = json.loads(counted)["streams"]
    frames = {
        (s["width"], s["height"]): int(s["nb_read_frames"])
        for s in found
        if s["codec_type"] == "video"
    }
    assert frames == {(320, 240): 60, (640, 480): 60}  # 6 s at 10 fps, both rungs
    assert sum(s["codec_type"] == "audio" for s in found) == 2
