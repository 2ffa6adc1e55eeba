"""The container check of HEIC: HEIF items built by hand (heif_files.py) and broken in one
place each (a box or largesize past the end, an extent past the file or the idat, a missing
iloc or pitm, a grid tile missing) are refused as corrupt_file by the check itself, and the
same files whole, like pillow-heif's own, pass and decode."""

from __future__ import annotations

import struct
from dataclasses import replace

import pillow_heif
import pytest

from common.photo import Format
from tests.transformer import heif_files, images
from tests.transformer.heif_files import EXIF_ID, GRID_ID, Heif, box, build, with_item
from transformer.byte_source import BytesSource
from transformer.container import check_container
from transformer.errors import Rejected
from transformer.image_probe import probe_image
from transformer.limits import MediaLimits

LIMITS = MediaLimits()


def check(data: bytes, limits: MediaLimits = LIMITS) -> None:
    check_container(BytesSource(data), Format.HEIC, limits)


def broken(data: bytes | Heif, limits: MediaLimits = LIMITS) -> str:
    """The check's message for a file it must refuse; the whole probe refuses it too."""
    if isinstance(data, Heif):
        data = build(data)
    with pytest.raises(Rejected) as got:
        check(data, limits)
    assert (got.value.code, got.value.status) == ("corrupt_file", 422)
    message = got.value.message
    assert len(message) < 200 and "\n" not in message
    with pytest.raises(Rejected) as probed:
        probe_image(data, limits)
    assert probed.value.code == "corrupt_file"
    return message


VALID = {
    "single": build(heif_files.single()),
    "single-iloc-v0": build(replace(heif_files.single(), iloc_version=0)),
    "grid": build(heif_files.grid()),
    "grid-iloc-v2": build(replace(heif_files.grid(), iloc_version=2)),
    "grid-largesize-mdat": build(replace(heif_files.grid(), mdat_large=True)),
    "grid-3x1": build(heif_files.grid(3, 1, (96, 64))),
    "pillow-heif": images.heic(320, 240),
    "pillow-heif-alpha": images.heic(320, 240, alpha=True),
    "pillow-heif-p3": images.p3_heic(200, 100),
}


@pytest.mark.parametrize("data", VALID.values(), ids=VALID.keys())
def test_valid_heics_pass_and_decode(data: bytes) -> None:
    check(data)
    info = probe_image(data, LIMITS)  # the decoders agree the file is whole
    assert info.fmt == Format.HEIC and info.size_bytes == len(data)


def test_a_built_grid_shows_its_tiles_in_place() -> None:
    info = probe_image(build(heif_files.grid()), LIMITS)
    assert (info.width, info.height) == (256, 192)
    pixels = pillow_heif.open_heif(build(heif_files.grid())).to_pillow()
    red = pixels.getpixel((4, 4))  # the scene's marker, in the top-left tile
    assert isinstance(red, tuple) and red[0] > 200 and red[1] < 60


def test_a_heic_cut_anywhere_is_refused() -> None:
    data = build(heif_files.grid())
    for cut in (*range(40, len(data), 97), len(data) - 1):
        broken(data[:cut])


def test_a_box_past_the_end_is_refused() -> None:
    data = build(heif_files.grid())
    assert "box free runs past the end of the file" in broken(data + box(b"free", size=9))
    mdat = data.index(b"mdat") - 4
    longer = data[:mdat] + struct.pack(">I", len(data) - mdat + 1) + data[mdat + 4 :]
    assert "box mdat runs past the end of the file" in broken(longer)
    assert "box header runs past" in broken(data + b"\0\0\0\x10fr")
    assert "shorter than its own header" in broken(data + struct.pack(">I", 7) + b"free")


def test_a_largesize_past_the_end_is_refused() -> None:
    data = build(replace(heif_files.grid(), mdat_large=True))
    mdat = data.index(b"mdat") - 4
    assert data[mdat : mdat + 4] == struct.pack(">I", 1)
    (large,) = struct.unpack_from(">Q", data, mdat + 8)
    assert large == len(data) - mdat
    past = data[: mdat + 8] + struct.pack(">Q", large + 1) + data[mdat + 16 :]
    assert "box mdat runs past the end of the file" in broken(past)
    huge = data[: mdat + 8] + struct.pack(">Q", 2**64 - 1) + data[mdat + 16 :]
    assert "box mdat runs past" in broken(huge)
    assert "box header runs past" in broken(data[: mdat + 12])  # cut inside the largesize


def test_size_zero_means_the_rest_of_the_file_at_the_top_level_only() -> None:
    data = build(heif_files.grid())
    mdat = data.index(b"mdat") - 4
    check(data[:mdat] + bytes(4) + data[mdat + 4 :])  # the last box: to the end of the file
    ispe = data.index(b"ispe") - 4
    nested = data[:ispe] + bytes(4) + data[ispe + 4 :]
    assert "claims the rest of the file" in broken(nested)


def test_an_item_extent_past_the_file_is_refused() -> None:
    single = heif_files.single()
    # the Exif item's data ends the file: one byte longer is past it
    assert "HEIF item 2 lies past the end of the file" in broken(
        with_item(single, 2, extent_skew=(0, 1))
    )
    assert "HEIF item 1 lies past the end of the file" in broken(
        with_item(single, 1, extent_skew=(10**6, 0))
    )
    grid = heif_files.grid()
    assert "HEIF item 4 lies past the end of the file" in broken(
        with_item(grid, 4, extent_skew=(len(build(grid)), 0))
    )


def test_an_idat_extent_past_the_idat_is_refused() -> None:
    grid = heif_files.grid()
    assert "HEIF item 10 lies past the end of the idat box" in broken(
        with_item(grid, GRID_ID, extent_skew=(0, 1))
    )
    assert "lies past the end of the idat box" in broken(
        with_item(grid, GRID_ID, extent_skew=(1, 0))
    )
    # construction method 1 with no idat at all
    assert "idat box there is not" in broken(with_item(heif_files.single(), 1, method=1))


@pytest.mark.parametrize("kind", [b"iloc", b"pitm", b"iinf", b"hdlr"])
def test_a_missing_meta_box_is_refused(kind: bytes) -> None:
    message = broken(replace(heif_files.grid(), without=frozenset({kind})))
    assert f"the meta box has no {kind.decode()} box" in message


def test_a_missing_grid_tile_is_refused() -> None:
    grid = heif_files.grid()
    derived, tiles = grid.dimg[0]
    assert (derived, len(tiles)) == (GRID_ID, 4)
    # a tile listed but with no data
    assert "HEIF item 3 (hvc1) has no data" in broken(replace(grid, unlocated=frozenset({3})))
    # one tile fewer than the grid's cells
    assert "2x2 cells but 3 tiles" in broken(replace(grid, dimg=((GRID_ID, tiles[:3]),)))
    assert "2x2 cells but 0 tiles" in broken(replace(grid, dimg=()))
    # a tile that is no item
    missing = replace(grid, dimg=((GRID_ID, (*tiles[:3], 99)),))
    assert "HEIF item 99, which the picture needs, is not listed" in broken(missing)
    # the grid's own description missing
    assert "item 10 (grid) has no data" in broken(replace(grid, unlocated=frozenset({GRID_ID})))


def test_items_the_picture_does_not_need_may_lack_data_but_not_lie() -> None:
    grid = heif_files.grid()
    check(build(replace(grid, unlocated=frozenset({EXIF_ID}))))
    assert "item 20 lies past the end" in broken(
        with_item(grid, EXIF_ID, extent_skew=(len(build(grid)), 0))
    )


def test_other_broken_items() -> None:
    single = heif_files.single()
    assert "construction method 2" in broken(with_item(single, 1, method=2))
    assert "does not describe a picture" in broken(replace(single, handler=b"vide"))
    assert "primary item is not in its item list" in broken(replace(single, primary=7))
    assert "iloc box has an unknown version 3" in broken(replace(single, iloc_version=3))
    data = build(single)
    assert "more than one meta" in broken(
        data + data[data.index(b"meta") - 4 : data.index(b"mdat") - 4]
    )
    assert "no meta box" in broken(data.replace(b"meta", b"mext"))
    with pytest.raises(Rejected, match="ftyp"):  # (no HEIC to the sniffing, then)
        check(data[data.index(b"meta") - 4 :])


def test_item_tables_are_bounded() -> None:
    grid = build(heif_files.grid())  # 6 items: the grid, 4 tiles, Exif
    check(grid, MediaLimits(heif_entries_max=6))
    assert "more than 5 items" in broken(grid, MediaLimits(heif_entries_max=5))
