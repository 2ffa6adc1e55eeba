"""The search service: accounts, hashtags and places by prefix, substring and trigram
similarity, ranked by match quality, popularity and the viewer's relationship
(social/search_rank.py); and the posts of hashtag and place pages.

Privacy: accounts that block the viewer or that the viewer blocks are never candidates.
Private accounts are found (as on Instagram); their posts appear on hashtag and place
pages only to their followers (and themselves). A query folds like the index
(social/search_text.py); names starting with it come from the source tables' own
indexes, a query of search_text.TRIGRAM_CHARS or more characters also goes to the engine
(social/search_engines.py), and from [search] fuzzy_chars_min characters on, trigram
similarity adds candidates for typos and missing letters when too few matched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from social.errors import Invalid, NotVisible
from social.schema import blocks, follows, hashtags, likes, posts, users
from social.search_config import SearchConfig
from social.search_engines import KINDS, SOURCES, SearchEngine, candidate_ids, engine_for
from social.search_rank import Candidate, Ranked, rank
from social.search_schema import hashtag_counts, places, post_places
from social.search_text import TRIGRAM_CHARS, fold, fold_query, prefix_upper_bound

LIVE: Final = "live"  # social.posts.PostStatus.LIVE
HASHTAG_NAME: Final = re.compile(r"\w{1,100}")
# Top posts: likes plus this many times the comments.
TOP_COMMENT_WEIGHT: Final = 2


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
        """The best `limit` matches of each kind, in one read transaction (typeahead)."""
        if any(kind not in KINDS for kind in kinds):
            raise Invalid("type must be accounts, hashtags or places")
        q = self.check_query(query)
        found: dict[str, list[Hit]] = {kind: [] for kind in kinds}
        if not q:
            return found
        async with self.db.snapshot() as conn:
            await self.engine.begin_read(
                conn, similarity_min=self.config.fuzzy_candidates_similarity_min_pct / 100
            )
            for kind in kinds:
                ids = await self._candidates(conn, viewer, q, kind, limit=limit)
                candidates = await self._load(conn, viewer, kind, ids)
                found[kind] = [
                    Hit(kind, r.entity_id, r.score) for r in self._rank(q, candidates, limit)
                ]
        return found

    def _rank(self, q: str, candidates: list[Candidate], limit: int) -> list[Ranked]:
        return rank(q, candidates, self.config, limit=limit)

    async def _candidates(
        self, conn: AsyncConnection, viewer: int, q: str, kind: str, *, limit: int
    ) -> list[int]:
        cap = self.config.candidates_max
        follower = viewer if kind == "accounts" else None
        # Names starting with the query always: the best matches, which a broad substring
        # match's most popular `cap` could leave out.
        ids = await _prefix_candidates(conn, kind, q, limit=cap, follower=follower)
        if len(q) >= TRIGRAM_CHARS:
            ids += await self.engine.text_candidates(conn, kind, q, limit=cap, follower=follower)
        if len(q) >= self.config.fuzzy_chars_min and len(set(ids)) < limit:
            ids += await self.engine.fuzzy_candidates(
                conn,
                kind,
                q,
                limit=self.config.fuzzy_candidates_max,
                similarity_min=self.config.fuzzy_candidates_similarity_min_pct / 100,
            )
        return list(dict.fromkeys(ids))

    async def _load(
        self, conn: AsyncConnection, viewer: int, kind: str, ids: list[int]
    ) -> list[Candidate]:
        if not ids:
            return []
        if kind == "accounts":
            # One query: the rows, minus blocks either way, with whether the viewer follows.
            followed = sa.exists().where(
                follows.c.follower_id == viewer, follows.c.followee_id == users.c.user_id
            )
            rows = await conn.execute(
                sa.select(
                    users.c.user_id,
                    users.c.username,
                    users.c.full_name,
                    users.c.follower_count,
                    followed.label("followed"),
                ).where(users.c.user_id.in_(ids), ~_blocked_either_way(viewer, users.c.user_id))
            )
            engaged = await self._engaged(conn, viewer)
            return [
                Candidate(
                    int(r.user_id),
                    (fold(r.username), fold(r.full_name)),
                    int(r.follower_count),
                    followed=bool(r.followed),
                    engaged=r.user_id in engaged,
                )
                for r in rows
            ]
        if kind == "hashtags":
            c = hashtag_counts.c
            rows = await conn.execute(
                sa.select(c.tag_id, c.tag, c.post_count).where(c.tag_id.in_(ids))
            )
            return [Candidate(int(r.tag_id), (fold(r.tag),), int(r.post_count)) for r in rows]
        p = places.c
        rows = await conn.execute(
            sa.select(p.place_id, p.name_key, p.post_count).where(p.place_id.in_(ids))
        )
        return [Candidate(int(r.place_id), (r.name_key,), int(r.post_count)) for r in rows]

    async def _engaged(self, conn: AsyncConnection, viewer: int) -> set[int]:
        """The authors of the posts among the viewer's latest likes (by post id)."""
        recent = (
            sa.select(likes.c.post_id)
            .where(likes.c.user_id == viewer)
            .order_by(likes.c.post_id.desc())
            .limit(self.config.engaged_likes_max)
            .subquery()
        )
        rows = await conn.execute(
            sa.select(posts.c.author_id)
            .distinct()
            .select_from(recent.join(posts, posts.c.post_id == recent.c.post_id))
        )
        return {int(r[0]) for r in rows} - {viewer}

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


def _blocked_either_way(viewer: int, other: Any) -> Any:
    return sa.exists().where(
        sa.or_(
            sa.and_(blocks.c.blocker_id == viewer, blocks.c.blocked_id == other),
            sa.and_(blocks.c.blocker_id == other, blocks.c.blocked_id == viewer),
        )
    )


def _visible_to(viewer: int) -> Any:
    """A post's author is the viewer, public or followed by the viewer, and no block
    stands between them either way."""
    author = posts.c.author_id
    followed = sa.exists().where(follows.c.follower_id == viewer, follows.c.followee_id == author)
    return sa.and_(
        sa.or_(author == viewer, users.c.is_private == sa.false(), followed),
        ~_blocked_either_way(viewer, author),
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


async def _prefix_candidates(
    conn: AsyncConnection, kind: str, q: str, *, limit: int, follower: int | None
) -> list[int]:
    """Names starting with a short query, through the source table's own index (and those
    of them `follower` follows, as the engines' text_candidates)."""
    _, id_col, count_col = SOURCES[kind]
    name = {"accounts": users.c.username, "hashtags": hashtag_counts.c.tag}.get(
        kind, places.c.name_key
    )

    def query_for(where: sa.ColumnElement[bool]) -> sa.Select[Any]:
        return (
            sa.select(id_col)
            .where(name >= q, name < prefix_upper_bound(q), where)
            .order_by(count_col.desc())
            .limit(limit)
        )

    return await candidate_ids(conn, query_for, kind, follower)
