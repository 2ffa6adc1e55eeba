"""The prefix keys of the search index: one B-tree the typeahead walks on both engines.

Table `search_keys` (created by social/search_schema.py), one row per (kind, key, entity):

| column | meaning |
|---|---|
| kind | KIND_CODES[kind]: 1 accounts, 2 hashtags, 3 places |
| key | a folded whole field or word (search_text.index_keys), bytewise (COLLATE "C") |
| popularity | a copy of the source's count (followers, posts), updated with it |
| entity_id | users.user_id, hashtag_counts.tag_id, places.place_id |

Index `search_keys_prefix (kind, key, popularity, entity_id)` covers a prefix query: the
range `key >= q AND key < q || U+10FFFF` is read from the index alone and its most popular
`limit` rows kept (or, for a longer prefix, each word's in the range: `prefix_query`), and
only those are joined with their source rows (names, counts, for accounts the block and
follow checks) in the same statement. Index `search_keys_entity (kind, entity_id, key)`
serves the writes and the keys in range of the accounts a viewer follows.

Rows change in the same transaction as the rows they index, as the engines' index rows
(social/search_engines.py calls `put` and `remove`; `popularity_changed` follows the
counts); `search_index.rebuild` rewrites them.

Table `search_words` (kind, word): the distinct keys of each kind, and
`search_word_variants` (kind, variant, word), each word under its one-deletion variants
(social/search_schema.py). A new key's word and its variants are added in the same
transaction as the key; words are only removed by a rebuild (a word no key holds finds no
entity). Typo candidates (social/search_variants.py) are words first, a few hundred short
strings where the entities' rows were thousands (a full-name word like `robert` is one
word for 4,000 accounts), then the entities of the words kept, through the prefix index's
equality lookup `key = word`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from social.schema import blocks, follows, users
from social.search_schema import (
    ENTITY_INDEX,
    HEAD_CHARS_MAX,
    KEYS_TABLE,
    VARIANTS_TABLE,
    WORDS_TABLE,
    hashtag_counts,
    places,
)
from social.search_text import (
    VARIANT_WORD_CHARS_MAX,
    index_keys,
    prefix_upper_bound,
    variants,
)

KIND_CODES: Final = {"accounts": 1, "hashtags": 2, "places": 3}
# kind -> (source table, its id column, the count popularity is measured by)
SOURCES: Final = {
    "accounts": (users, users.c.user_id, users.c.follower_count),
    "hashtags": (hashtag_counts, hashtag_counts.c.tag_id, hashtag_counts.c.post_count),
    "places": (places, places.c.place_id, places.c.post_count),
}
assert set(KIND_CODES) == set(SOURCES)

keys = sa.table(
    KEYS_TABLE,
    sa.column("kind", sa.Integer),
    sa.column("key", sa.String),
    sa.column("popularity", sa.BigInteger),
    sa.column("entity_id", sa.BigInteger),
)


async def put(
    conn: AsyncConnection,
    kind: str,
    rows: Sequence[tuple[int, tuple[str, ...]]],
    *,
    fresh: bool = False,
) -> None:
    """Replaces the keys of these entities (their popularity read from the source);
    `fresh`: they have none (a rebuild), nothing to delete."""
    if not rows:
        return
    code = KIND_CODES[kind]
    if not fresh:
        await conn.execute(
            sa.delete(keys).where(
                keys.c.kind == code, keys.c.entity_id.in_(sorted({r[0] for r in rows}))
            )
        )
    _, id_col, count_col = SOURCES[kind]
    counts = {
        int(r[0]): int(r[1])
        for r in await conn.execute(
            sa.select(id_col, count_col).where(id_col.in_(sorted({r[0] for r in rows})))
        )
    }
    new = [(key, counts.get(i, 0), i) for i, fields in rows for key in index_keys(fields)]
    if not fresh:  # a rebuild makes the words once, from all its keys
        await _add_words(conn, code, sorted({k for k, _, _ in new}))
    if conn.dialect.name == "postgresql":
        # One statement over arrays: asyncpg's executemany costs a round of the protocol
        # per row (a rebuild of 5,000 accounts took 3.3 s that way, most of it here).
        await conn.execute(
            sa.text(
                f"INSERT INTO {KEYS_TABLE} (kind, key, popularity, entity_id)"
                " SELECT :kind, k, p, e FROM unnest(CAST(:keys AS TEXT[]),"
                " CAST(:pops AS BIGINT[]), CAST(:ids AS BIGINT[])) AS u(k, p, e)"
            ),
            {
                "kind": code,
                "keys": [k for k, _, _ in new],
                "pops": [p for _, p, _ in new],
                "ids": [e for _, _, e in new],
            },
        )
        return
    # The driver's own executemany: SQLAlchemy's parameter processing per row was most of
    # a rebuild's time.
    await conn.exec_driver_sql(
        f"INSERT INTO {KEYS_TABLE} (kind, key, popularity, entity_id) VALUES (?, ?, ?, ?)",
        [(code, k, p, e) for k, p, e in new],
    )


async def _add_words(conn: AsyncConnection, code: int, found: list[str]) -> None:
    """The words among `found` that the kind's vocabulary lacks, and their variants
    (search_text.variants; the same rows search_schema.create_words_table makes)."""
    if not found:
        return
    pairs = [(v, w) for w in found if len(w) <= VARIANT_WORD_CHARS_MAX for v in variants(w)]
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.text(
                f"INSERT INTO {WORDS_TABLE} (kind, word) SELECT :kind, w"
                " FROM unnest(CAST(:words AS TEXT[])) AS u(w) ON CONFLICT DO NOTHING"
            ),
            {"kind": code, "words": found},
        )
        await conn.execute(
            sa.text(
                f"INSERT INTO {VARIANTS_TABLE} (kind, variant, word) SELECT :kind, v, w"
                " FROM unnest(CAST(:variants AS TEXT[]), CAST(:words AS TEXT[])) AS u(v, w)"
                " ON CONFLICT DO NOTHING"
            ),
            {"kind": code, "variants": [v for v, _ in pairs], "words": [w for _, w in pairs]},
        )
        return
    await conn.exec_driver_sql(
        f"INSERT OR IGNORE INTO {WORDS_TABLE} (kind, word) VALUES (?, ?)",
        [(code, w) for w in found],
    )
    await conn.exec_driver_sql(
        f"INSERT OR IGNORE INTO {VARIANTS_TABLE} (kind, variant, word) VALUES (?, ?, ?)",
        [(code, v, w) for v, w in pairs],
    )


async def remove(conn: AsyncConnection, kind: str, entity_id: int) -> None:
    await conn.execute(
        sa.delete(keys).where(keys.c.kind == KIND_CODES[kind], keys.c.entity_id == entity_id)
    )


async def popularity_changed(conn: AsyncConnection, kind: str, entity_ids: Sequence[int]) -> None:
    """Copies the source's count of these entities into their keys."""
    if not entity_ids:
        return
    _, id_col, count_col = SOURCES[kind]
    await conn.execute(
        sa.update(keys)
        .where(keys.c.kind == KIND_CODES[kind], keys.c.entity_id.in_(sorted(set(entity_ids))))
        .values(popularity=sa.select(count_col).where(id_col == keys.c.entity_id).scalar_subquery())
    )


def prefix_query(
    kind: str, *, limit: int, followed: bool, chars: int, dialect: str
) -> sa.TextualSelect:
    """The `limit` most popular entities with a key starting with the bound parameter
    `q` (its upper bound `q_end`), an exact key first (column entity_id). One row per
    key: an entity may come twice.

    - `followed`: only the entities the bound parameter `viewer` follows, walked from the
      viewer's follows, each one's keys in the range through the entity index (kind,
      entity_id, key): a few hundred index seeks whatever the range holds (reading the
      range and keeping the followed took 2-3 ms for `ro`, 16,000 keys).
    - `chars` (the length of `q`) up to HEAD_CHARS_MAX: the keys whose first `chars`
      characters are `q`, walked in popularity order by the head index of that length
      (search_schema: (kind, substr(key, 1, n), popularity DESC, entity_id)), stopping at
      `limit`, and the exact key by equality: a short prefix spans thousands of keys
      (`ma`: 18,367 accounts' keys, 7.5 ms on PostgreSQL to read and sort them) and
      thousands of words (`qui`: 3,230, 11.7 ms word by word).
    - longer: the range of distinct words (search_words) first, then of each word its
      `limit` most popular keys by equality: a full-name word is one word for thousands of
      keys (`marga`: 25 words for 8,030 keys, 0.2 ms instead of 1.0 ms). SQLite: each
      word's keys bounded by the popularity of its limit-th (an index range), PostgreSQL:
      LATERAL ... LIMIT."""
    code = KIND_CODES[kind]
    order = (
        " ORDER BY CASE WHEN k.key = :q THEN 1 ELSE 0 END DESC, k.popularity DESC,"
        f" k.entity_id LIMIT {int(limit)}"
    )
    if followed:
        # SQLite otherwise prefers the covering prefix index, walking its range once per
        # followed account (184 ms for `ka`); PostgreSQL hash-joined the follows with the
        # whole range (1.4 ms for `marga`, 6,596 keys, against 300 probes; 3.5 ms for
        # `ma`), so its LATERAL subquery has OFFSET 0, which keeps it from being flattened
        # into that join.
        if dialect == "postgresql":
            sql = (
                f"SELECT k.entity_id FROM {follows.name} AS f"
                f" CROSS JOIN LATERAL (SELECT entity_id, key, popularity FROM {KEYS_TABLE}"
                f" WHERE kind = {code} AND entity_id = f.followee_id AND key >= :q"
                " AND key < :q_end OFFSET 0) AS k WHERE f.follower_id = :viewer"
            )
        else:
            sql = (
                f"SELECT k.entity_id FROM {follows.name} AS f CROSS JOIN {KEYS_TABLE} AS k"
                f" INDEXED BY {ENTITY_INDEX} WHERE f.follower_id = :viewer"
                f" AND k.kind = {code} AND k.entity_id = f.followee_id"
                " AND k.key >= :q AND k.key < :q_end"
            )
    elif chars <= HEAD_CHARS_MAX:
        sql = (
            "SELECT k.entity_id FROM (SELECT entity_id, key, popularity FROM (SELECT"
            f" entity_id, key, popularity FROM {KEYS_TABLE} WHERE kind = {code}"
            f" AND key = :q ORDER BY popularity DESC LIMIT {int(limit)}) AS e UNION ALL"
            " SELECT entity_id, key, popularity FROM (SELECT entity_id, key, popularity"
            f" FROM {KEYS_TABLE} WHERE kind = {code} AND substr(key, 1, {int(chars)}) = :q"
            f" ORDER BY popularity DESC, entity_id LIMIT {int(limit)}) AS h) AS k"
        )
    else:
        sql = (
            f"WITH w AS MATERIALIZED (SELECT word FROM {WORDS_TABLE} WHERE kind = {code}"
            " AND word >= :q AND word < :q_end)"
        )
        if dialect == "postgresql":
            sql += (
                " SELECT k.entity_id FROM w CROSS JOIN LATERAL (SELECT entity_id, key,"
                f" popularity FROM {KEYS_TABLE} WHERE kind = {code} AND key = w.word"
                f" ORDER BY popularity DESC LIMIT {int(limit)}) AS k"
            )
        else:
            sql += (
                f" SELECT k.entity_id FROM w CROSS JOIN {KEYS_TABLE} AS k"
                f" WHERE k.kind = {code} AND k.key = w.word AND k.popularity >= coalesce(("
                f"SELECT f.popularity FROM {KEYS_TABLE} AS f WHERE f.kind = {code}"
                " AND f.key = w.word ORDER BY f.popularity DESC"
                f" LIMIT 1 OFFSET {int(limit) - 1}), 0)"
            )
    return sa.text(sql + order).columns(sa.column("entity_id", sa.BigInteger))


def word_entities_query(kind: str, *, per_word: int, limit: int, dialect: str) -> sa.TextualSelect:
    """The entities of the words in the bound list `words_<kind>` (SQLite: a JSON array;
    PostgreSQL: an array), column entity_id: of each word its `per_word` most popular
    (SQLite: the keys at or above the popularity of its per_word-th, an index range;
    PostgreSQL: LATERAL ... LIMIT), the words' order first, then popularity, at most
    `limit`."""
    code, words = KIND_CODES[kind], f"words_{kind}"
    order = (
        " GROUP BY k.entity_id ORDER BY min(m.rank), max(k.popularity) DESC, k.entity_id"
        f" LIMIT {int(limit)}"
    )
    if dialect == "postgresql":
        sql = (
            f"SELECT k.entity_id FROM unnest(CAST(:{words} AS TEXT[])) WITH ORDINALITY"
            f" AS m(word, rank) CROSS JOIN LATERAL (SELECT entity_id, popularity"
            f" FROM {KEYS_TABLE} WHERE kind = {code} AND key = m.word"
            f" ORDER BY popularity DESC LIMIT {int(per_word)}) AS k"
        )
    else:
        sql = (
            f"SELECT k.entity_id FROM json_each(:{words}) AS m CROSS JOIN {KEYS_TABLE} AS k"
            f" WHERE k.kind = {code} AND k.key = m.value AND k.popularity >= coalesce(("
            f"SELECT f.popularity FROM {KEYS_TABLE} AS f WHERE f.kind = {code}"
            " AND f.key = m.value ORDER BY f.popularity DESC"
            f" LIMIT 1 OFFSET {int(per_word) - 1}), 0)"
        )
        order = order.replace("min(m.rank)", "min(m.key)")
    return sa.text(sql + order).columns(sa.column("entity_id", sa.BigInteger))


def listed_ids_query(kind: str, dialect: str) -> sa.TextualSelect:
    """The ids in the bound list `ids_<kind>` (SQLite: a JSON array; PostgreSQL: an
    array), column entity_id: one statement text whatever their number."""
    if dialect == "postgresql":
        sql = f"SELECT unnest(CAST(:ids_{kind} AS BIGINT[])) AS entity_id"
    else:
        sql = f"SELECT value AS entity_id FROM json_each(:ids_{kind})"
    return sa.text(sql).columns(sa.column("entity_id", sa.BigInteger))


def prefix_values(q: str) -> dict[str, str]:
    return {"q": q, "q_end": prefix_upper_bound(q)}


def blocked_either_way(viewer: Any, other: Any) -> sa.Exists:
    return sa.exists().where(
        sa.or_(
            sa.and_(blocks.c.blocker_id == viewer, blocks.c.blocked_id == other),
            sa.and_(blocks.c.blocker_id == other, blocks.c.blocked_id == viewer),
        )
    )
