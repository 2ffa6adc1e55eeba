"""The search service: accounts, hashtags and places by prefix, substring and trigram
similarity, ranked by match quality, popularity and the viewer's relationship
(social/search_rank.py); and the posts of hashtag and place pages.

Privacy: accounts that block the viewer or that the viewer blocks are never candidates.
Private accounts are found (as on Instagram); their posts appear on hashtag and place
pages only to their followers (and themselves). A query folds like the index
(social/search_text.py); names and words starting with it come from one B-tree of
prefix keys (social/search_keys.py) with the rows ranking needs, every kind asked in one
statement. Only for the kinds where those are fewer than asked, a query of
search_text.TRIGRAM_CHARS or more characters also goes to the engine for substrings
(social/search_engines.py, every such kind in one statement), and from [search]
fuzzy_chars_min characters on for the words of the index within a typo (one more
statement over the words' one-deletion variants, social/search_variants.py, the same on
both engines; search_text.closest_words keeps the closest); one last statement reads the
rows of the substring matches and of the kept words' most popular entities. At most four
statements per request, whatever the kinds.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from social import search_variants
from social.errors import Invalid, NotVisible
from social.schema import follows, hashtags, likes, posts, users
from social.search_config import SearchConfig
from social.search_engines import KINDS, SearchEngine, engine_for
from social.search_keys import (
    KIND_CODES,
    SOURCES,
    blocked_either_way,
    listed_ids_query,
    prefix_query,
    prefix_values,
    word_entities_query,
)
from social.search_rank import Candidate, Ranked, rank
from social.search_schema import HEAD_CHARS_MAX, hashtag_counts, places, post_places
from social.search_text import (
    TRIGRAM_CACHE_WORDS,
    TRIGRAM_CHARS,
    closest_words,
    fold,
    fold_query,
)

LIVE: Final = "live"  # social.posts.PostStatus.LIVE
HASHTAG_NAME: Final = re.compile(r"\w{1,100}")
# Top posts: likes plus this many times the comments.
TOP_COMMENT_WEIGHT: Final = 2
# The kind code of the candidate statement's rows that name an account the viewer
# engages with (search_keys.KIND_CODES are the others).
ENGAGED_CODE: Final = 0
KIND_NAMES: Final = {code: kind for kind, code in KIND_CODES.items()}
assert ENGAGED_CODE not in KIND_NAMES
# Names as ranking compares them: the same few thousand popular names come back request
# after request.
_fold = functools.lru_cache(maxsize=TRIGRAM_CACHE_WORDS)(fold)


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str
    entity_id: int
    score: float


@dataclass(frozen=True, slots=True)
class PostPage:
    post_ids: list[int]
    next_cursor: str | None


class Search:
    """One per API process (or command): the engine of the database's dialect."""

    def __init__(self, db: Database, config: SearchConfig) -> None:
        self.db = db
        self.config = config
        self.engine: SearchEngine = engine_for(db.dialect)

    def check_query(self, query: Any) -> str:
        if not isinstance(query, str) or not query.strip():
            raise Invalid("q is required")
        if len(query) > self.config.query_chars_max:
            raise Invalid(f"q must be at most {self.config.query_chars_max} characters")
        return fold_query(query)

    async def find(self, viewer: int, query: str, kind: str, *, limit: int) -> list[Hit]:
        """The best `limit` matches of one kind (accounts, hashtags, places), best first."""
        return (await self.find_kinds(viewer, query, (kind,), limit=limit))[kind]

    async def find_kinds(
        self, viewer: int, query: str, kinds: tuple[str, ...], *, limit: int
    ) -> dict[str, list[Hit]]:
        """The best `limit` matches of each kind, in one read unit (typeahead: on SQLite one
        thread hop for every statement)."""
        if any(kind not in KINDS for kind in kinds):
            raise Invalid("type must be accounts, hashtags or places")
        q = self.check_query(query)
        if not q:
            return {kind: [] for kind in kinds}

        async def unit(conn: AsyncConnection) -> dict[str, list[Hit]]:
            found = await self._candidates(conn, viewer, q, kinds, limit=limit)
            return {
                kind: [Hit(kind, r.entity_id, r.score) for r in self._rank(q, found[kind], limit)]
                for kind in kinds
            }

        return await self.db.read(unit)

    def _rank(self, q: str, candidates: list[Candidate], limit: int) -> list[Ranked]:
        return rank(q, candidates, self.config, limit=limit)

    async def _candidates(
        self, conn: AsyncConnection, viewer: int, q: str, kinds: tuple[str, ...], *, limit: int
    ) -> dict[str, list[Candidate]]:
        """Names (or words of them) starting with the query first: of every kind the most
        popular `candidates_per_result` x `limit` (and as many of those the viewer
        follows), with the rows ranking needs, and the accounts the viewer engages with,
        in one statement. Only for the kinds where they are fewer than `limit` entities:
        substrings (TRIGRAM_CHARS characters on), then words within a typo
        (fuzzy_chars_min on), and the rows of those (_more_rows)."""
        cap = min(self.config.candidates_max, limit * self.config.candidates_per_result)
        found: dict[str, list[Any]] = {kind: [] for kind in kinds}
        engaged: set[int] = set()
        values = {"viewer": viewer, "n": self.config.engaged_likes_max, **prefix_values(q)}
        # The prefix plan: by a head index up to HEAD_CHARS_MAX characters, else by word
        # (search_keys.prefix_query).
        chars = min(len(q), HEAD_CHARS_MAX + 1)
        prefixes = _prefix_rows_query(kinds, cap, chars, conn.dialect.name)
        settings = self.engine.read_settings
        if settings is not None:
            await conn.execute(settings)
        for row in (await conn.execute(prefixes, values)).all():
            if row[0] == ENGAGED_CODE:
                engaged.add(int(row[1]))
            else:
                found[KIND_NAMES[row[0]]].append(row)
        seen = {kind: {int(r[1]) for r in found[kind]} for kind in kinds}
        need = tuple(k for k in kinds if len(seen[k]) < limit) if len(q) >= TRIGRAM_CHARS else ()
        if need:
            await self._more_rows(conn, viewer, q, need, seen, found, limit=limit, cap=cap)
        engaged.discard(viewer)
        # Rows: (kind, id, name, full name or None, count, followed).
        return {
            kind: [
                Candidate(
                    int(r[1]),
                    (_fold(r[2]), _fold(r[3])) if r[3] is not None else (_fold(r[2]),),
                    int(r[4]),
                    followed=bool(r[5]),
                    engaged=r[1] in engaged,
                )
                for r in rows
            ]
            for kind, rows in found.items()
        }

    async def _more_rows(
        self,
        conn: AsyncConnection,
        viewer: int,
        q: str,
        need: tuple[str, ...],
        seen: dict[str, set[int]],
        found: dict[str, list[Any]],
        *,
        limit: int,
        cap: int,
    ) -> None:
        """For the kinds whose prefixes found fewer than `limit`: substrings of every such
        kind in one statement; for those still short (from fuzzy_chars_min characters
        on), the words within a typo, every kind in one more (the engine's best, then
        search_text.closest_words); then the rows of all those (the substring ids and
        each word's most popular `cap` entities) in one last statement, appended to
        `found`. At most three statements whatever the kinds (the engine's read settings
        were made by the prefix statement)."""
        text = await self.engine.text_candidates(conn, need, q, limit=cap, follower=viewer)
        short = tuple(k for k in need if len(seen[k].union(text[k])) < limit)
        chosen: dict[str, list[str]] = {}
        if short and len(q) >= self.config.fuzzy_chars_min:
            similar = await search_variants.fuzzy_words(
                conn, short, q, chars_min=self.config.fuzzy_chars_min
            )
            fuzzy_max = self.config.fuzzy_candidates_max
            chosen = {k: closest_words(q, ws, fuzzy_max) for k, ws in similar.items() if ws}
        ids = {k: [i for i in dict.fromkeys(text[k]) if i not in seen[k]] for k in need}
        kinds = tuple(k for k in need if ids[k] or chosen.get(k))
        if not kinds:
            return
        dialect = conn.dialect.name

        def bound(values: list[Any]) -> Any:
            return json.dumps(values) if dialect == "sqlite" else values

        values: dict[str, Any] = {"viewer": viewer}
        for kind in kinds:
            values[f"ids_{kind}"] = bound(ids[kind])
            values[f"words_{kind}"] = bound(chosen.get(kind, []))
        query = _extra_rows_query(kinds, dialect, cap, self.config.fuzzy_candidates_max)
        for row in (await conn.execute(query, values)).all():
            found[KIND_NAMES[row[0]]].append(row)

    # -- hashtag and place pages ---------------------------------------------------------

    async def hashtag(self, name: Any) -> tuple[str, int]:
        """(tag, posts carrying it that are not deleted); NotVisible for an unknown tag."""
        tag = check_hashtag(name)
        async with self.db.snapshot() as conn:
            count = (
                await conn.execute(
                    sa.select(hashtag_counts.c.post_count).where(hashtag_counts.c.tag == tag)
                )
            ).scalar_one_or_none()
        if count is None:
            raise NotVisible("no such hashtag")
        return tag, int(count)

    async def hashtag_posts(
        self, viewer: int, tag: str, *, top: bool, cursor: str | None, limit: int
    ) -> PostPage:
        selector = (
            sa.select(hashtags.c.post_id.label("post_id")).where(hashtags.c.tag == tag).subquery()
        )
        return await self._posts(viewer, selector, top=top, cursor=cursor, limit=limit)

    async def place_posts(
        self, viewer: int, place_id: int, *, top: bool, cursor: str | None, limit: int
    ) -> PostPage:
        selector = (
            sa.select(post_places.c.post_id.label("post_id"))
            .where(post_places.c.place_id == place_id)
            .subquery()
        )
        return await self._posts(viewer, selector, top=top, cursor=cursor, limit=limit)

    async def _posts(
        self, viewer: int, selector: Any, *, top: bool, cursor: str | None, limit: int
    ) -> PostPage:
        """Live posts of the selector the viewer may see, newest first or (top) by
        engagement then newest; keyset pages (the cursor is opaque to clients)."""
        author = posts.c.author_id
        score = posts.c.like_count + TOP_COMMENT_WEIGHT * posts.c.comment_count
        query = (
            sa.select(posts.c.post_id, score.label("score"))
            .select_from(
                selector.join(posts, posts.c.post_id == selector.c.post_id).join(
                    users, users.c.user_id == author
                )
            )
            .where(posts.c.status == LIVE, _visible_to(viewer))
            .limit(limit + 1)
        )
        if top:
            query = query.order_by(score.desc(), posts.c.post_id.desc())
        else:
            query = query.order_by(posts.c.post_id.desc())
        if cursor is not None:
            before_score, before_id = _parse_cursor(cursor, top=top)
            older = posts.c.post_id < before_id
            if top:
                older = sa.or_(score < before_score, sa.and_(score == before_score, older))
            query = query.where(older)
        async with self.db.snapshot() as conn:
            rows = (await conn.execute(query)).all()
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit and page:
            last = page[-1]
            next_cursor = f"{last.score}.{last.post_id}" if top else str(last.post_id)
        return PostPage([int(r.post_id) for r in page], next_cursor)


def _visible_to(viewer: int) -> Any:
    """A post's author is the viewer, public or followed by the viewer, and no block
    stands between them either way."""
    author = posts.c.author_id
    followed = sa.exists().where(follows.c.follower_id == viewer, follows.c.followee_id == author)
    return sa.and_(
        sa.or_(author == viewer, users.c.is_private == sa.false(), followed),
        ~blocked_either_way(viewer, author),
    )


def _parse_cursor(cursor: str, *, top: bool) -> tuple[int, int]:
    try:
        if top:
            score, _, post_id = cursor.partition(".")
            return int(score), int(post_id)
        return 0, int(cursor)
    except ValueError:
        raise Invalid("cursor is not one this API gave") from None


def check_hashtag(name: Any) -> str:
    tag = name.lstrip("#").lower() if isinstance(name, str) else ""
    if not HASHTAG_NAME.fullmatch(tag):
        raise Invalid("a hashtag is 1 to 100 letters, digits or underscores")
    return tag


@functools.cache
def _prefix_rows_query(
    kinds: tuple[str, ...], limit: int, chars: int, dialect: str
) -> sa.CompoundSelect:
    """Of each kind, what _rows_query reads of the `limit` most popular entities with a key
    starting with `q` (search_keys.prefix_query for `q` of `chars` characters) and, for accounts, of
    as many the viewer follows; with accounts also the authors of the viewer's latest `n`
    likes (kind ENGAGED_CODE, the id column): one statement (made once per kinds, limit,
    plan and dialect; bound: viewer, q, q_end, n)."""
    branches: list[Any] = []
    for kind in kinds:
        plain = prefix_query(kind, limit=limit, followed=False, chars=chars, dialect=dialect)
        ids = [sa.select(plain.subquery())]
        if kind == "accounts":
            followed = prefix_query(kind, limit=limit, followed=True, chars=chars, dialect=dialect)
            ids.append(sa.select(followed.subquery()))
        branches.append(_rows_query(kind, sa.union_all(*ids).subquery()))
    if "accounts" in kinds:
        branches.append(_ENGAGED_ROWS)
    return sa.union_all(*branches)


@functools.cache
def _extra_rows_query(
    kinds: tuple[str, ...], dialect: str, per_word: int, fuzzy_limit: int
) -> sa.CompoundSelect:
    """What _rows_query reads of the entities in the bound lists `ids_<kind>` and of the
    words in `words_<kind>` (search_keys.word_entities_query: `per_word` of each, at most
    `fuzzy_limit`), every kind in one statement. One text whatever the lists' lengths
    (SQLite: JSON arrays read by json_each; PostgreSQL: arrays): an IN list of bound
    values made a new statement per length."""
    branches = []
    for kind in kinds:
        listed = listed_ids_query(kind, dialect)
        typos = word_entities_query(kind, per_word=per_word, limit=fuzzy_limit, dialect=dialect)
        ids = sa.union(sa.select(listed.subquery()), sa.select(typos.subquery())).subquery()
        branches.append(_rows_query(kind, ids))
    return sa.union_all(*branches)


def _rows_query(kind: str, ids: sa.Subquery) -> sa.Select[Any]:
    """The rows ranking needs of the entities a subquery's entity_id column names, the
    same columns for every kind: its code, id,
    name, full name (accounts; else NULL), count, and whether the bound `viewer` follows
    it (accounts; else false); accounts blocked either way left out."""
    source, id_col, count_col = SOURCES[kind]
    viewer: Any = sa.bindparam("viewer")
    code = sa.literal_column(str(KIND_CODES[kind]), sa.Integer).label("kind")
    if kind == "accounts":
        followed = sa.exists().where(
            follows.c.follower_id == viewer, follows.c.followee_id == users.c.user_id
        )
        columns: list[Any] = [code, id_col, users.c.username, users.c.full_name, count_col]
        columns.append(followed.label("followed"))
    else:
        name = hashtag_counts.c.tag if kind == "hashtags" else places.c.name_key
        columns = [code, id_col, name, sa.null(), count_col, sa.false()]
    query = sa.select(*columns)
    query = query.select_from(ids.join(source, id_col == ids.c.entity_id))
    if kind == "accounts":
        query = query.where(~blocked_either_way(viewer, users.c.user_id))
    return query


_RECENT_LIKES = (
    sa.select(likes.c.post_id)
    .where(likes.c.user_id == sa.bindparam("viewer"))
    .order_by(likes.c.post_id.desc())
    .limit(sa.bindparam("n"))
    .subquery()
)
# The authors of the posts among the viewer's latest likes (by post id), as rows of
# _rows_query's shape.
_ENGAGED_ROWS = (
    sa.select(
        sa.literal_column(str(ENGAGED_CODE), sa.Integer),
        posts.c.author_id,
        sa.null(),
        sa.null(),
        sa.literal_column("0", sa.Integer),
        sa.false(),
    )
    .distinct()
    .select_from(_RECENT_LIKES.join(posts, posts.c.post_id == _RECENT_LIKES.c.post_id))
)
