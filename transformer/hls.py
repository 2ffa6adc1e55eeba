"""HLS playlists (RFC 8216) of a video ladder, rendered once every segment is a needle:
the URIs are root-relative photo URLs (`/p/{volume}/{key}/{cookie}/{rendition}.ts`), which
a player resolves against the playlist's own URL at the router."""

from __future__ import annotations

from collections.abc import Sequence

from transformer.video import Rung


def rung_playlist_text(rung: Rung, segment_urls: Sequence[str], target_duration_s: int) -> str:
    """The media playlist of one rung (VOD)."""
    if len(segment_urls) != len(rung.durations_s):
        raise ValueError("one URL per segment")
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target_duration_s}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    for duration, url in zip(rung.durations_s, segment_urls, strict=True):
        lines += [f"#EXTINF:{duration:.3f},", url]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def master_playlist_text(rungs: Sequence[Rung], rung_urls: Sequence[str]) -> str:
    """The master playlist: one variant stream per rung, lowest first."""
    if len(rungs) != len(rung_urls):
        raise ValueError("one URL per rung")
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rung, url in zip(rungs, rung_urls, strict=True):
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={rung.bandwidth_bps},"
            f"AVERAGE-BANDWIDTH={rung.average_bandwidth_bps},"
            f"RESOLUTION={rung.width}x{rung.frame_height},"
            f'CODECS="{rung.codecs}"'
        )
        lines.append(url)
    return "\n".join(lines) + "\n"
