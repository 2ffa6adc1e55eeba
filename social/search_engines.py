"""The search index behind one protocol, two engines: SQLite FTS5 (trigram tokenizer) and
PostgreSQL (tsvector + pg_trgm). An engine writes index rows (inside the caller's
transaction) and finds candidate ids for a folded query of at least
search_text.TRIGRAM_CHARS characters; ranking is not its business (social/search_rank.py).
"""

from __future__ import annotations

import json
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
    KEYS_TABLE,
    WORDS_TABLE,
    WORDS_TRIGRAMS_TABLE,
    trgm_schema,
)
from social.search_text import (
    closest_words,
    fts_phrase,
    fts_typo_match,
    like_pattern,
    like_typo_patterns,
    prefix_tsquery,
    words,
)

KINDS: Final = tuple(INDEX_TABLES)
# Typo candidates: the words holding a typo's pieces that are read (the engine's best
# first) before their edit distances are compared (search_text.closest_words).
FUZZY_WORDS_MAX: Final = 500


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

    async def begin_read(self, conn: AsyncConnection) -> None:
        """Prepares a read transaction for text and fuzzy candidate queries (called once,
        before the first of them; a typeahead answered by prefix keys never calls it)."""
        ...

    async def text_candidates(
        self, conn: AsyncConnection, kind: str, query: str, *, limit: int, follower: int | None
    ) -> list[int]:
        """Entities whose text contains the query (SQLite) or a word starting with each
        of its words or the query itself (PostgreSQL), the `limit` most popular; and
        when `follower` is given (accounts), the `limit` most popular of those it
        follows as well, in the same statement."""
        ...

    async def fuzzy_candidates(
        self,
        conn: AsyncConnection,
        kind: str,
        query: str,
        *,
        limit: int,
        per_word: int,
        similarity_min: float,
    ) -> list[int]:
        """Entities that may be within a typo of a query word: with a key (a word of the
        kind's vocabulary, search_words) holding the pieces of one of
        search_text.typo_pieces(query) in order. At most `limit` words, SQLite: those
        keeping the most alternatives first (then the closest in length); PostgreSQL: a
        pg_trgm word similarity of at least `similarity_min`, the most similar first; of
        each word its `per_word` most popular entities (they share the word's match, so
        ranking orders them by popularity and the viewer's relation, as the prefix keys'),
        `limit` entities in that order."""
        ...


def _following(kind: str, follower: int | None, id_col: Any = None) -> sa.ColumnElement[bool]:
    """True, or (accounts) only the accounts `follower` follows (`id_col`: the column
    holding the account id, the source's by default)."""
    if follower is None:
        return sa.true()
    return (SOURCES[kind][1] if id_col is None else id_col).in_(
        sa.select(follows.c.followee_id).where(follows.c.follower_id == follower)
    )


async def candidate_ids(
    conn: AsyncConnection,
    query_for: Callable[[sa.ColumnElement[bool]], sa.Select[Any]],
    kind: str,
    follower: int | None,
    values: dict[str, Any] | None = None,
    *,
    id_col: Any = None,
) -> list[int]:
    """Runs `query_for(true)` and, with a follower, `query_for(followed by it)` too, as
    one UNION ALL (one round trip); the ids in order, the followed ones after."""
    query: Any = query_for(sa.true())
    if follower is not None:
        query = sa.union_all(
            sa.select(query.subquery()),
            sa.select(query_for(_following(kind, follower, id_col)).subquery()),
        )
    return [int(r[0]) for r in (await conn.execute(query, values or {})).all()]


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

    async def begin_read(self, conn: AsyncConnection) -> None:
        """Nothing to set."""

    async def text_candidates(
        self, conn: AsyncConnection, kind: str, query: str, *, limit: int, follower: int | None
    ) -> list[int]:
        return await self._match(conn, kind, fts_phrase(query), limit, follower)

    async def fuzzy_candidates(
        self,
        conn: AsyncConnection,
        kind: str,
        query: str,
        *,
        limit: int,
        per_word: int,
        similarity_min: float,
    ) -> list[int]:
        match = fts_typo_match(query)
        if match is None:
            return []
        # The words' trigram index finds the words with the long pieces, and LIKE checks
        # every piece in its order on those words only: short strings, a few thousand at
        # worst (`quinal`: 13,769 words of 150,000 hold `qui` or `nal`; the accounts'
        # rows were 12,248 for the same pieces, each a username and a full name joined
        # with its account). A name within one typo keeps the pieces of most
        # alternatives: the words keeping more come first, then those closest to the
        # query's longest word in length (CROSS JOIN: SQLite's planner otherwise walks
        # every key of the kind). Each word's entities are its keys' most popular
        # `per_word`: the popularity floor (the per_word-th key's) bounds the covering
        # index's range (`robert`: 40 keys of 4,000).
        patterns = like_typo_patterns(query)
        kept = " + ".join(f"(w.word LIKE :p{i} ESCAPE '\\')" for i in range(len(patterns)))
        found = await conn.execute(
            sa.text(
                f"SELECT word FROM (SELECT w.word AS word, {kept} AS kept"
                f" FROM {WORDS_TRIGRAMS_TABLE} CROSS JOIN {WORDS_TABLE} AS w"
                f" WHERE w.word_id = {WORDS_TRIGRAMS_TABLE}.rowid"
                f" AND {WORDS_TRIGRAMS_TABLE} MATCH :match AND w.kind = :kind)"
                " WHERE kept > 0 ORDER BY kept DESC, abs(length(word) - :len), word LIMIT :words"
            ),
            {
                "match": match,
                "kind": KIND_CODES[kind],
                "len": max(map(len, words(query)), default=0),
                "words": FUZZY_WORDS_MAX,
            }
            | {f"p{i}": p for i, p in enumerate(patterns)},
        )
        chosen = closest_words(query, [str(r[0]) for r in found.all()], limit)
        if not chosen:
            return []
        floor = (
            f"SELECT f.popularity FROM {KEYS_TABLE} AS f WHERE f.kind = :kind"
            " AND f.key = m.word ORDER BY f.popularity DESC LIMIT 1 OFFSET :floor"
        )
        rows = await conn.execute(
            sa.text(
                "WITH m(word, rank) AS (SELECT value, key FROM json_each(:words))"
                f" SELECT k.entity_id FROM m CROSS JOIN {KEYS_TABLE} AS k"
                " WHERE k.kind = :kind AND k.key = m.word"
                f" AND k.popularity >= coalesce(({floor}), 0) GROUP BY k.entity_id"
                " ORDER BY min(m.rank), max(k.popularity) DESC, k.entity_id LIMIT :n"
            ),
            {
                "words": json.dumps(chosen),
                "kind": KIND_CODES[kind],
                "floor": per_word - 1,
                "n": limit,
            },
        )
        return [int(r[0]) for r in rows.all()]

    async def _match(
        self,
        conn: AsyncConnection,
        kind: str,
        match: str,
        limit: int,
        follower: int | None,
    ) -> list[int]:
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

        return await candidate_ids(conn, query_for, kind, follower, {"match": match})


class PostgresEngine:
    """Tables (entity_id, terms, doc): GIN over to_tsvector('simple', terms) for word
    prefixes, GIN pg_trgm over terms for substrings and similarity."""

    def __init__(self) -> None:
        self._trgm: str | None = None  # pg_trgm's schema, read once

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
        self, conn: AsyncConnection, kind: str, query: str, *, limit: int, follower: int | None
    ) -> list[int]:
        index = sa.table(INDEX_TABLES[kind], sa.column("entity_id"), sa.column("popularity"))
        tsquery = prefix_tsquery(query)
        found: sa.ColumnElement[bool] = sa.text("terms LIKE :like ESCAPE '\\'")  # type: ignore[assignment]
        # One word: the substring (pg_trgm) covers its prefixes, and a tsvector prefix
        # scan of a short word is the slower of the two (measured). Several words: each
        # a word prefix, in any order.
        if tsquery is not None and len(words(query)) > 1:
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

        values = {"tsq": tsquery, "like": like_pattern(query)}
        return await candidate_ids(
            conn, query_for, kind, follower, values, id_col=index.c.entity_id
        )

    async def begin_read(self, conn: AsyncConnection) -> None:
        # Ends with the transaction: no sequential scan, which the planner picks for a
        # small table not knowing that word_similarity and LIKE cost microseconds a row
        # (20,000 hashtags: 70 ms by a scan, about 2 ms through the index).
        await conn.execute(sa.text("SELECT set_config('enable_seqscan', 'off', true)"))

    async def fuzzy_candidates(
        self,
        conn: AsyncConnection,
        kind: str,
        query: str,
        *,
        limit: int,
        per_word: int,
        similarity_min: float,
    ) -> list[int]:
        patterns = like_typo_patterns(query)
        if not patterns:
            return []
        if self._trgm is None:
            self._trgm = await trgm_schema(conn)
        # Each pattern is served by the words' trigram index (its pieces have 3+
        # characters); the similarity is computed for the matching words only; the
        # closest words kept (search_text.closest_words), and each one's most popular
        # `per_word` entities read from the prefix keys by equality (an index walk that
        # stops at the limit).
        like = " OR ".join(f"word LIKE :p{i} ESCAPE '\\'" for i in range(len(patterns)))
        found = await conn.execute(
            sa.text(
                f"SELECT word FROM (SELECT word, {self._trgm}.word_similarity(:q, word) AS s"
                f" FROM {WORDS_TABLE} WHERE kind = :kind AND ({like})) AS x WHERE s >= :t"
                " ORDER BY s DESC, word LIMIT :words"
            ),
            {"q": query, "t": similarity_min, "kind": KIND_CODES[kind], "words": FUZZY_WORDS_MAX}
            | {f"p{i}": p for i, p in enumerate(patterns)},
        )
        chosen = closest_words(query, [str(r[0]) for r in found.all()], limit)
        if not chosen:
            return []
        rows = await conn.execute(
            sa.text(
                "SELECT k.entity_id FROM unnest(CAST(:words AS TEXT[])) WITH ORDINALITY"
                " AS m(word, rank)"
                f" CROSS JOIN LATERAL (SELECT entity_id, popularity FROM {KEYS_TABLE}"
                " WHERE kind = :kind AND key = m.word ORDER BY popularity DESC"
                " LIMIT :per_word) AS k GROUP BY k.entity_id"
                " ORDER BY min(m.rank), max(k.popularity) DESC, k.entity_id LIMIT :n"
            ),
            {"words": chosen, "kind": KIND_CODES[kind], "per_word": per_word, "n": limit},
        )
        return [int(r[0]) for r in rows.all()]


def engine_for(dialect: str) -> SearchEngine:
    if dialect == "sqlite":
        return SqliteEngine()
    if dialect == "postgresql":
        return PostgresEngine()
    raise ValueError(f"no search engine for {dialect}")
