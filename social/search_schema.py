"""Places and the search index: their tables and migrations, a component of their own
("search"; docs/api/search.md).

Entity tables (the same on both engines):
- `places`: a place an author named (name, coordinates rounded to
  [search] place_coordinate_decimals); one row per normalized name and rounded coordinates.
- `post_places`: the place a post carries (at most one).
- `hashtag_counts`: one row per hashtag with the number of posts carrying it that are not
  deleted; its integer `tag_id` keys the hashtag's index row.

Index tables, one per kind (accounts, hashtags, places), keyed by the entity's id
(`users.user_id`, `hashtag_counts.tag_id`, `places.place_id`) and holding its folded text
(social/search_text.py):
- SQLite: FTS5 virtual tables with the trigram tokenizer (substring matches of 3 or more
  characters; the rowid is the entity id).
- PostgreSQL: plain tables (entity_id, terms, doc, popularity) with a GIN tsvector index
  on `doc` (word prefixes), a GIN pg_trgm index on `terms` (substrings, similarity) and a
  B-tree on `popularity` (a copy of the source's count: followers, posts). pg_trgm is
  created in the `public` schema when missing; its functions are called schema-qualified,
  since a Database's search_path names its own schema only.
- Both: `search_keys` (kind, key, popularity, entity_id), the prefix keys of every kind
  (social/search_keys.py draws it): each whole folded field and word, walked by the
  typeahead through a covering B-tree.
- Both: `search_words` (kind, word), the distinct keys of every kind (a few hundred
  full-name words stand for 100,000 accounts' keys), keyed by (kind, word): the words of
  a prefix are read from it (social/search_keys.py), and typo candidates are looked for
  among these short words, their entities then read by the keys' equality lookup.
- Both: `search_word_variants` (kind, variant, word), keyed by all three: each word of
  at most search_text.VARIANT_WORD_CHARS_MAX characters under itself and under every
  string one deleted character makes of it (search_text.variants). Two words within one
  typo share a variant, so a query's variants, looked up as B-tree prefixes, find the
  words within one typo of it or of their beginning (social/search_variants.py).

The index rows change in the same transaction as the rows they index (social/search_index.py);
`pinhole search reindex` rebuilds them. A change is a new migration appended to MIGRATIONS.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateTable

from common.db import Migration
from social.search_text import VARIANT_WORD_CHARS_MAX

COMPONENT: Final = "search"
PLACE_NAME_CHARS_MAX: Final = 100
HASHTAG_CHARS_MAX: Final = 100  # as social.schema.hashtags.tag
# The index tables: kind -> table name.
INDEX_TABLES: Final = {
    "accounts": "search_accounts",
    "hashtags": "search_hashtags",
    "places": "search_places",
}
# The prefix keys of every kind, the same on both engines (social/search_keys.py).
KEYS_TABLE: Final = "search_keys"
# Its index by entity (kind, entity_id, key): the writes, and the keys of followed accounts.
ENTITY_INDEX: Final = f"{KEYS_TABLE}_entity"
# Its head indexes, one per length n up to this: (kind, substr(key, 1, n), popularity
# DESC, entity_id), the most popular keys of a prefix of n characters in index order.
HEAD_CHARS_MAX: Final = 3
HEAD_INDEXES: Final = tuple(f"{KEYS_TABLE}_head{n}" for n in range(1, HEAD_CHARS_MAX + 1))
# The distinct keys of every kind, and their one-deletion variants.
WORDS_TABLE: Final = "search_words"
VARIANTS_TABLE: Final = "search_word_variants"
# Version 3's trigram index of the words (SQLite: an FTS5 table; PostgreSQL: a GIN index),
# dropped by version 4.
_WORDS_TRIGRAMS_TABLE: Final = "search_words_trgm"
# The SQLite FTS5 columns of each index table (PostgreSQL: entity_id, terms, doc).
FTS_COLUMNS: Final = {
    "accounts": ("username", "full_name"),
    "hashtags": ("tag",),
    "places": ("name",),
}
# Any two sessions creating pg_trgm at once serialize on this advisory lock (the extension
# is one per database, whatever schema a Database uses).
PG_TRGM_LOCK_KEY: Final = 0x70696E74726D  # "pintrm"

metadata = sa.MetaData()

places = sa.Table(
    "places",
    metadata,
    sa.Column("place_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(PLACE_NAME_CHARS_MAX), nullable=False),
    # The folded name (social/search_text.py): what dedupes and what the index holds.
    sa.Column("name_key", sa.String(PLACE_NAME_CHARS_MAX), nullable=False),
    sa.Column("latitude", sa.Float, nullable=False),  # degrees, rounded
    sa.Column("longitude", sa.Float, nullable=False),  # degrees, rounded
    sa.Column("coordinate_decimals", sa.Integer, nullable=False),
    sa.Column("created_by", sa.BigInteger, nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("post_count", sa.Integer, nullable=False),  # posts not deleted
    sa.UniqueConstraint("name_key", "latitude", "longitude", name="places_dedupe"),
)

post_places = sa.Table(
    "post_places",
    metadata,
    sa.Column("post_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("place_id", sa.BigInteger, nullable=False),
)

hashtag_counts = sa.Table(
    "hashtag_counts",
    metadata,
    sa.Column("tag_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tag", sa.String(HASHTAG_CHARS_MAX), nullable=False, unique=True),
    sa.Column("post_count", sa.Integer, nullable=False),  # posts not deleted
)

_indexes = (
    sa.Index("post_places_place", post_places.c.place_id, post_places.c.post_id),
    sa.Index("places_popular", places.c.post_count),
    sa.Index("hashtag_counts_popular", hashtag_counts.c.post_count),
)


async def trgm_schema(conn: AsyncConnection) -> str:
    """The schema pg_trgm is installed in (PostgreSQL)."""
    row = await conn.exec_driver_sql(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pg_trgm'"
    )
    name = row.scalar_one_or_none()
    if name is None:
        raise RuntimeError("pg_trgm is not installed: run the search migrations")
    return str(name)


async def create_keys_table(conn: AsyncConnection) -> None:
    """The prefix keys (social/search_keys.py draws the table): a covering B-tree for
    prefix ranges, bytewise on PostgreSQL too (COLLATE "C"), and one for the writes."""
    collate = ' COLLATE "C"' if conn.dialect.name == "postgresql" else ""
    await conn.exec_driver_sql(
        f"CREATE TABLE {KEYS_TABLE} (kind SMALLINT NOT NULL, key TEXT{collate} NOT NULL,"
        " popularity BIGINT NOT NULL, entity_id BIGINT NOT NULL)"
    )
    for _, create in _keys_indexes():
        await conn.exec_driver_sql(create)


async def create_words_table(conn: AsyncConnection) -> None:
    """The distinct keys of every kind and their variants, filled from the prefix keys in
    one pass each (empty keys: empty words). New words then come with new keys
    (social/search_keys.py `put`); a word no key holds any more stays until the next
    rebuild and finds no entity."""
    pg = conn.dialect.name == "postgresql"
    text = 'TEXT COLLATE "C"' if pg else "TEXT"
    rowid = "" if pg else " WITHOUT ROWID"
    await conn.exec_driver_sql(
        f"CREATE TABLE {WORDS_TABLE} (kind SMALLINT NOT NULL, word {text} NOT NULL,"
        f" PRIMARY KEY (kind, word)){rowid}"
    )
    await conn.exec_driver_sql(
        f"INSERT INTO {WORDS_TABLE} (kind, word)"
        f" SELECT DISTINCT kind, key FROM {KEYS_TABLE} ORDER BY kind, key"
    )
    await conn.exec_driver_sql(
        f"CREATE TABLE {VARIANTS_TABLE} (kind SMALLINT NOT NULL, variant {text} NOT NULL,"
        f" word {text} NOT NULL, PRIMARY KEY (kind, variant, word)){rowid}"
    )
    # search_text.variants in SQL: the word, and for each position i the word without
    # its i-th character (substr counts characters on both engines, as Python does).
    chars = int(VARIANT_WORD_CHARS_MAX)
    await conn.exec_driver_sql(
        f"WITH RECURSIVE pos(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM pos WHERE i < {chars})"
        f" INSERT INTO {VARIANTS_TABLE} (kind, variant, word)"
        f" SELECT kind, word, word FROM {WORDS_TABLE} WHERE length(word) <= {chars}"
        " UNION SELECT w.kind, substr(w.word, 1, p.i - 1) || substr(w.word, p.i + 1), w.word"
        f" FROM {WORDS_TABLE} AS w JOIN pos AS p ON p.i <= length(w.word)"
        f" WHERE length(w.word) <= {chars} ORDER BY 1, 2, 3"
    )


async def drop_words_table(conn: AsyncConnection) -> None:
    """The words and their variants (and version 3's trigram index of the words)."""
    for table in (_WORDS_TRIGRAMS_TABLE, VARIANTS_TABLE, WORDS_TABLE):
        if conn.dialect.name == "postgresql" and table == _WORDS_TRIGRAMS_TABLE:
            continue  # an index of search_words there, dropped with it
        await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


def _keys_indexes() -> list[tuple[str, str]]:
    return [
        (
            f"{KEYS_TABLE}_prefix",
            f"CREATE INDEX {KEYS_TABLE}_prefix ON {KEYS_TABLE} (kind, key, popularity, entity_id)",
        ),
        (
            ENTITY_INDEX,
            f"CREATE INDEX {ENTITY_INDEX} ON {KEYS_TABLE} (kind, entity_id, key)",
        ),
        *(
            (
                name,
                f"CREATE INDEX {name} ON {KEYS_TABLE}"
                f" (kind, substr(key, 1, {n}), popularity DESC, entity_id)",
            )
            for n, name in enumerate(HEAD_INDEXES, start=1)
        ),
    ]


def _engine_indexes(table: str, trgm: str) -> list[tuple[str, str]]:
    """PostgreSQL: an index table's secondary indexes (its primary key stays)."""
    return [
        # Broad queries walk this index in popularity order and stop at the limit
        # instead of joining every match with its source table to sort them.
        (
            f"{table}_popular",
            f"CREATE INDEX {table}_popular ON {table} (popularity DESC, entity_id)",
        ),
        (f"{table}_doc", f"CREATE INDEX {table}_doc ON {table} USING gin (doc)"),
        (
            f"{table}_trgm",
            f"CREATE INDEX {table}_trgm ON {table} USING gin (terms {trgm}.gin_trgm_ops)",
        ),
    ]


async def _bulk_indexes(conn: AsyncConnection) -> list[tuple[str, str]]:
    """The indexes a rebuild drops before its bulk load and creates after it: the prefix
    keys' B-trees and (PostgreSQL) the index tables' B-tree and GIN indexes (FTS5 keeps
    its own)."""
    found = _keys_indexes()
    if conn.dialect.name == "postgresql":
        trgm = await trgm_schema(conn)
        for table in INDEX_TABLES.values():
            found += _engine_indexes(table, trgm)
    return found


@contextlib.asynccontextmanager
async def indexes_built_after(conn: AsyncConnection) -> AsyncIterator[None]:
    """Drops the bulk indexes (_bulk_indexes) for the body, which fills emptied index
    tables, and builds them afterwards, each in one pass over the filled table: a B-tree
    or GIN index grown row by row costs several times that (measured in
    ARCHITECTURE.md). Inside the caller's transaction: on PostgreSQL, searches wait for
    it to commit (DROP INDEX locks the table), as they would for its row locks."""
    indexes = await _bulk_indexes(conn)
    for name, _ in indexes:
        await conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    yield
    for _, create in indexes:
        await conn.exec_driver_sql(create)


async def create_index_tables(conn: AsyncConnection) -> None:
    """Creates the index tables of this engine, the prefix keys and their words (empty)."""
    await _create_engine_tables(conn)
    await create_keys_table(conn)
    await create_words_table(conn)


async def _create_engine_tables(conn: AsyncConnection) -> None:
    if conn.dialect.name == "sqlite":
        for kind, table in INDEX_TABLES.items():
            columns = ", ".join(FTS_COLUMNS[kind])
            await conn.exec_driver_sql(
                f"CREATE VIRTUAL TABLE {table} USING fts5({columns}, tokenize='trigram')"
            )
        return
    await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_TRGM_LOCK_KEY})")
    await conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
    trgm = await trgm_schema(conn)
    for table in INDEX_TABLES.values():
        await conn.exec_driver_sql(
            f"CREATE TABLE {table} (entity_id BIGINT PRIMARY KEY, terms TEXT NOT NULL,"
            " doc TSVECTOR NOT NULL, popularity BIGINT NOT NULL)"
        )
        for _, create in _engine_indexes(table, trgm):
            await conn.exec_driver_sql(create)


async def drop_index_tables(conn: AsyncConnection) -> None:
    await drop_words_table(conn)
    for table in (*INDEX_TABLES.values(), KEYS_TABLE):
        await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


async def _v1(conn: AsyncConnection) -> None:
    for table in (places, post_places, hashtag_counts):
        await conn.execute(CreateTable(table))
    for index in _indexes:
        await conn.execute(CreateIndex(index))
    await _create_engine_tables(conn)
    # Filled by version 2, which always follows.


async def _v2(conn: AsyncConnection) -> None:
    # Version 1 created its index tables without the prefix keys: add them, then fill the
    # counts and every index row (a database with users and posts already).
    await create_keys_table(conn)
    from social import search_index

    await search_index.rebuild(conn)


async def _v3(conn: AsyncConnection) -> None:
    # From the keys version 2 filled (its rebuild, on a new database, made them already).
    await drop_words_table(conn)
    await create_words_table(conn)
    # The entity index covers the key too (the followed accounts' keys in a range).
    await conn.exec_driver_sql(f"DROP INDEX IF EXISTS {ENTITY_INDEX}")
    for name, create in _keys_indexes():
        if name == ENTITY_INDEX:
            await conn.exec_driver_sql(create)


async def _v4(conn: AsyncConnection) -> None:
    # The words again, without the trigram index, and their variants; the keys' head
    # indexes (a new database's version 2 made them already).
    await drop_words_table(conn)
    await create_words_table(conn)
    for name, create in _keys_indexes():
        if name in HEAD_INDEXES:
            await conn.exec_driver_sql(create.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))


MIGRATIONS: Final = (
    Migration(1, "places, post places, hashtag counts and the search index", _v1),
    Migration(2, "the prefix keys of the search index (search_keys)", _v2),
    Migration(
        3,
        "the distinct words of the prefix keys with a trigram index (search_words); the keys'"
        " entity index covers the key",
        _v3,
    ),
    Migration(
        4,
        "typo candidates from one-deletion variants of the words (search_word_variants)"
        " instead of the words' trigram index; the prefix keys' head indexes",
        _v4,
    ),
)
