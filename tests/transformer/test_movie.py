"""The container check of MP4 and MOV: every chunk of every track inside the file, so that a
movie cut inside its media data is refused whether its index is at the front or the back;
on ffmpeg's own files and on sample tables built by hand to lie in one place."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from common.photo import Format
from tests.transformer import videos
from tests.transformer.heif_files import box
from tests.transformer.movie_files import Track, even_track, movie
from transformer.byte_source import BytesSource
from transformer.container import check_container, check_container_file
from transformer.errors import Rejected
from transformer.limits import MediaLimits
from transformer.sniff import sniff
from transformer.video_probe import probe_video

LIMITS = MediaLimits()
MDAT = bytes(range(256)) * 16  # 4096 bytes of "samples"


def check(data: bytes, limits: MediaLimits = LIMITS) -> None:
    check_container(BytesSource(data), sniff(data[:512]), limits)


def broken(data: bytes, limits: MediaLimits = LIMITS) -> str:
    with pytest.raises(Rejected) as got:
        check(data, limits)
    assert (got.value.code, got.value.status) == ("corrupt_file", 422)
    assert len(got.value.message) < 200
    return got.value.message


def test_tables_that_fit_pass_in_every_layout() -> None:
    video = even_track(8, 4, 128)  # 8 chunks of 512 bytes: all of MDAT
    audio = replace(even_track(4, 2, 64), offsets=(3200, 3328, 3456, 3584))
    tracks = (video, audio)
    for layout in ({}, {"moov_first": True}, {"mdat_large": True}, {"ftyp": b"qt  "}):
        check(movie(tracks, MDAT, **layout))  # type: ignore[arg-type]
    check(movie(tracks, MDAT, moov_first=True, mdat_size=0))  # "to the end of the file"
    check(movie((replace(video, co64=True),), MDAT))
    for bits in (8, 16):
        check(movie((replace(video, stz2_bits=bits),), MDAT))
    small = Track(offsets=(0, 40), sizes=(3, 15, 0, 7), runs=((1, 2),))
    check(movie((replace(small, stz2_bits=4),), MDAT))
    check(movie((Track((0, 400), (), ((1, 4),), constant_size=100, sample_count=8),), MDAT))
    # runs: chunks 1-2 of 3 samples, chunk 3 on of 1; a run past the last chunk says nothing
    check(movie((Track((0, 300, 600), (100,) * 7, ((1, 3), (3, 1), (9, 5))),), MDAT))
    check(movie((Track((), (), ()),), MDAT))  # an empty track (a fragmented movie's)


def test_a_chunk_past_the_end_of_the_file_is_refused() -> None:
    video = even_track(8, 4, 128)  # the last chunk ends where mdat does
    one_byte_on = replace(video, offset_skew=(7, 1))
    assert "chunk 8 of track 1 lies past the end" in broken(
        movie((one_byte_on,), MDAT, moov_first=True)
    )
    check(movie((one_byte_on,), MDAT))  # moov follows mdat: the chunk ends inside the file
    for layout in ({}, {"co64": True}, {"stz2_bits": 16}):
        far = replace(video, offset_skew=(3, 10**6), **layout)  # type: ignore[arg-type]
        assert "chunk 4 of track 1" in broken(movie((far,), MDAT))
    # the second track's one chunk, its sample one byte too long
    tracks = (even_track(2, 1, 10), Track((4000,), (96,), ((1, 1),)))
    check(movie(tracks, MDAT, moov_first=True))
    too_long = (tracks[0], Track((4000,), (97,), ((1, 1),)))
    assert "chunk 1 of track 2" in broken(movie(too_long, MDAT, moov_first=True))


def test_a_file_cut_inside_mdat_is_refused_with_its_index_at_the_front_or_back() -> None:
    tracks = (even_track(8, 4, 128),)
    for moov_first in (True, False):
        data = movie(tracks, MDAT, moov_first=moov_first)
        for cut in (1, 500, len(MDAT) // 2):
            broken(data[:-cut])
    # mdat says "to the end of the file": only the chunk table shows what is missing
    whole = movie(tracks, MDAT, moov_first=True, mdat_size=0)
    check(whole)
    assert "lies past the end" in broken(whole[:-1])
    assert "chunk 7 of track 1 lies past the end" in broken(whole[: len(whole) - 513])


def test_broken_tables_are_refused() -> None:
    video = even_track(4, 2, 100)

    def table(track: Track) -> str:
        return broken(movie((track,), MDAT))

    assert "out of order" in table(replace(video, runs=((2, 2),)))  # the first run not at 1
    assert "out of order" in table(replace(video, runs=((1, 2), (3, 2), (3, 1))))
    assert "hold 9 samples but it sizes 8" in table(replace(video, runs=((1, 2), (4, 3))))
    assert "hold 8 samples but it sizes 7" in table(replace(video, sizes=(100,) * 7))
    assert "hold 0 samples but it sizes 8" in table(replace(video, runs=()))
    assert "hold 0 samples but it sizes 8" in table(replace(video, offsets=()))
    assert "12-bit fields" in table(replace(video, stz2_bits=12))
    assert "shorter than its fields" in table(replace(video, sample_count=1000))
    single = movie((video,), MDAT)
    assert "no single chunk offset table" in broken(single.replace(b"stco", b"stcx"))
    assert "no single sample size table" in broken(single.replace(b"stsz", b"stsx"))
    assert "no stsc box" in broken(single.replace(b"stsc", b"stsx"))
    assert "no stbl box" in broken(single.replace(b"stbl", b"stbx"))


def test_tables_are_bounded() -> None:
    data = movie((even_track(100, 1, 10),), MDAT)
    check(data, MediaLimits(mp4_table_entries_max=100))
    assert "more than 99 entries" in broken(data, MediaLimits(mp4_table_entries_max=99))


def test_a_quicktime_sound_chunk_is_checked_to_start_inside_the_file() -> None:
    # sample_size 1: stsc counts uncompressed frames, which may be more than the bytes.
    sound = Track((4000,), (), ((1, 1000),), constant_size=1, sample_count=1000)
    check(movie((sound,), MDAT, ftyp=b"qt  "))
    past = replace(sound, offset_skew=(0, 500))
    assert "lies past the end" in broken(movie((past,), MDAT, ftyp=b"qt  ", moov_first=True))


def test_the_box_tree_of_a_movie() -> None:
    tracks = (even_track(8, 4, 128),)
    data = movie(tracks, MDAT)
    classic = movie(tracks, MDAT, ftyp=b"")  # classic QuickTime: no ftyp at all
    assert sniff(classic[:512]) == Format.MOV
    check(classic)
    assert "ftyp" in broken(box(b"free", bytes(8)) + data)
    assert "ftyp" in broken(data + box(b"ftyp", b"isom", bytes(4)))
    assert "no moov box" in broken(data.replace(b"moov", b"moox"))
    assert "more than one moov" in broken(data + data[data.index(b"moov") - 4 :])
    assert "runs past the end of the file" in broken(data + box(b"free", size=100))
    assert "header runs past" in broken(data + b"\0\0\0")


async def test_ffmpegs_movies_pass(tmp_path: Path) -> None:
    made = [
        await videos.clip(tmp_path / "a.mp4", seconds=2, size="320x240"),
        await videos.clip(tmp_path / "b.mp4", seconds=2, size="320x240", faststart=True),
        await videos.clip(tmp_path / "c.mov", seconds=2, size="320x240", rotate=90),
        await videos.audio_only(tmp_path / "d.m4a", cover_art=True),
        await videos.anamorphic(tmp_path / "e.mp4"),
    ]
    for path in made:
        check_container_file(path, sniff(path.read_bytes()[:512]), LIMITS)


@pytest.mark.parametrize("faststart", [True, False], ids=["moov-first", "moov-last"])
async def test_an_ffmpeg_movie_cut_inside_mdat_is_refused(tmp_path: Path, faststart: bool) -> None:
    source = await videos.clip(tmp_path / "in.mp4", seconds=3, size="320x240", faststart=faststart)
    data = source.read_bytes()
    mdat = data.index(b"mdat") - 4
    assert (data.index(b"moov") < mdat) == faststart
    end_of_mdat = mdat + int.from_bytes(data[mdat : mdat + 4], "big")
    for cut_at in (mdat + 100, (mdat + end_of_mdat) // 2, end_of_mdat - 1):
        cut = tmp_path / f"cut-{cut_at}.mp4"
        cut.write_bytes(data[:cut_at])
        with pytest.raises(Rejected) as got:
            check_container_file(cut, Format.MP4, LIMITS)
        assert got.value.code == "corrupt_file"
        with pytest.raises(Rejected) as probed:
            await probe_video(cut, LIMITS)
        assert (probed.value.code, probed.value.status) == ("corrupt_file", 422)
    if faststart:
        # mdat rewritten to say "to the end of the file", then cut: the chunk table tells
        to_end = bytearray(data[: (mdat + end_of_mdat) // 2])
        to_end[mdat : mdat + 4] = bytes(4)
        with pytest.raises(Rejected) as got:
            check(bytes(to_end))
        assert "lies past the end of the file" in got.value.message
