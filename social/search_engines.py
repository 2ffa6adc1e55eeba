"""The search index behind one protocol, two engines: SQLite FTS5 (trigram tokenizer) and
PostgreSQL (tsvector + pg_trgm). An engine writes index rows (inside the caller's
transaction) and finds, for a folded query of at least search_text.TRIGRAM_CHARS
characters, the substring matches of several kinds in one statement. Typo candidates are
the same on both engines (social/search_variants.py), and so are the prefix keys
(social/search_keys.py). Ranking is not its business (social/search_rank.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from social import search_keys
from social.schema import follows
from social.search_keys import KIND_CODES, SOURCES
from social.search_schema import (
    FTS_COLUMNS,
    INDEX_TABLES,
)
from social.search_text import (
    fts_phrase,
    like_pattern,
    prefix_tsquery,
    words,
)

KINDS: Final = tuple(INDEX_TABLES)
_KIND_NAMES: Final = {code: kind for kind, code in KIND_CODES.items()}


class SearchEngine(Protocol):
    """Index rows are (kind, entity id, folded fields); `put` replaces an entity's row
    and its prefix keys (social/search_keys.py, the same on both engines)."""

    async def put(
        self,
        conn: AsyncConnection,
        kind: str,
        rows: Sequence[tuple[int, tuple[str, ...]]],
        *,
        fresh: bool = False,
    ) -> None:
        """`fresh`: these entities have no prefix keys yet (a rebuild into emptied
        tables), so none are looked for to delete."""
        ...

    async def remove(self, conn: AsyncConnection, kind: str, entity_id: int) -> None: ...

    async def popularity_changed(
        self, conn: AsyncConnection, kind: str, entity_ids: Sequence[int]
    ) -> None:
        """The source's count (followers, posts) of these entities changed."""
        ...

    @property
    def read_settings(self) -> sa.Select[Any] | None:
        """A statement a search runs first in its transaction (PostgreSQL:
        transaction-local planner settings for the statements that follow), or None."""
        ...

    async def text_candidates(
        self,
        conn: AsyncConnection,
        kinds: tuple[str, ...],
        query: str,
        *,
        limit: int,
        follower: int,
    ) -> dict[str, list[int]]:
        """Of each kind, entities whose text contains the query (SQLite) or a word starting
        with each of its words or the query itself (PostgreSQL), the `limit` most
        popular; for accounts also the `limit` most popular of those `follower` follows;
        every kind in one statement."""
        ...


def _following(kind: str, id_col: Any = None) -> sa.ColumnElement[bool]:
    """Only the accounts the bound parameter `follower` follows (`id_col`: the column
    holding the account id, the source's by default)."""
    return (SOURCES[kind][1] if id_col is None else id_col).in_(
        sa.select(follows.c.followee_id).where(follows.c.follower_id == sa.bindparam("follower"))
    )


def _with_followed(
    query_for: Callable[[sa.ColumnElement[bool]], sa.Select[Any]],
    kind: str,
    id_col: Any = None,
) -> Any:
    """`query_for(true)` and, for accounts, `query_for(followed by the bound parameter
    follower)` too, as one UNION ALL."""
    query: Any = query_for(sa.true())
    if kind == "accounts":
        query = sa.union_all(
            sa.select(query.subquery()),
            sa.select(query_for(_following(kind, id_col)).subquery()),
        )
    return query


def _by_kind(queries: dict[str, Any]) -> sa.CompoundSelect:
    """The id queries of several kinds as one UNION ALL of rows (kind code, id)."""
    branches = []
    for kind, query in queries.items():
        sub = query.subquery()
        code = sa.literal_column(str(KIND_CODES[kind]), sa.Integer).label("kind")
        branches.append(sa.select(code, sub.c[0].label("entity_id")))
    return sa.union_all(*branches)


async def _ids_by_kind(
    conn: AsyncConnection, kinds: tuple[str, ...], query: Any, values: dict[str, Any]
) -> dict[str, list[int]]:
    """Runs a _by_kind statement (one round trip): the ids of each kind, in no particular
    order."""
    out: dict[str, list[int]] = {kind: [] for kind in kinds}
    for row in (await conn.execute(query, values)).all():
        out[_KIND_NAMES[int(row[0])]].append(int(row[1]))
    return out


class SqliteEngine:
    """FTS5 tables with the trigram tokenizer; the rowid is the entity id."""

    async def put(
        self,
        conn: AsyncConnection,
        kind: str,
        rows: Sequence[tuple[int, tuple[str, ...]]],
        *,
        fresh: bool = False,
    ) -> None:
        if not rows:
            return
        table, columns = INDEX_TABLES[kind], FTS_COLUMNS[kind]
        await conn.execute(
            sa.text(f"DELETE FROM {table} WHERE rowid = :id"), [{"id": r[0]} for r in rows]
        )
        names = ", ".join(columns)
        marks = ", ".join(f":c{i}" for i in range(len(columns)))
        await conn.execute(
            sa.text(f"INSERT INTO {table} (rowid, {names}) VALUES (:id, {marks})"),
            [{"id": i, **{f"c{n}": v for n, v in enumerate(fields)}} for i, fields in rows],
        )
        await search_keys.put(conn, kind, rows, fresh=fresh)

    async def remove(self, conn: AsyncConnection, kind: str, entity_id: int) -> None:
        await conn.execute(
            sa.text(f"DELETE FROM {INDEX_TABLES[kind]} WHERE rowid = :id"), {"id": entity_id}
        )
        await search_keys.remove(conn, kind, entity_id)

    async def popularity_changed(
        self, conn: AsyncConnection, kind: str, entity_ids: Sequence[int]
    ) -> None:
        """The prefix keys' copy (FTS matches are ranked by the source's count directly)."""
        await search_keys.popularity_changed(conn, kind, entity_ids)

    @property
    def read_settings(self) -> sa.Select[Any] | None:
        """Nothing to set."""
        return None

    async def text_candidates(
        self,
        conn: AsyncConnection,
        kinds: tuple[str, ...],
        query: str,
        *,
        limit: int,
        follower: int,
    ) -> dict[str, list[int]]:
        values = {"match": fts_phrase(query), "follower": follower}
        return await _ids_by_kind(conn, kinds, _sqlite_text_query(kinds, limit), values)


@functools.cache
def _sqlite_text_query(kinds: tuple[str, ...], limit: int) -> sa.CompoundSelect:
    """FTS5 substring matches of every kind (bound: match, follower), the most popular
    first (made once per kinds and limit)."""

    def match(kind: str) -> Any:
        index = sa.table(INDEX_TABLES[kind], sa.column("rowid"))
        table, id_col, count_col = SOURCES[kind]

        def query_for(where: sa.ColumnElement[bool]) -> sa.Select[Any]:
            return (
                sa.select(id_col)
                .select_from(index.join(table, id_col == index.c.rowid))
                .where(sa.text(f"{INDEX_TABLES[kind]} MATCH :match"), where)
                .order_by(count_col.desc())
                .limit(limit)
            )

        return _with_followed(query_for, kind)

    return _by_kind({kind: match(kind) for kind in kinds})


class PostgresEngine:
    """Tables (entity_id, terms, doc): GIN over to_tsvector('simple', terms) for word
    prefixes, GIN pg_trgm over terms for substrings and similarity."""

    async def put(
        self,
        conn: AsyncConnection,
        kind: str,
        rows: Sequence[tuple[int, tuple[str, ...]]],
        *,
        fresh: bool = False,
    ) -> None:
        if not rows:
            return
        table = INDEX_TABLES[kind]
        source, id_col, count_col = SOURCES[kind]
        popularity = (
            f"COALESCE((SELECT {count_col.name} FROM {source.name}"
            f" WHERE {id_col.name} = CAST(:id AS BIGINT)), 0)"
        )
        await conn.execute(
            sa.text(
                f"INSERT INTO {table} (entity_id, terms, doc, popularity) VALUES"
                f" (CAST(:id AS BIGINT), :terms, to_tsvector('simple', :terms), {popularity})"
                " ON CONFLICT (entity_id) DO UPDATE SET terms = excluded.terms,"
                " doc = excluded.doc, popularity = excluded.popularity"
            ),
            [{"id": i, "terms": " ".join(f for f in fields if f)} for i, fields in rows],
        )
        await search_keys.put(conn, kind, rows, fresh=fresh)

    async def remove(self, conn: AsyncConnection, kind: str, entity_id: int) -> None:
        await conn.execute(
            sa.text(f"DELETE FROM {INDEX_TABLES[kind]} WHERE entity_id = :id"), {"id": entity_id}
        )
        await search_keys.remove(conn, kind, entity_id)

    async def popularity_changed(
        self, conn: AsyncConnection, kind: str, entity_ids: Sequence[int]
    ) -> None:
        if not entity_ids:
            return
        source, id_col, count_col = SOURCES[kind]
        await conn.execute(
            sa.text(
                f"UPDATE {INDEX_TABLES[kind]} AS s SET popularity = src.{count_col.name}"
                f" FROM {source.name} AS src WHERE src.{id_col.name} = s.entity_id"
                " AND s.entity_id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": sorted(set(entity_ids))},
        )
        await search_keys.popularity_changed(conn, kind, entity_ids)

    async def text_candidates(
        self,
        conn: AsyncConnection,
        kinds: tuple[str, ...],
        query: str,
        *,
        limit: int,
        follower: int,
    ) -> dict[str, list[int]]:
        tsquery = prefix_tsquery(query)
        several = tsquery is not None and len(words(query)) > 1
        values = {"tsq": tsquery, "like": like_pattern(query), "follower": follower}
        return await _ids_by_kind(conn, kinds, _pg_text_query(kinds, limit, several), values)

    @property
    def read_settings(self) -> sa.Select[Any] | None:
        """Ends with the transaction: no sequential scan, which the planner picks for a
        small table not knowing that LIKE costs microseconds a row (20,000 hashtags: 70 ms
        by a scan, about 2 ms through the index); and generic plans for the search's
        prepared statements from their first execution. With the default
        (`plan_cache_mode = auto`) PostgreSQL kept planning the prefix statement (a union
        of every kind's branches) for each query, 2.5-2.9 ms a time: the same prefix
        statements, 160 in a row over 100,000 accounts, took 3.05-4.07 ms median and
        10.9-14.4 ms p90 so, 1.41-2.60 and 1.70-3.52 with generic plans. Its own round
        trip, before the prefix statement: a setting selected by that statement applied
        only to the ones after it."""
        return _PG_READ_SETTINGS


_PG_READ_SETTINGS: Final = sa.select(
    sa.func.set_config("enable_seqscan", "off", True),
    sa.func.set_config("plan_cache_mode", "force_generic_plan", True),
)


@functools.cache
def _pg_text_query(kinds: tuple[str, ...], limit: int, several: bool) -> sa.CompoundSelect:
    """Substring (and with `several` words, word prefix) matches of every kind (bound:
    like, tsq, follower), the most popular first (made once per kinds, limit and
    several)."""

    def text_query(kind: str) -> Any:
        index = sa.table(INDEX_TABLES[kind], sa.column("entity_id"), sa.column("popularity"))
        found: sa.ColumnElement[bool] = sa.text("terms LIKE :like ESCAPE '\\'")  # type: ignore[assignment]
        # One word: the substring (pg_trgm) covers its prefixes, and a tsvector prefix
        # scan of a short word is the slower of the two (measured). Several words: each
        # a word prefix, in any order.
        if several:
            found = sa.or_(sa.text("doc @@ to_tsquery('simple', :tsq)"), found)

        # The search service asks only when the prefix keys found too few, so matches are
        # usually sparse: read them through the trigram index and sort them (`+ 0` keeps
        # the planner from walking the popularity index instead, which for a sparse match
        # reads the whole table: 20-30 ms over 100,000 accounts).
        def query_for(where: sa.ColumnElement[bool]) -> sa.Select[Any]:
            return (
                sa.select(index.c.entity_id)
                .where(found, where)
                .order_by((index.c.popularity + 0).desc(), index.c.entity_id)
                .limit(limit)
            )

        return _with_followed(query_for, kind, index.c.entity_id)

    return _by_kind({kind: text_query(kind) for kind in kinds})


def engine_for(dialect: str) -> SearchEngine:
    if dialect == "sqlite":
        return SqliteEngine()
    if dialect == "postgresql":
        return PostgresEngine()
    raise ValueError(f"no search engine for {dialect}")
