"""The two hot reads of stories as single statements: whether a viewer may see one live
story (POST /stories/{id}/seen, before every view is counted), and which of some authors
are on the other side of a block from a viewer (every cached tray read). Each is one SQL
statement, run on SQLite through the database's quick reader (common/quickread.py: one
thread hop) when it has one, else in a snapshot. The rules are social/stories.py's
(`visible_among`); tests/social/test_stories.py checks both paths agree."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from common.db import Database
from social.errors import NotVisible
from social.schema import blocks, follows, users
from social.stories import CLOSE_FRIENDS, Story, story_of
from social.stories_schema import close_friends, stories


async def _rows(
    db: Database, statement: sa.Select[Any] | sa.CompoundSelect, params: dict[str, Any]
) -> list[Any]:
    """Runs a statement whose parameters are named bindparams (so its compiled form is the
    same every call: compiled once per process for the quick reader, cached by SQLAlchemy
    otherwise)."""
    quick = db.quick
    if quick is None:
        async with db.snapshot() as conn:
            return list(await conn.execute(statement, params))
    sql, order, names, fixed = _compiled(statement)
    values = tuple(params[name] if name in params else fixed[name] for name in order)

    def run(c: Any) -> list[Any]:
        return [dict(zip(names, row, strict=True)) for row in c.execute(sql, values)]

    return [_Row(r) for r in await quick.run(run)]


_Compiled = tuple[str, tuple[str, ...], tuple[str, ...], dict[str, Any]]
_COMPILED: dict[int, _Compiled] = {}


def _compiled(statement: Any) -> _Compiled:
    """(SQLite SQL with ? placeholders, the bindparam name of each, the column names, the
    values of the statement's own literals)."""
    key = id(statement)
    found = _COMPILED.get(key)
    if found is None:
        compiled = statement.compile(dialect=sqlite.dialect())
        found = (
            compiled.string,
            tuple(compiled.positiontup or ()),
            tuple(c.key for c in statement.selected_columns),
            dict(compiled.params),
        )
        _COMPILED[key] = found
    return found


class _Row:
    """A plain row (the quick reader's) with the attribute and mapping access of SQLAlchemy's."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._mapping = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None


def _blocked(viewer: Any, author: Any) -> sa.ColumnElement[bool]:
    b = blocks.c
    return sa.exists().where(
        sa.or_(
            sa.and_(b.blocker_id == author, b.blocked_id == viewer),
            sa.and_(b.blocker_id == viewer, b.blocked_id == author),
        )
    )


def _visible_live_statement() -> sa.Select[Any]:
    s, u, f, c = stories.c, users.c, follows.c, close_friends.c
    viewer: Any = sa.bindparam("viewer")
    now: Any = sa.bindparam("now")
    return (
        sa.select(stories)
        .select_from(stories.join(users, u.user_id == s.author_id))
        .where(
            s.story_id == sa.bindparam("story_id"),
            s.created_unix_s <= now,
            s.expires_unix_s > now,
            sa.or_(
                s.author_id == viewer,
                sa.and_(
                    ~_blocked(viewer, s.author_id),
                    sa.or_(
                        u.is_private.is_(False),
                        sa.exists().where(f.follower_id == viewer, f.followee_id == s.author_id),
                    ),
                    sa.or_(
                        s.audience != CLOSE_FRIENDS,
                        sa.exists().where(c.owner_id == s.author_id, c.friend_id == viewer),
                    ),
                ),
            ),
        )
    )


_VISIBLE_LIVE: Final = _visible_live_statement()


async def visible_live(db: Database, viewer: int, story_id: int, *, now: float) -> Story:
    """The live story if the viewer may see it; NotVisible otherwise (absent the same)."""
    rows = await _rows(db, _VISIBLE_LIVE, {"viewer": viewer, "story_id": story_id, "now": now})
    if not rows:
        raise NotVisible("no such story")
    return story_of(rows[0])


def _blocked_among_statement() -> sa.CompoundSelect:
    b = blocks.c
    viewer: Any = sa.bindparam("viewer")
    others: Any = sa.bindparam("others", expanding=True)
    return sa.union(
        sa.select(b.blocked_id.label("user_id")).where(
            b.blocker_id == viewer, b.blocked_id.in_(others)
        ),
        sa.select(b.blocker_id.label("user_id")).where(
            b.blocked_id == viewer, b.blocker_id.in_(others)
        ),
    )


_BLOCKED_AMONG: Final = _blocked_among_statement()


async def blocked_among(db: Database, viewer: int, others: Iterable[int]) -> set[int]:
    """The users among `others` who blocked the viewer or whom the viewer blocked."""
    wanted = sorted(set(others))
    if not wanted:
        return set()
    if db.quick is None:
        rows = await _rows(db, _BLOCKED_AMONG, {"viewer": viewer, "others": wanted})
        return {int(r.user_id) for r in rows}
    # The IN list's length varies: plain SQL rather than a compile per call.
    marks = ", ".join("?" * len(wanted))
    sql = (
        f"SELECT blocked_id FROM {blocks.name} WHERE blocker_id = ? AND blocked_id IN ({marks})"
        f" UNION SELECT blocker_id FROM {blocks.name} WHERE blocked_id = ?"
        f" AND blocker_id IN ({marks})"
    )
    values = (viewer, *wanted, viewer, *wanted)
    found = await db.quick.run(lambda c: c.execute(sql, values).fetchall())
    return {int(r[0]) for r in found}
