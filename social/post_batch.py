"""What a page of posts is made from, read in one consistent view: the posts, their
authors, their media and the authors' pictures with every variant, the viewer's likes and
saves among them, the posts' places (and, for the Mastodon API, the media descriptions).

Two readers of the same batch, which must agree row for row
(tests/social/test_api_feed_hydration.py holds them to it):
- `read_posts`, a SQLAlchemy read unit (Database.read), for every database;
- on a SQLite file, `read_quick`: the same statements as plain SQL on the QuickReader's
  thread (common/quickread.py), without SQLAlchemy's per-statement execution and per-row
  processing. A feed page's batch is eight statements and about 300 rows (20 posts with a
  twelve-variant photo each); through SQLAlchemy that cost 4.4-5.0 ms of CPU, plain
  0.9-1.0 ms (ARCHITECTURE.md, "The hydrated feed over HTTP, cheaper per page").
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.quickread import placeholders
from social import accounts, client_state, interactions, places, posts
from social.accounts import User
from social.client_state import media_descriptions
from social.places import Place
from social.schema import likes, post_media, post_users, saves, users
from social.schema import posts as posts_t
from social.search_schema import places as places_t
from social.search_schema import post_places
from transformer import media_store
from transformer.media_store import MediaRow, MediaStatus, VariantRow
from transformer.schema import media as media_t
from transformer.schema import variants

MediaWithVariants = tuple[MediaRow, tuple[VariantRow, ...]]


@dataclass(frozen=True, slots=True)
class PostBatch:
    """What a page of posts is made from (module docstring)."""

    found: dict[int, posts.Post]
    authors: dict[int, User]
    media: dict[int, MediaWithVariants]
    liked: set[int]
    saved: set[int]
    post_places: dict[int, Place]
    # Read by `read_quick`: every post, author, media entry and place is the one interned
    # object of its content, so documents made of them may be remembered by identity
    # (api/social_docs.py). Not part of the batch's value.
    interned: bool = field(default=False, compare=False)


async def read_posts(conn: AsyncConnection, viewer: int, post_ids: list[int]) -> PostBatch:
    """The batch of `post_ids` inside the caller's snapshot; a unit for Database.read (it
    awaits only conn.execute)."""
    found = await posts.get_many(conn, post_ids)
    authors = await accounts.get_many(conn, {p.author_id for p in found.values()})
    media_ids = [m.media_id for p in found.values() for m in p.media]
    media_ids += [u.avatar_media_id for u in authors.values() if u.avatar_media_id]
    media = {
        m: (row, tuple(ladder))
        for m, (row, ladder) in (await media_store.get_many(conn, media_ids)).items()
    }
    liked, saved = await interactions.viewer_flags(conn, viewer, found)
    chosen = await places.of_posts(conn, list(found))
    return PostBatch(found, authors, media, liked, saved, chosen)


async def read_batch(db: Database, viewer: int, post_ids: list[int]) -> PostBatch:
    """The batch of `post_ids` for `viewer`, on the quick reader when the database has one."""
    if db.quick is not None:
        return await db.quick.run(lambda c: read_quick(c, viewer, post_ids))
    return await db.read(lambda conn: read_posts(conn, viewer, post_ids))


async def read_batch_described(
    db: Database, viewer: int, post_ids: list[int]
) -> tuple[PostBatch, dict[int, str]]:
    """The batch and the descriptions of its posts' media (client_state.descriptions), in
    one view."""
    if db.quick is not None:
        return await db.quick.run(lambda c: read_quick_described(c, viewer, post_ids))

    async def unit(conn: AsyncConnection) -> tuple[PostBatch, dict[int, str]]:
        batch = await read_posts(conn, viewer, post_ids)
        media_ids = [m.media_id for p in batch.found.values() for m in p.media]
        return batch, await client_state.descriptions(conn, media_ids)

    return await db.read(unit)


# -- the plain-SQL reader (SQLite) ------------------------------------------------------------
# Column lists come from the tables and the row classes, so a column added to either is
# read by both readers or fails the agreement test.

_USER_FIELDS: Final = tuple(f.name for f in fields(User))
_USER_BOOLEANS: Final = frozenset(c.name for c in users.c if c.type.python_type is bool)
_MEDIA_FIELDS: Final = tuple(f.name for f in fields(MediaRow))
_VARIANT_FIELDS: Final = tuple(f.name for f in fields(VariantRow))
_STATUS_AT: Final = _MEDIA_FIELDS.index("status")
_PLACE_FIELDS: Final = tuple(f.name for f in fields(Place))

assert not any(c.type.python_type is bool for c in media_t.c)
assert not any(c.type.python_type is bool for c in variants.c)
assert set(_USER_FIELDS) == {c.name for c in users.c}


def _in(ids: Sequence[int]) -> str:
    return f"({placeholders(len(ids))})"


def _posts(c: sqlite3.Connection, wanted: list[int]) -> dict[int, posts.Post]:
    p = posts_t.name
    rows = c.execute(
        "SELECT post_id, author_id, caption, location, status, like_count, comment_count,"
        f" created_unix_s FROM {p} WHERE post_id IN {_in(wanted)}",
        wanted,
    ).fetchall()
    by_post: dict[int, list[tuple[int, str | None]]] = {}
    for post_id, media_id, alt_text in c.execute(
        f"SELECT post_id, media_id, alt_text FROM {post_media.name}"
        f" WHERE post_id IN {_in(wanted)} ORDER BY post_id, position",
        wanted,
    ):
        by_post.setdefault(post_id, []).append((media_id, alt_text))
    tagged: dict[int, list[int]] = {}
    for post_id, user_id in c.execute(
        f"SELECT post_id, user_id FROM {post_users.name}"
        f" WHERE post_id IN {_in(wanted)} AND kind = 'tagged'",
        wanted,
    ):
        tagged.setdefault(post_id, []).append(user_id)
    return {
        r[0]: _post_row(r, tuple(by_post.get(r[0], ())), tuple(sorted(tagged.get(r[0], ()))))
        for r in rows
    }


def _users(c: sqlite3.Connection, wanted: list[int]) -> dict[int, User]:
    if not wanted:
        return {}
    rows = c.execute(
        f"SELECT {', '.join(_USER_FIELDS)} FROM {users.name} WHERE user_id IN {_in(wanted)}",
        wanted,
    )
    out = {}
    for r in rows:
        user = _user_row(r)
        out[user.user_id] = user
    return out


def _media(c: sqlite3.Connection, wanted: list[int]) -> dict[int, MediaWithVariants]:
    if not wanted:
        return {}
    found: dict[int, MediaWithVariants] = {}
    unread: dict[int, tuple[Any, ...]] = {}
    known = _LADDERS.get
    for r in c.execute(
        f"SELECT {', '.join(_MEDIA_FIELDS)}, ladder_version FROM {media_t.name}"
        f" WHERE media_id IN {_in(wanted)}",
        wanted,
    ):
        entry = known(r)
        if entry is None:
            unread[r[0]] = r
        else:
            with contextlib.suppress(KeyError):  # another database's reader dropped it
                _LADDERS.move_to_end(r)
            found[r[0]] = entry
    if not unread:
        return found
    # One step per media, not per variant row: the rows are grouped in C.
    ids = list(unread)
    for media_id, ladder in itertools.groupby(
        c.execute(
            f"SELECT {', '.join(_VARIANT_FIELDS)} FROM {variants.name}"
            f" WHERE media_id IN {_in(ids)} ORDER BY media_id, rendition, fmt",
            ids,
        ),
        key=_FIRST,
    ):
        found[media_id] = _remember(unread.pop(media_id), tuple(ladder))
    for r in unread.values():  # no variant yet (an upload still processing)
        found[r[0]] = _remember(r, ())
    return found


# A media with its ladder, remembered under its row as read with its ladder_version (the
# last column): the database raises the version in the transaction of every change to the
# media's variant rows (transformer/schema.py, migration 5), so a row read in a snapshot
# names exactly the ladder that snapshot holds, and a page whose media are all remembered
# reads no variant row (ARCHITECTURE.md, "A feed page's ladders kept by their version").
# The key is the whole row, so any change to the media row is a new entry too. Entries
# are shared by every database the process reads; rows of distinct databases differ in
# their random cookies. Least recently used dropped past MEDIA_INTERNED_MAX.
_LADDERS: Final[OrderedDict[tuple[Any, ...], MediaWithVariants]] = OrderedDict()


def _remember(r: tuple[Any, ...], ladder: tuple[tuple[Any, ...], ...]) -> MediaWithVariants:
    row = list(r[:-1])
    row[_STATUS_AT] = MediaStatus(row[_STATUS_AT])
    entry = MediaRow(*row), tuple(VariantRow(*v) for v in ladder)
    _LADDERS[r] = entry
    if len(_LADDERS) > MEDIA_INTERNED_MAX:
        with contextlib.suppress(KeyError):  # emptied meanwhile by other readers
            _LADDERS.popitem(last=False)
    return entry


# The same rows read again (a feed shows the same photos and authors to many readers) are
# the same frozen objects: made once, and compared by identity where they are a key
# (api/media_docs.py PublicMediaDocuments). Posts, users and places are keyed by the rows'
# whole content as SQLite returned them (tuples of plain values, hashed in C), media by
# their row and ladder_version (`_LADDERS`): a changed row is a new key, so nothing needs
# invalidating. Bounded; least recently used dropped. Sized for the posts
# of the active readers' first pages: 12,827 distinct posts (with as many photos) in
# `pinhole bench feed`'s 2,000 readers; below that every read missed and made its
# documents again (ARCHITECTURE.md, "The feed page's caches sized by its working set").
MEDIA_INTERNED_MAX: Final = 1 << 14  # media with their ladders; one about 6.9 KB
USERS_INTERNED_MAX: Final = 1 << 14  # a user row about 1 KB
POSTS_INTERNED_MAX: Final = 1 << 14  # posts, and places
_FIRST: Final = operator.itemgetter(0)


@functools.lru_cache(maxsize=POSTS_INTERNED_MAX)
def _post_row(
    r: tuple[Any, ...], media: tuple[tuple[int, str | None], ...], tagged: tuple[int, ...]
) -> posts.Post:
    return posts.Post(
        post_id=r[0],
        author_id=r[1],
        caption=r[2],
        location=r[3],
        status=r[4],
        like_count=r[5],
        comment_count=r[6],
        created_unix_s=r[7],
        media=tuple(posts.PostMedia(m, alt) for m, alt in media),
        tagged=tagged,
    )


@functools.lru_cache(maxsize=POSTS_INTERNED_MAX)
def _place_row(r: tuple[Any, ...]) -> Place:
    return Place(*r)


@functools.lru_cache(maxsize=USERS_INTERNED_MAX)
def _user_row(r: tuple[Any, ...]) -> User:
    values = dict(zip(_USER_FIELDS, r, strict=True))
    for name in _USER_BOOLEANS:
        values[name] = bool(values[name])
    return User(**values)


def _flags(c: sqlite3.Connection, viewer: int, wanted: list[int]) -> tuple[set[int], set[int]]:
    liked: set[int] = set()
    saved: set[int] = set()
    for kind, post_id in c.execute(
        f"SELECT 0, post_id FROM {likes.name} WHERE user_id = ? AND post_id IN {_in(wanted)}"
        f" UNION ALL SELECT 1, post_id FROM {saves.name}"
        f" WHERE user_id = ? AND post_id IN {_in(wanted)}",
        [viewer, *wanted, viewer, *wanted],
    ):
        (saved if kind else liked).add(post_id)
    return liked, saved


def _places(c: sqlite3.Connection, wanted: list[int]) -> dict[int, Place]:
    cols = ", ".join(f"l.{n}" for n in _PLACE_FIELDS)
    rows = c.execute(
        f"SELECT pp.post_id, {cols} FROM {post_places.name} pp"
        f" JOIN {places_t.name} l ON l.place_id = pp.place_id WHERE pp.post_id IN {_in(wanted)}",
        wanted,
    )
    return {r[0]: _place_row(r[1:]) for r in rows}


def _descriptions(c: sqlite3.Connection, media_ids: list[int]) -> dict[int, str]:
    wanted = sorted(set(media_ids))
    if not wanted:
        return {}
    rows = c.execute(
        f"SELECT media_id, description FROM {media_descriptions.name}"
        f" WHERE media_id IN {_in(wanted)}",
        wanted,
    )
    return {int(m): text for m, text in rows}


def read_quick(c: sqlite3.Connection, viewer: int, post_ids: list[int]) -> PostBatch:
    """`read_posts` in plain SQL inside the quick reader's transaction (module docstring)."""
    wanted = sorted(set(post_ids))
    if not wanted:
        return PostBatch({}, {}, {}, set(), set(), {})
    found = _posts(c, wanted)
    authors = _users(c, sorted({p.author_id for p in found.values()}))
    media_ids = [m.media_id for p in found.values() for m in p.media]
    media_ids += [u.avatar_media_id for u in authors.values() if u.avatar_media_id]
    media = _media(c, sorted(set(media_ids)))
    kept = sorted(found)
    if not kept:
        return PostBatch(found, authors, media, set(), set(), {}, interned=True)
    liked, saved = _flags(c, viewer, kept)
    return PostBatch(found, authors, media, liked, saved, _places(c, kept), interned=True)


def read_quick_described(
    c: sqlite3.Connection, viewer: int, post_ids: list[int]
) -> tuple[PostBatch, dict[int, str]]:
    """`read_quick` and the descriptions of its posts' media, in the caller's unit."""
    batch = read_quick(c, viewer, post_ids)
    return batch, _descriptions(c, [m.media_id for p in batch.found.values() for m in p.media])
