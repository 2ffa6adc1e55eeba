"""The pure parts of a re-key: the order variants are rewritten in, and playlists naming
their rungs' and segments' new URLs."""

from __future__ import annotations

from common.photo import Format
from transformer import rekey
from transformer import variants as v
from transformer.media_store import VariantRow

KEY = 77


def _row(rendition: int, fmt: Format, vid: int = 3) -> VariantRow:
    return VariantRow(KEY, rendition, int(fmt), vid, 10, 1, 1)


def test_playlists_come_after_what_they_name_and_the_original_never() -> None:
    rows = [
        _row(v.ORIGINAL, Format.MP4),
        _row(v.MASTER_PLAYLIST, Format.M3U8),
        _row(v.POSTER, Format.JPEG),
        _row(v.rung_playlist(240), Format.M3U8),
        _row(v.segment(240, 0), Format.TS),
        _row(v.segment(240, 1), Format.TS),
        _row(v.rung_playlist(480), Format.M3U8),
        _row(v.segment(480, 0), Format.TS),
    ]
    ordered = rekey.order(rows)
    position = {r.rendition: i for i, r in enumerate(ordered)}
    assert v.ORIGINAL not in position
    for height, segments in ((240, 2), (480, 1)):
        for i in range(segments):
            assert position[v.segment(height, i)] < position[v.rung_playlist(height)]
        assert position[v.rung_playlist(height)] < position[v.MASTER_PLAYLIST]
    assert ordered[-1].rendition == v.MASTER_PLAYLIST


def test_a_playlist_names_the_new_urls_and_keeps_everything_else() -> None:
    old_seg = rekey.url_path(_row(v.segment(240, 0), Format.TS), KEY, 0xAAAA)
    new_seg = rekey.url_path(_row(v.segment(240, 0), Format.TS, vid=9), KEY, 0xBBBB)
    other = rekey.url_path(_row(v.segment(240, 1), Format.TS), KEY, 0xCCCC)
    text = (
        f"#EXTM3U\r\n#EXT-X-TARGETDURATION:4\r\n#EXTINF:4.000,\r\n{old_seg}\r\n"
        f"#EXTINF:2.000,\r\n{other}\r\n#EXT-X-ENDLIST\r\n"
    ).encode()
    out = rekey.rewrite_playlist(text, {old_seg: new_seg})
    assert out == text.replace(old_seg.encode(), new_seg.encode())
    assert out.count(b"\r\n") == text.count(b"\r\n")
    assert rekey.rewrite_playlist(text, {}) == text
    # A comment or tag that happens to contain a path is not a URI line: untouched.
    tagged = f"#EXT-X-COMMENT:{old_seg}\n".encode()
    assert rekey.rewrite_playlist(tagged, {old_seg: new_seg}) == tagged
