"""common/photo.py: alt keys, canonical photo URLs and Accept negotiation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import photo
from common.photo import (
    Format as F,
)
from common.photo import (
    PhotoPathError,
    PhotoRef,
    alt_key,
    formats_for_accept,
    parse_photo_path,
    photo_path,
    split_alt,
)

COOKIE = 0x0123456789ABCDEF

renditions = st.integers(0, photo.RENDITION_MAX)
fmts = st.integers(0, photo.FMT_MAX)
known_fmts = st.sampled_from(sorted(photo.CONTENT_TYPES))
vids = st.integers(photo.VOLUME_ID_MIN, photo.VOLUME_ID_MAX)
keys = st.integers(0, photo.KEY_MAX)
cookies = st.integers(0, photo.COOKIE_MAX)


def test_alt_key_layout_and_spec_codes() -> None:
    assert alt_key(0, F.JPEG) == 1
    assert alt_key(3, F.AVIF) == 3 << 8 | 3
    assert split_alt(0x0000_0502) == (5, F.WEBP)
    # The spec's codes are stored data: they must never move.
    assert [photo.CONTENT_TYPES[i] for i in range(11)] == [
        "application/octet-stream",
        "image/jpeg",
        "image/webp",
        "image/avif",
        "image/png",
        "image/heic",
        "image/gif",
        "video/mp4",
        "video/quicktime",
        "application/vnd.apple.mpegurl",
        "video/mp2t",
    ]
    assert photo.content_type(200) == "application/octet-stream"


@given(renditions, fmts)
def test_alt_key_round_trips(rendition: int, fmt: int) -> None:
    alt = alt_key(rendition, fmt)
    assert 0 <= alt <= photo.ALT_KEY_MAX
    assert split_alt(alt) == (rendition, fmt)


@pytest.mark.parametrize(("rendition", "fmt"), [(-1, 0), (2**24, 0), (0, 256), (0, -1)])
def test_alt_key_rejects_out_of_range(rendition: int, fmt: int) -> None:
    with pytest.raises(ValueError):
        alt_key(rendition, fmt)


def test_split_alt_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        split_alt(2**32)


@given(vids, keys, cookies, renditions, st.none() | known_fmts)
def test_photo_path_round_trips(
    vid: int, key: int, cookie: int, rendition: int, fmt: int | None
) -> None:
    path = photo_path(vid, key, cookie, rendition, fmt)
    ref = parse_photo_path(path)
    assert ref == PhotoRef(vid, key, cookie, rendition, fmt)
    assert photo_path(ref.volume_id, ref.key, ref.cookie, ref.rendition, ref.fmt) == path


def test_photo_path_shapes() -> None:
    assert photo_path(1, 42, COOKIE, 0) == "/p/1/42/0123456789abcdef/0"
    assert photo_path(7, 42, 5, 3, F.JPEG) == "/p/7/42/0000000000000005/3.jpg"
    assert parse_photo_path("/p/7/42/0000000000000005/3.m3u8").fmt == F.M3U8
    assert parse_photo_path("/p/7/42/0000000000000005/3.bin").fmt == F.UNKNOWN
    assert parse_photo_path("/p/7/42/0000000000000005/3.webp").alt_key(F.WEBP) == 3 << 8 | 2


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/p/1/2/0123456789abcdef", "a photo URL is"),
        ("/p/1/2/0123456789abcdef/0/", "a photo URL is"),
        ("/x/1/2/0123456789abcdef/0", "a photo URL is"),
        ("p/1/2/0123456789abcdef/0", "a photo URL is"),
        ("/p/01/2/0123456789abcdef/0", "volume must be a decimal"),
        ("/p/0/2/0123456789abcdef/0", "volume must be within"),
        ("/p/4294967296/2/0123456789abcdef/0", "volume must be within"),
        ("/p/+1/2/0123456789abcdef/0", "volume must be a decimal"),
        ("/p/\u0661/2/0123456789abcdef/0", "volume must be a decimal"),
        ("/p/1/007/0123456789abcdef/0", "key must be a decimal"),
        ("/p/1/18446744073709551616/0123456789abcdef/0", "key must be within"),
        ("/p/1/2/0123456789ABCDEF/0", "cookie must be 16 lower-case hex"),
        ("/p/1/2/123456789abcdef/0", "cookie must be 16 lower-case hex"),
        ("/p/1/2/0123456789abcdefg/0", "cookie must be 16 lower-case hex"),
        ("/p/1/2/0123456789abcdef/00", "rendition must be a decimal"),
        ("/p/1/2/0123456789abcdef/16777216", "rendition must be within"),
        ("/p/1/2/0123456789abcdef/0.jpeg", "unknown extension 'jpeg'"),
        ("/p/1/2/0123456789abcdef/0.JPG", "unknown extension 'JPG'"),
        ("/p/1/2/0123456789abcdef/0.", "unknown extension ''"),
        ("/p/1/2/0123456789abcdef/.jpg", "rendition must be a decimal"),
    ],
)
def test_parse_rejects_non_canonical_paths(path: str, message: str) -> None:
    with pytest.raises(PhotoPathError, match=message):
        parse_photo_path(path)


@given(st.text(max_size=60))
def test_parse_accepts_only_what_photo_path_writes(path: str) -> None:
    try:
        ref = parse_photo_path(path)
    except PhotoPathError:
        return
    assert photo_path(ref.volume_id, ref.key, ref.cookie, ref.rendition, ref.fmt) == path


@pytest.mark.parametrize(
    ("vid", "key", "cookie", "rendition", "fmt"),
    [(0, 1, 1, 0, None), (1, -1, 1, 0, None), (1, 1, 2**64, 0, None), (1, 1, 1, 2**24, None)],
)
def test_photo_path_rejects_out_of_range(
    vid: int, key: int, cookie: int, rendition: int, fmt: int | None
) -> None:
    with pytest.raises(ValueError):
        photo_path(vid, key, cookie, rendition, fmt)


def test_photo_path_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="no URL extension"):
        photo_path(1, 1, 1, 0, 99)


CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
OLD_SAFARI = "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"
FIREFOX_OLD = "image/webp,*/*"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, photo.NEGOTIATED_FORMATS),
        ("", photo.NEGOTIATED_FORMATS),
        (CHROME, (F.AVIF, F.WEBP, F.JPEG, F.PNG, F.GIF, F.HEIC)),
        # Safari without avif/webp support sends image/*: never give it those first.
        (OLD_SAFARI, (F.PNG, F.JPEG, F.GIF, F.AVIF, F.WEBP, F.HEIC)),
        (FIREFOX_OLD, (F.WEBP, F.JPEG, F.PNG, F.GIF, F.AVIF, F.HEIC)),
        ("image/jpeg", (F.JPEG,)),
        ("image/webp;q=0.5, image/avif;q=0.9, image/jpeg;q=0.1", (F.AVIF, F.WEBP, F.JPEG)),
        # q honoured among named formats; q=0 excludes even under a wildcard.
        ("image/*, image/avif;q=0", (F.JPEG, F.PNG, F.GIF, F.WEBP, F.HEIC)),
        ("*/*;q=0.1, image/png", (F.PNG, F.JPEG, F.GIF, F.AVIF, F.WEBP, F.HEIC)),
        ("text/html", ()),
        ("*/*;q=0", ()),
        ("IMAGE/WEBP ; Q=0.7 ; foo=bar", (F.WEBP,)),
        ("image/webp;q=abc", (F.WEBP,)),  # malformed q: lenient
        ("image/webp;q=nan", ()),
        ("garbage, ;;, image/gif", (F.GIF,)),
    ],
)
def test_formats_for_accept(accept: str | None, expected: tuple[int, ...]) -> None:
    assert formats_for_accept(accept) == expected


def test_formats_for_accept_only_among_available() -> None:
    assert formats_for_accept(CHROME, available=(F.JPEG, F.WEBP)) == (F.JPEG, F.WEBP)
    assert formats_for_accept(CHROME, available=(F.WEBP, F.JPEG)) == (F.WEBP, F.JPEG)
    assert formats_for_accept("image/avif", available=(F.JPEG,)) == ()


def test_accept_limits_bound_the_work() -> None:
    huge = ",".join(["text/plain"] * 10_000) + ",image/jpeg"
    assert formats_for_accept(huge) == ()  # beyond ACCEPT_RANGES_MAX / ACCEPT_BYTES_MAX


@given(st.text(max_size=200))
def test_formats_for_accept_never_fails(accept: str) -> None:
    result = formats_for_accept(accept)
    assert set(result) <= set(photo.NEGOTIATED_FORMATS)
    assert len(set(result)) == len(result)
