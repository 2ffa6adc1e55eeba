"""The feed: hybrid fan-out on write, timeline rebuild, celebrity merge on read.

Write side (the publish and retract jobs of feed/jobs.py, run by `FanoutRunner`):
- publish: waits until the post's media are ready (then the post turns live, or failed),
  then pushes (post id, author) into the timeline of the author and of every follower
  active within inactive_days (push strategy, or hybrid for an author below
  fanout_threshold followers), or, for a celebrity (hybrid, at or above the threshold;
  sticky once set), into the author's one celebrity list. Pull strategy pushes nothing.
- retract (a deleted post): removes the entry from every follower's timeline and the
  author's list. Reads skip deleted posts anyway; this keeps the lists clean.
Both are idempotent (sorted-set adds and removes).

Read side (`page`): the viewer's timeline (rebuilt from SQL when absent: a new, returning
or evicted reader), merged with the lists of the celebrities the viewer follows, each read
below the cursor; entries are then checked against SQL (post live, or the viewer's own;
author followed or the viewer), so an unfollow, a block or a delete is honoured at once.
When the timeline runs out (it keeps only its newest timeline_entries_max), older posts
come from the pull query. The pull strategy reads the pull query only.

The invariant the oracle test checks: the sequence of pages of every viewer equals the
chronological merge of the live posts of the viewer and of everyone the viewer follows.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.jobs import Job
from common.quickread import placeholders
from feed import jobs
from feed.config import FeedConfig
from feed.cursor import Cursor
from feed.hotstore import Entry, HotStore, Slice, celebrity_key, timeline_key
from social import accounts, graph, posts
from social.schema import comments, follows, likes, users
from social.schema import posts as post_t
from transformer.media_store import GONE, MediaStatus

log = logging.getLogger("pinhole.feed")

DAY_S: Final = 86400.0
# A timeline lives this much less than the activity window, so a timeline that exists
# always belongs to a follower whom fan-out treats as active.
TTL_MARGIN_S: Final = 3600.0
# A feed read records the reader active at most this often (one SQL write per hour).
ACTIVE_EVERY_S: Final = 3600.0
# The reads whose activity stamp a process remembers (a read of a remembered reader asks
# the database nothing about it); the memory is dropped whole when full.
ACTIVE_SEEN_USERS_MAX: Final = 100_000
# Entries read per list and round at most.
_CHUNK: Final = 64
# Entries taken beyond a page's need per round, for those the filter drops.
_FILTER_SLACK: Final = 4
# The entries a read's first round asks of the followed celebrities' lists together, at
# most: each list is read at the round's count while that fits (a page of their posts is
# then one round trip), else at an equal share of this, never fewer than
# _CELEBRITY_FIRST_READ_MIN each; a list that runs dry in the merge is read again.
_CELEBRITY_FIRST_ENTRIES: Final = 256
_CELEBRITY_FIRST_READ_MIN: Final = 4
# The readers whose celebrity followees a process remembers (SQLite's quick reader only;
# each read checks them again inside its filtering unit); the memory is dropped whole when
# full.
CELEBRITY_FOLLOWEES_USERS_MAX: Final = 100_000
# The celebrities a reader follows, on the quick reader (the SQLAlchemy form is in
# `Feed._celebrity_followees`).
_CELEBRITY_FOLLOWEES_SQL: Final = (
    f"SELECT f.followee_id FROM {follows.name} f"
    f" JOIN {users.name} u ON u.user_id = f.followee_id"
    " WHERE f.follower_id = ? AND u.is_celebrity = 1"
)


# Told the follower after a follow, an unfollow or a block involving them committed (a
# block is an unfollow both ways): state cached per follower from the graph (the stories
# tray, feed/story_tray.py) is dropped there, so no path that changes the graph can miss it.
FollowerChanged = Callable[[int], Awaitable[None]]


# What a caller reads about the posts of a chronological page, in the same quick unit as
# the feed's last filtering query (`Feed.page(..., hydrate=)`): fn(connection, post ids of
# the page's entries) on the SQLite quick reader's thread.
Hydrate = Callable[[sqlite3.Connection, list[int]], Any]


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Entry]  # (post id, author id), in feed order
    next_cursor: Cursor | None
    has_more: bool
    # `hydrate`'s result for exactly these entries' post ids, when it could run inside the
    # filtering unit; None: the caller reads them itself.
    hydrated: Any = None


class Feed:
    def __init__(self, db: Database, hot: HotStore, config: FeedConfig) -> None:
        self.db = db
        self.hot = hot
        self.config = config
        self.wake = asyncio.Event()
        self._active_seen: dict[int, float] = {}
        # viewer -> the celebrities followed at the viewer's last hybrid read (sorted):
        # a hint, checked in every filtering unit of the next read (`_merged`).
        self._celebrities_seen: dict[int, tuple[int, ...]] = {}
        self._follower_changed: list[FollowerChanged] = []

    def on_follower_changed(self, listener: FollowerChanged) -> Callable[[], None]:
        """Registers `listener(follower)`, awaited by `followed` and `unfollowed` before
        their own work; returns the function that removes it."""
        self._follower_changed.append(listener)
        return lambda: self._follower_changed.remove(listener)

    async def _tell_follower_changed(self, follower: int) -> None:
        for listener in list(self._follower_changed):
            await listener(follower)

    @property
    def ttl_s(self) -> float:
        return max(60.0, self.config.inactive_days * DAY_S - TTL_MARGIN_S)

    # -- write side ----------------------------------------------------------------------

    async def posted(self, post_id: int, author_id: int) -> None:
        """Right after a post's commit: the author sees it at once; the job is nudged."""
        await self.hot.add(
            [timeline_key(author_id)], [(post_id, author_id)], cap=self.config.timeline_entries_max
        )
        self.wake.set()

    async def run_job(self, job: Job) -> float | None:
        """Runs one job; returns a delay when it must wait for media, else None (done)."""
        assert job.owner_id is not None, "a fan-out job names its post's author"
        if job.kind == jobs.PUBLISH.name:
            return await self._publish(job.subject_id, job.owner_id)
        await self._retract(job.subject_id, job.owner_id)
        return None

    async def _publish(self, post_id: int, author_id: int) -> float | None:
        async with self.db.transaction(lock="social") as conn:
            post = (await posts.get_many(conn, [post_id])).get(post_id)
            if post is None or post.status in (posts.PostStatus.DELETED, posts.PostStatus.FAILED):
                return None
            if post.status == posts.PostStatus.PROCESSING:
                states = await posts.media_states(conn, post_id)
                if any(s in (MediaStatus.FAILED, *GONE) for s in states):
                    await posts.set_status(conn, post_id, posts.PostStatus.FAILED)
                    return None
                if not all(s == MediaStatus.READY for s in states):
                    return self.config.wait_media_s
                await posts.set_status(conn, post_id, posts.PostStatus.LIVE)
            author = await accounts.get(conn, author_id)
            if author is None:
                return None
            celebrity = self.config.strategy == "hybrid" and (
                author.is_celebrity or author.follower_count >= self.config.fanout_threshold
            )
            if celebrity and not author.is_celebrity:
                await conn.execute(
                    users.update().where(users.c.user_id == author_id).values(is_celebrity=True)
                )
        entry = [(post_id, author_id)]
        cap = self.config.timeline_entries_max
        await self.hot.add([timeline_key(author_id)], entry, cap=cap)
        if self.config.strategy == "pull":
            return None
        if celebrity:
            await self.hot.add([celebrity_key(author_id)], entry, cap=cap)
            return None
        active_since = time.time() - self.config.inactive_days * DAY_S
        async for batch in self._followers(author_id, active_since=active_since):
            await self.hot.add([timeline_key(u) for u in batch], entry, cap=cap)
        return None

    async def _retract(self, post_id: int, author_id: int) -> None:
        entry = [(post_id, author_id)]
        await self.hot.remove([timeline_key(author_id), celebrity_key(author_id)], entry)
        async for batch in self._followers(author_id, active_since=None):
            await self.hot.remove([timeline_key(u) for u in batch], entry)

    async def _followers(
        self, author_id: int, *, active_since: float | None
    ) -> AsyncIterator[list[int]]:
        """The author's followers in batches of fanout_batch_max (keyset pages)."""
        after = -1
        f, u = follows.c, users.c
        while True:
            query = (
                sa.select(f.follower_id)
                .where(f.followee_id == author_id, f.follower_id > after)
                .order_by(f.follower_id)
                .limit(self.config.fanout_batch_max)
            )
            if active_since is not None:
                query = query.join(users, u.user_id == f.follower_id).where(
                    u.active_unix_s >= active_since
                )
            async with self.db.snapshot() as conn:
                batch = [int(r[0]) for r in await conn.execute(query)]
            if not batch:
                return
            yield batch
            after = batch[-1]

    async def followed(self, follower: int, followee: int) -> None:
        """After a follow's commit: copies the followee's newest posts into the timeline
        (a celebrity's are merged at read time instead). A backfill that stops at its
        limit marks the timeline incomplete: reads go on in SQL past its end."""
        await self._tell_follower_changed(follower)
        if self.config.strategy == "pull":
            return
        limit = self.config.backfill_posts_max
        async with self.db.snapshot() as conn:
            author = await accounts.get(conn, followee)
            if author is None or (self.config.strategy == "hybrid" and author.is_celebrity):
                return
            recent = await posts.by_authors(conn, [followee], before=None, limit=limit)
        await self.hot.add(
            [timeline_key(follower)],
            recent,
            cap=self.config.timeline_entries_max,
            complete=False if len(recent) >= limit else None,
        )

    async def unfollowed(self, follower: int, followee: int) -> None:
        """After an unfollow's (or block's) commit: the followee's entries leave the
        timeline (reads filter them meanwhile)."""
        await self._tell_follower_changed(follower)
        await self.hot.remove_author(timeline_key(follower), followee)

    # -- read side -----------------------------------------------------------------------

    async def page(
        self, viewer: int, cursor: Cursor, limit: int, *, hydrate: Hydrate | None = None
    ) -> Page:
        """One chronological page for the viewer. `hydrate` (SQLite's quick reader only):
        run on the page's post ids in the same unit as the last filtering query, which
        saves the caller a thread hop and reads the posts in the snapshot that kept them;
        its result is `Page.hydrated` (None when it could not run there)."""
        want = limit + 1  # one more tells has_more
        await self._record_activity(viewer)
        hydrated: list[Any] = []
        if self.config.strategy == "pull":
            found = await self._pull(viewer, cursor.before, want)
        else:
            then = None if hydrate is None else _Then(hydrate, limit, hydrated)
            found = await self._merged(viewer, cursor.before, want, then)
        has_more = len(found) > limit
        shown = found[:limit]
        next_cursor = Cursor(before=shown[-1][0]) if has_more and shown else None
        got = None
        if hydrated and hydrated[0][0] == [e[0] for e in shown]:
            got = hydrated[0][1]
        return Page(shown, next_cursor, has_more, got)

    async def _record_activity(self, viewer: int) -> None:
        """Stamps the reader active (at most once per ACTIVE_EVERY_S) and, for a reader
        back after a pause, extends the timeline's life. Before any timeline is rebuilt:
        a timeline that exists belongs to a reader whom fan-out counts as active. The
        stamp last seen is remembered, so most reads ask the database nothing."""
        now = time.time()
        seen = self._active_seen.get(viewer)
        if seen is not None and seen >= now - ACTIVE_EVERY_S:
            return
        stamp, revived = await accounts.touch_active(
            self.db, viewer, now=now, every_s=ACTIVE_EVERY_S
        )
        if revived:
            await self.hot.touch(timeline_key(viewer), ttl_s=self.ttl_s)
        if stamp is not None:
            if len(self._active_seen) >= ACTIVE_SEEN_USERS_MAX:
                self._active_seen.clear()
            self._active_seen[viewer] = stamp

    async def _pull(self, viewer: int, before: int | None, want: int) -> list[Entry]:
        """The pull strategy: one indexed query over the viewer's and the followees' live
        posts (the followees read in the same snapshot, so unfollows and blocks hold)."""
        async with self.db.snapshot() as conn:
            authors = await graph.followees(conn, viewer)
            return await posts.by_authors(
                conn, [*authors, viewer], before=before, limit=want, processing_of=viewer
            )

    async def _merged(
        self, viewer: int, before: int | None, want: int, then: _Then | None = None
    ) -> list[Entry]:
        """Push and hybrid: the viewer's timeline merged with the lists of the celebrities
        the viewer follows (one hot-store round trip per round), each going on in SQL
        past the end of an incomplete list, then filtered in SQL (one query per round).
        Only the first round rebuilds an absent list; a list gone later in the same read
        goes on in SQL from where it was."""
        if self.config.strategy != "hybrid":
            return await self._merged_with(viewer, before, want, [], then, None)
        seen = self._celebrities_seen.get(viewer) if self.db.quick is not None else None
        if seen is not None:
            try:
                return await self._merged_with(viewer, before, want, list(seen), then, seen)
            except _CelebritiesChanged:  # a follow, an unfollow or a new celebrity
                pass
        celebrities = await self._celebrity_followees(viewer)
        return await self._merged_with(viewer, before, want, celebrities, then, None)

    async def _merged_with(
        self,
        viewer: int,
        before: int | None,
        want: int,
        celebrities: list[int],
        then: _Then | None,
        seen: tuple[int, ...] | None,
    ) -> list[Entry]:
        """`_merged` over the given celebrities. `seen`: they are those remembered from an
        earlier read, not read now: every filtering unit (or, when nothing was left to
        filter, a unit of its own) reads them again and raises _CelebritiesChanged when
        they differ (as does a list to rebuild, which needs them right), so a page is only
        ever made with the celebrities its own snapshot holds.
        A read then costs one thread hop instead of two."""
        count = min(_CHUNK, want + _FILTER_SLACK)
        first = max(_CELEBRITY_FIRST_READ_MIN, _CELEBRITY_FIRST_ENTRIES // max(1, len(celebrities)))
        sources = [_Source(timeline_key(viewer), None, before)]
        sources += [_Source(celebrity_key(a), [a], before, first) for a in celebrities]
        await self._read_lists(
            viewer, sources, celebrities, count, rebuild=True, checked=seen is None
        )
        out: list[Entry] = []
        last: int | None = None
        filtered = False  # a filtering unit ran (and checked `seen`)
        while len(out) < want:
            batch: list[Entry] = []
            while len(batch) < want - len(out) + _FILTER_SLACK:
                await self._refill(viewer, sources, celebrities, count)
                need = want - len(out) + _FILTER_SLACK - len(batch)
                last = _take(sources, need, last, batch)
                if all(s.done and not s.buffer for s in sources):
                    break
            if not batch:
                break
            # The last round when it fills the page or nothing is left to read: `then`
            # runs in its unit.
            exhausted = all(s.done and not s.buffer for s in sources)
            out += await self._keep(
                viewer, batch, then=then, before=out, exhausted=exhausted, seen=seen
            )
            filtered = True
        if seen is not None and not filtered:  # nothing to filter: checked on its own
            quick = self.db.quick
            assert quick is not None, "celebrities are remembered on the quick reader only"
            now = await quick.run(lambda c: _celebrities_in(c, viewer))
            if now != seen:
                self._remember_celebrities(viewer, now)
                raise _CelebritiesChanged(now)
        return out[:want]

    async def _celebrity_followees(self, viewer: int) -> list[int]:
        quick = self.db.quick
        if quick is not None:
            found = await quick.run(lambda c: _celebrities_in(c, viewer))
            self._remember_celebrities(viewer, found)
            return list(found)
        else:
            f, u = follows.c, users.c
            async with self.db.snapshot() as conn:
                rows = list(
                    await conn.execute(
                        sa.select(f.followee_id)
                        .select_from(follows.join(users, u.user_id == f.followee_id))
                        .where(f.follower_id == viewer, u.is_celebrity)
                    )
                )
        return sorted(int(r[0]) for r in rows)

    def _remember_celebrities(self, viewer: int, celebrities: tuple[int, ...]) -> None:
        if len(self._celebrities_seen) >= CELEBRITY_FOLLOWEES_USERS_MAX:
            self._celebrities_seen.clear()
        self._celebrities_seen[viewer] = celebrities

    async def _read_lists(
        self,
        viewer: int,
        sources: list[_Source],
        celebrities: list[int],
        count: int,
        *,
        rebuild: bool,
        checked: bool = True,
    ) -> None:
        """Reads the next entries of every source whose buffer is empty and whose list
        is not read to its end, all in one round trip. An absent list is rebuilt when
        `rebuild` (with `celebrities` not `checked`, _CelebritiesChanged asks for a read
        that reads them first), else its source goes on in SQL."""
        hot = [s for s in sources if not s.buffer and not s.hot_done]
        if not hot:
            return
        reads = []
        for s in hot:
            reads.append((s.key, s.cursor, count if s.first is None else min(count, s.first)))
            s.first = None  # a list read again is read at the round's count
        slices = await self.hot.pages(reads)
        if rebuild and not checked and any(got is None for got in slices):
            raise _CelebritiesChanged
        for source, got in zip(hot, slices, strict=True):
            if got is None and rebuild:  # a new, returning or evicted reader
                got = await self._rebuild(source, viewer, celebrities, count)
            if got is None:  # gone in the middle of a read: SQL from here
                source.hot_done = True
                continue
            source.fill(got.entries)
            if not got.more:
                source.hot_done = True
                source.done = got.complete

    async def _refill(
        self, viewer: int, sources: list[_Source], celebrities: list[int], count: int
    ) -> None:
        """The lists (no rebuild), then past an incomplete list's end its authors' older
        posts in SQL."""
        await self._read_lists(viewer, sources, celebrities, count, rebuild=False)
        for source in sources:
            if source.buffer or source.done or not source.hot_done:
                continue
            async with self.db.snapshot() as conn:
                if source.authors is None:
                    source.authors = await self._timeline_authors(conn, viewer, celebrities)
                got = await posts.by_authors(
                    conn,
                    source.authors,
                    before=source.cursor,
                    limit=_CHUNK,
                    processing_of=viewer if source.is_timeline else None,
                )
            source.fill(got)
            if len(got) < _CHUNK:
                source.done = True

    async def _timeline_authors(
        self, conn: AsyncConnection, viewer: int, celebrities: list[int]
    ) -> list[int]:
        """Whose posts a timeline holds: the viewer's and the followees' (in hybrid, the
        followees that are not celebrities)."""
        skip = set(celebrities)
        return [a for a in await graph.followees(conn, viewer) if a not in skip] + [viewer]

    async def _rebuild(
        self, source: _Source, viewer: int, celebrities: list[int], count: int
    ) -> Slice:
        """Makes an absent list again from SQL, then reads it. The empty list is made
        first, so a fan-out that runs meanwhile lands in it; the SQL read that follows, in
        a snapshot begun after that, sees every post committed before the list existed.
        Both together miss nothing."""
        await self.hot.create(source.key, ttl_s=self.ttl_s)
        cap = self.config.timeline_entries_max
        async with self.db.snapshot() as conn:
            authors = source.authors
            if authors is None:
                authors = await self._timeline_authors(conn, viewer, celebrities)
            recent = await posts.by_authors(
                conn,
                authors,
                before=None,
                limit=cap,
                processing_of=viewer if source.is_timeline else None,
            )
        await self.hot.add([source.key], recent, cap=cap, complete=len(recent) < cap)
        again = (await self.hot.pages([(source.key, source.cursor, count)]))[0]
        if again is not None:
            return again
        # Evicted again at once (a store under memory pressure): what SQL gave.
        below = [e for e in recent if source.cursor is None or e[0] < source.cursor]
        return Slice(below[:count], more=len(below) > count, complete=len(recent) < cap)

    async def _keep(
        self,
        viewer: int,
        entries: list[Entry],
        *,
        then: _Then | None = None,
        before: list[Entry] | None = None,
        exhausted: bool = False,
        seen: tuple[int, ...] | None = None,
    ) -> list[Entry]:
        """The entries the viewer may see now, in one query: live posts (or the viewer's
        own processing ones) by the viewer or by an author the viewer follows now. With
        `then` (the quick reader only), when `before` and these kept fill the page or
        nothing is `exhausted` after them, `then` runs on the page in the same unit.
        With `seen` (the quick reader only), the unit first reads the celebrities the
        viewer follows and raises _CelebritiesChanged (having remembered them) unless
        they are `seen`."""
        if not entries:
            return []
        post_ids = [e[0] for e in entries]
        quick = self.db.quick
        if quick is not None:
            sql = (
                f"SELECT p.post_id, p.status, p.author_id FROM {post_t.name} p"
                f" WHERE p.post_id IN ({placeholders(len(post_ids))})"
                " AND (p.author_id = ? OR EXISTS (SELECT 1 FROM"
                f" {follows.name} f WHERE f.follower_id = ? AND f.followee_id = p.author_id))"
            )
            params = (*post_ids, viewer, viewer)

            def unit(c: sqlite3.Connection) -> list[Entry]:
                if seen is not None:
                    now = _celebrities_in(c, viewer)
                    if now != seen:
                        raise _CelebritiesChanged(now)
                kept = _kept(viewer, entries, c.execute(sql, params).fetchall())
                page = [*(before or ()), *kept]
                if then is not None and (len(page) > then.limit or exhausted):
                    ids = [e[0] for e in page[: then.limit]]
                    then.out[:] = [(ids, then.fn(c, ids))]
                return kept

            try:
                return await quick.run(unit)
            except _CelebritiesChanged as changed:
                if changed.now is not None:
                    self._remember_celebrities(viewer, changed.now)
                raise
        else:
            p, f = post_t.c, follows.c
            followed = (
                sa.select(sa.literal(1))
                .where(f.follower_id == viewer, f.followee_id == p.author_id)
                .exists()
            )
            async with self.db.snapshot() as conn:
                rows = list(
                    await conn.execute(
                        sa.select(p.post_id, p.status, p.author_id).where(
                            p.post_id.in_(post_ids), sa.or_(p.author_id == viewer, followed)
                        )
                    )
                )
        return _kept(viewer, entries, rows)

    # -- ranking -------------------------------------------------------------------------

    async def ranked(self, viewer: int, cursor: Cursor, limit: int) -> Page:
        """Ranked mode: the newest ranked_candidates_max candidates (bounded by the anchor
        of the first page) scored by recency (age from the anchor), relationship and
        engagement."""
        anchor = cursor.anchor
        first = await self.page(
            viewer,
            Cursor(before=None if anchor is None else anchor + 1),
            self.config.ranked_candidates_max,
        )
        candidates = first.entries
        if anchor is None and candidates:
            anchor = candidates[0][0]
        scored = await self._scores(viewer, candidates)
        order = sorted(candidates, key=lambda e: (-scored[e[0]], -e[0]))
        start = cursor.offset
        shown = order[start : start + limit]
        has_more = start + limit < len(order)
        next_cursor = (
            Cursor(anchor=anchor, offset=start + limit) if has_more and anchor is not None else None
        )
        return Page(shown, next_cursor, has_more)

    async def _scores(self, viewer: int, entries: list[Entry]) -> dict[int, float]:
        c = self.config
        if not entries:
            return {}
        authors = sorted({e[1] for e in entries})
        p = post_t.c
        async with self.db.snapshot() as conn:
            liked = await conn.execute(
                sa.select(p.author_id, sa.func.count())
                .select_from(likes.join(post_t, p.post_id == likes.c.post_id))
                .where(likes.c.user_id == viewer, p.author_id.in_(authors))
                .group_by(p.author_id)
            )
            ties = {int(a): int(n) for a, n in liked}
            commented = await conn.execute(
                sa.select(p.author_id, sa.func.count())
                .select_from(comments.join(post_t, p.post_id == comments.c.post_id))
                .where(comments.c.author_id == viewer, p.author_id.in_(authors))
                .group_by(p.author_id)
            )
            for a, n in commented:
                ties[int(a)] = ties.get(int(a), 0) + int(n)
            counts = await conn.execute(
                sa.select(p.post_id, p.like_count, p.comment_count, p.created_unix_s).where(
                    p.post_id.in_([e[0] for e in entries])
                )
            )
            engagement = {int(i): (int(lc), int(cc), float(t)) for i, lc, cc, t in counts}
        # Ages count from the newest candidate (the anchor), not from the clock: the pages
        # of one ranked session then share one order, however long the reader scrolls.
        now = max((t for _, _, t in engagement.values()), default=time.time())
        out: dict[int, float] = {}
        for post_id, author_id in entries:
            like_count, comment_count, created = engagement.get(post_id, (0, 0, now))
            age = max(0.0, now - created)
            out[post_id] = (
                c.rank_recency_weight * 0.5 ** (age / c.rank_recency_half_life_s)
                + c.rank_relationship_weight * math.log1p(ties.get(author_id, 0))
                + c.rank_engagement_weight * math.log1p(like_count + 2 * comment_count)
            )
        return out


class _Source:
    """One list (the viewer's timeline or a celebrity's list) read below a cursor, newest
    first; past the end of an incomplete list, its authors' older posts from SQL."""

    __slots__ = ("authors", "buffer", "cursor", "done", "first", "hot_done", "is_timeline", "key")

    def __init__(
        self, key: str, authors: list[int] | None, before: int | None, first: int | None = None
    ) -> None:
        self.key = key
        self.first = first  # the entries of its first read at most (None: the round's count)
        self.is_timeline = authors is None  # the viewer's own, else a celebrity's list
        self.authors = authors  # the SQL continuation's authors (None: found when needed)
        self.cursor = before
        self.buffer: list[Entry] = []  # reversed: pop() gives the newest
        self.hot_done = False
        self.done = False

    def fill(self, entries: list[Entry]) -> None:
        if entries:
            self.cursor = entries[-1][0]
            self.buffer = entries[::-1]


def _take(sources: list[_Source], n: int, last: int | None, into: list[Entry]) -> int | None:
    """Moves up to n entries, newest first, from the sources into `into`, dropping an
    entry already taken from another source; stops where a source that may hold more
    has an empty buffer (it is refilled first). Returns the last post id taken."""
    if any(not s.buffer and not s.done for s in sources):
        return last
    heads = [(-s.buffer[-1][0], i) for i, s in enumerate(sources) if s.buffer]
    heapq.heapify(heads)
    taken = 0
    while taken < n and heads:
        _, i = heapq.heappop(heads)
        source = sources[i]
        entry = source.buffer.pop()
        if last is None or entry[0] < last:  # else the same post from two lists
            last = entry[0]
            into.append(entry)
            taken += 1
        if source.buffer:
            heapq.heappush(heads, (-source.buffer[-1][0], i))
        elif not source.done:
            break  # refilled before anything below it is taken
    return last


@dataclass(frozen=True, slots=True)
class _Then:
    """`Feed.page`'s hydrate for a page of `limit`; its (post ids, result) goes to `out`."""

    fn: Hydrate
    limit: int
    out: list[Any]


class _CelebritiesChanged(Exception):
    """A read made with remembered celebrities found them changed (`now`: those read in
    the unit that found it, None when a list to rebuild needs them read first)."""

    def __init__(self, now: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.now = now


def _celebrities_in(c: sqlite3.Connection, viewer: int) -> tuple[int, ...]:
    """The celebrities the viewer follows, sorted, on the quick reader's connection."""
    return tuple(sorted(r[0] for r in c.execute(_CELEBRITY_FOLLOWEES_SQL, (viewer,))))


def _kept(viewer: int, entries: list[Entry], rows: Any) -> list[Entry]:
    """The entries the rows of `_keep`'s query (post id, status, author id) let through."""
    status = {int(r[0]): r for r in rows}
    out = []
    for post_id, author_id in entries:
        got = status.get(post_id)
        if got is None or int(got[2]) != author_id:
            continue
        if got[1] == posts.PostStatus.LIVE or (
            got[1] == posts.PostStatus.PROCESSING and author_id == viewer
        ):
            out.append((post_id, author_id))
    return out
