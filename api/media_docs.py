"""The JSON document of one media (docs/api/media.md): what POST /media/upload answers and
GET /media/{id} returns. Pure functions of the rows; and the public documents remembered by
their rows, of media (`PublicMediaDocuments`) and of posts (`PublicPostDocuments`)."""

from __future__ import annotations

import datetime as dt
import functools
from collections import OrderedDict, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from api.photo_urls import PhotoUrls, UrlMaker
from common.photo import EXTENSIONS, Format
from transformer import variants as v
from transformer.media_store import MediaRow, MediaStatus, VariantRow

# Public posts' documents remembered (`PublicPostDocuments`), per kind: tracemalloc over
# 2,000 of the feed bench's posts gave 2.3 KB of its own for a post's document (its photos'
# URL maps are shared with the remembered media documents) and 3.9 KB for a Mastodon
# Status, so both together hold at most about 31 MB.
POST_DOCUMENTS_CACHED_MAX: Final = 5_000
# The home feeds' public posts and statuses remembered as JSON (api/social_docs.py
# `documents_json`, api/mastodon_docs.py `statuses_json`), per kind: as many as the posts
# interned (social/post_batch.py POSTS_INTERNED_MAX), sized for the active readers' first
# pages. tracemalloc over 2,000 of the feed bench's posts: 1.8 KB of JSON and 0.4 KB of
# entry per post or status, so about 37 MB of each kind at most.
POST_JSON_CACHED_MAX: Final = 1 << 14
_FORMAT_NAMES = {Format.AVIF: "avif", Format.WEBP: "webp", Format.JPEG: "jpeg"}


def iso(unix_s: float | None) -> str | None:
    if unix_s is None:
        return None
    return (
        dt.datetime.fromtimestamp(unix_s, dt.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


ORIGINAL_PATH: Final = "/api/v1/media/{media_id}/original"


def media_document(
    row: MediaRow, rows: Sequence[VariantRow], *, urls: UrlMaker, owner: bool
) -> dict[str, Any]:
    """`urls` makes the photo URLs (public or signed: api/photo_urls.py). `owner` adds
    where the original is downloaded: the API, with the owner's session; no photo URL
    leads to it."""
    doc: dict[str, Any] = {
        "media_id": str(row.media_id),
        "media_type": row.media_type,
        "status": row.status,
        "width": row.width,
        "height": row.height,
        "duration_s": row.duration_s,
        "filter_id": row.filter_id,
        "placeholder": row.placeholder,
        "created_at": iso(row.created_unix_s),
        "ready_at": iso(row.ready_unix_s),
        "expires_at": iso(row.expires_unix_s),
        "urls": {},
        "variants": {},
    }
    if row.error_code is not None:
        doc["error"] = {"code": row.error_code}

    def url(var: VariantRow, *, negotiated: bool = False) -> str:
        fmt = None if negotiated else Format(var.fmt)
        return urls(var.volume_id, row.media_id, row.cookie, var.rendition, fmt)

    if owner and any(r.rendition == v.ORIGINAL for r in rows):
        doc["original_url"] = ORIGINAL_PATH.format(media_id=row.media_id)
    if row.status != MediaStatus.READY:
        return doc
    by_rendition: dict[int, list[VariantRow]] = defaultdict(list)
    for var in rows:
        by_rendition[var.rendition].append(var)
    for rendition, group in sorted(by_rendition.items()):
        if rendition == v.ORIGINAL or rendition >= v.RUNG_PLAYLIST_BASE:
            continue  # the original is the owner's; rungs and segments hang off the master
        name = v.name(rendition)
        if rendition == v.MASTER_PLAYLIST:
            doc["urls"][name] = url(group[0])
            continue
        formats = {_FORMAT_NAMES.get(Format(g.fmt), EXTENSIONS[g.fmt]): url(g) for g in group}
        # A negotiated URL names one volume: offer it only when every format lives there.
        one_volume = len({g.volume_id for g in group}) == 1
        fallback = next((g for g in group if g.fmt == Format.JPEG), group[0])
        doc["urls"][name] = url(group[0], negotiated=True) if one_volume else url(fallback)
        doc["variants"][name] = {
            "width": group[0].width,
            "height": group[0].height,
            "formats": formats,
        }
    return doc


@dataclass(frozen=True, slots=True)
class PublicMediaStatistics:
    hits: int
    misses: int
    documents: int
    documents_max: int


class PublicMediaDocuments:
    """`media_document(row, rows, urls=public, owner=False)` remembered by its arguments:
    the key is the media row and every variant row as this request read them, so a row that
    changed (a re-keyed cookie, a new status, a variant rewritten) is a new key and nothing
    needs invalidating, in this process or any other. Only public URLs are remembered
    (signed ones are per viewer and expire; a private account's media never come here), and
    only a document's own rows decide it (no viewer, no counts). The least recently used
    are dropped beyond `documents_max`. A returned document is shared by every later caller:
    copy it before changing it (`documents_of` copies the top level and adds its keys)."""

    def __init__(self, photo_urls: PhotoUrls, *, documents_max: int) -> None:
        self._urls = photo_urls.public()
        self._documents_max = documents_max
        self._render = functools.lru_cache(maxsize=documents_max)(self._document)

    def _document(self, row: MediaRow, rows: tuple[VariantRow, ...]) -> dict[str, Any]:
        return media_document(row, list(rows), urls=self._urls, owner=False)

    def get(self, row: MediaRow, rows: Sequence[VariantRow]) -> dict[str, Any]:
        """The public document of the media (shared: do not change it)."""
        return self._render(row, tuple(rows))

    def statistics(self) -> PublicMediaStatistics:
        info = self._render.cache_info()
        return PublicMediaStatistics(info.hits, info.misses, info.currsize, self._documents_max)


@dataclass(frozen=True, slots=True)
class PublicPostStatistics:
    hits: int
    misses: int
    documents: int
    documents_max: int


Doc = TypeVar("Doc")


class PublicPostDocuments(Generic[Doc]):
    """Public posts' documents (without the viewer's flags) remembered by the identity of
    what they are made of: the post, its author, the author's picture, each photo with its
    ladder and the place, as `post_batch.read_quick` interns them by their rows' content.
    An unchanged row read again is the same object, a changed one (a new like count, a
    re-keyed photo, an edited caption) a new object and so a new key: nothing is
    invalidated, in this process or any other. The entry holds its parts, so an id in a key
    cannot be reused by another object while the entry lives; a hit also compares the parts
    (the same objects compare equal at once, in C; equal copies would make the same
    document). Private authors' posts never come here (their URLs are signed per answer).
    The least recently used are dropped beyond `documents_max`. A returned document is
    shared: copy it before changing it. A document is a dict, or (the home feeds) its JSON
    encoded once (api/responses.py)."""

    def __init__(self, *, documents_max: int = POST_DOCUMENTS_CACHED_MAX) -> None:
        self._documents_max = documents_max
        self._documents: OrderedDict[
            tuple[tuple[int, ...], Hashable], tuple[tuple[object, ...], Doc]
        ] = OrderedDict()
        self._hits = 0
        self._misses = 0

    def get(self, parts: tuple[object, ...], extra: Hashable = None) -> Doc | None:
        """The document of `parts` (by identity) and `extra` (by value: what else the
        document was made from) if remembered (shared: do not change it)."""
        key = (tuple(map(id, parts)), extra)
        hit = self._documents.get(key)
        if hit is None or hit[0] != parts:
            self._misses += 1
            return None
        self._documents.move_to_end(key)
        self._hits += 1
        return hit[1]

    def put(self, parts: tuple[object, ...], doc: Doc, extra: Hashable = None) -> Doc:
        """Remembers `doc` as the document of `parts` and `extra`; returns it."""
        self._documents[(tuple(map(id, parts)), extra)] = (parts, doc)
        if len(self._documents) > self._documents_max:
            self._documents.popitem(last=False)
        return doc

    def statistics(self) -> PublicPostStatistics:
        return PublicPostStatistics(
            self._hits, self._misses, len(self._documents), self._documents_max
        )
