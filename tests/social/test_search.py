"""The search conformance suite: the same tests over SQLite (FTS5 trigram) and PostgreSQL
(tsvector + pg_trgm), through the service on a migrated database: typeahead by prefix,
typo, missing letter and full name; ranking (followed first, then popularity); blocks
both ways; private posts on hashtag and place pages; a new hashtag searchable at once;
places deduplicated; the index rebuilt after it was dropped."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from common.config import ConfigError, load_toml
from common.db import Database, migrate, open_database
from common.ids import IdGenerator
from social import accounts, graph, posts, search_index, search_schema, search_text
from social import schema as social_schema
from social.config import SocialConfig
from social.errors import Invalid
from social.schema import follows, users
from social.search import Search
from social.search_config import SearchConfig, search_config
from tests.directory.conftest import PG_URL, pg_schema
from tests.feed.conftest import ready_media, social_db
from transformer import schema as media_schema


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with social_db(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def ids() -> IdGenerator:
    return IdGenerator(1)


async def make(
    db: Database,
    ids: IdGenerator,
    username: str,
    full_name: str = "",
    *,
    followers: int = 0,
    private: bool = False,
) -> int:
    user = await accounts.create(
        db, ids, SocialConfig(), username=username, password=None, password_hash="x"
    )
    async with db.transaction() as conn:
        await conn.execute(
            users.update()
            .where(users.c.user_id == user.user_id)
            .values(full_name=full_name, follower_count=followers, is_private=private)
        )
        await search_index.account_changed(conn, user.user_id)
    return user.user_id


async def follow_now(db: Database, follower: int, followee: int) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            follows.insert().values(
                follower_id=follower, followee_id=followee, created_unix_s=time.time()
            )
        )


async def post(db: Database, ids: IdGenerator, author: int, caption: str, place: Any = None) -> int:
    media_id = await ready_media(db, ids, author)
    body: dict[str, Any] = {"media_ids": [str(media_id)], "caption": caption}
    if place is not None:
        body["place"] = place
    async with db.transaction(lock=posts.LOCK) as conn:
        created = await posts.create(conn, ids, SocialConfig(), author, body)
    return created.post_id


async def names(search: Search, viewer: int, q: str, kind: str = "accounts") -> list[int]:
    return [h.entity_id for h in await search.find(viewer, q, kind, limit=10)]


async def test_typeahead_by_prefix_typo_missing_letter_and_full_name(
    db: Database, ids: IdGenerator
) -> None:
    viewer = await make(db, ids, "viewer")
    margaret = await make(db, ids, "margaret_hill", "Margaret Hill")
    marcus = await make(db, ids, "marcus", "Marcus Aurelius")
    theo = await make(db, ids, "xq_77", "Théodora Quinn")
    await make(db, ids, "zed", "Zed")
    search = Search(db, SearchConfig())
    assert (await names(search, viewer, "marg"))[0] == margaret
    assert set(await names(search, viewer, "ma")) == {margaret, marcus}
    assert await names(search, viewer, "@Margaret") == [margaret]
    assert (await names(search, viewer, "margret"))[0] == margaret  # missing letter
    assert (await names(search, viewer, "margaert"))[0] == margaret  # swapped letters
    assert (await names(search, viewer, "margra"))[0] == margaret  # a swap, still typing
    assert (await names(search, viewer, "maegar"))[0] == margaret  # a substitution, typing
    assert (await names(search, viewer, "aurelius"))[0] == marcus  # full name
    assert await names(search, viewer, "theodora") == [theo]  # accent folded
    assert (await names(search, viewer, "theodra quin"))[0] == theo  # typos in both words
    assert await names(search, viewer, "qqqqqq") == []


async def test_typos_in_names_with_capitals_and_accents(db: Database, ids: IdGenerator) -> None:
    """SQLite checks a typo's pieces on the source text when it is plain ASCII (LIKE
    ignores case) and on the folded copy otherwise: both must find their names."""
    viewer = await make(db, ids, "viewer")
    loud = await make(db, ids, "u_1", "BRIGITTE  WALLACE")
    accented = await make(db, ids, "u_2", "Søren Ångströmsson")
    search = Search(db, SearchConfig())
    assert (await names(search, viewer, "brigtte"))[0] == loud  # a missing letter
    assert (await names(search, viewer, "wallcae"))[0] == loud  # a swap
    assert (await names(search, viewer, "angstrommson"))[0] == accented  # a missing letter


async def test_followed_accounts_rank_first_then_popular(db: Database, ids: IdGenerator) -> None:
    viewer = await make(db, ids, "viewer")
    quiet = await make(db, ids, "alex_quiet", "Alex Q", followers=3)
    famous = await make(db, ids, "alex_famous", "Alex F", followers=90_000)
    search = Search(db, SearchConfig())
    assert await names(search, viewer, "alex") == [famous, quiet]
    await follow_now(db, viewer, quiet)
    assert await names(search, viewer, "alex") == [quiet, famous]
    assert await names(search, viewer, "al") == [quiet, famous]


async def test_an_exact_name_is_found_among_many_more_popular_matches(
    db: Database, ids: IdGenerator
) -> None:
    viewer = await make(db, ids, "viewer")
    for i in range(8):
        await make(db, ids, f"xkar_star{i}", followers=1000 + i)
    exact = await make(db, ids, "kar", followers=0)
    narrow = SearchConfig(
        candidates_max=5, results_max=5, results_default=5, typeahead_results_max=5
    )
    found = [h.entity_id for h in await Search(db, narrow).find(viewer, "kar", "accounts", limit=5)]
    assert found[0] == exact and len(found) == 5


async def test_follows_update_the_popularity_search_ranks_by(
    db: Database, ids: IdGenerator
) -> None:
    viewer = await make(db, ids, "viewer")
    one = await make(db, ids, "zoe_one")
    two = await make(db, ids, "zoe_two")
    fans = [await make(db, ids, f"fan{i}") for i in range(3)]
    for fan in fans:
        await graph.follow(db, ids, fan, two)
    narrow = SearchConfig(
        candidates_max=1, results_max=1, results_default=1, typeahead_results_max=1
    )
    # With one candidate per source, the substring source names the most followed.
    assert await names(Search(db, narrow), viewer, "oe_") == [two]
    for fan in fans:
        await graph.unfollow(db, fan, two)
        await graph.follow(db, ids, fan, one)
    assert await names(Search(db, narrow), viewer, "oe_") == [one]
    # The prefix keys keep their own copy of the count: one candidate, the most followed.
    assert await names(Search(db, narrow), viewer, "zoe") == [one]
    for fan in fans:
        await graph.unfollow(db, fan, one)
        await graph.follow(db, ids, fan, two)
    assert await names(Search(db, narrow), viewer, "zoe") == [two]


async def test_prefixes_of_every_word_and_typos_in_a_crowd(db: Database, ids: IdGenerator) -> None:
    viewer = await make(db, ids, "viewer")
    for i in range(12):
        await make(db, ids, f"lindqvist{i}", "Tomasz Lindqvist", followers=100 + i)
    target = await make(db, ids, "quietone", "Ingrid Lindqvist", followers=0)
    search = Search(db, SearchConfig())
    # Twelve more popular accounts share the last name; the first name is the target's own.
    assert await names(search, viewer, "ingr") == [target]
    assert await names(search, viewer, "ingrid lind") == [target]  # a whole field's prefix
    assert len(await names(search, viewer, "lindq")) == 10
    assert (await names(search, viewer, "quitone"))[0] == target  # a missing letter
    assert (await names(search, viewer, "quiteone"))[0] == target  # two letters swapped


async def _words(db: Database) -> set[str]:
    async with db.snapshot() as conn:
        rows = await conn.exec_driver_sql(f"SELECT word FROM {search_schema.WORDS_TABLE}")
        return {str(r[0]) for r in rows}


async def _variant_words(db: Database, variant: str) -> set[str]:
    """The words filed under `variant` (social/search_variants.py)."""
    async with db.snapshot() as conn:
        found = await conn.execute(
            sa.text(f"SELECT word FROM {search_schema.VARIANTS_TABLE} WHERE variant = :v"),
            {"v": variant},
        )
        return {str(r[0]) for r in found}


async def test_typo_words_commit_with_their_keys(db: Database, ids: IdGenerator) -> None:
    """The vocabulary typo candidates come from (search_words) gains a new key's words in
    the key's transaction, loses nothing a rolled-back one did not add, and is rebuilt
    whole by a rebuild (its one-deletion variants too)."""
    viewer = await make(db, ids, "viewer")
    target = await make(db, ids, "zephyrine_q", "Odalys Brightwater")
    assert {"zephyrine_q", "zephyrine", "odalys brightwater", "brightwater"} <= await _words(db)
    assert await _variant_words(db, "brigtwater") == {"brightwater"}
    assert await _variant_words(db, "odalys brightwatr") == {"odalys brightwater"}
    search = Search(db, SearchConfig())
    assert await names(search, viewer, "zephryine") == [target]  # a swap, through the words
    assert await names(search, viewer, "brigthwater") == [target]
    with pytest.raises(RuntimeError, match="undone"):
        async with db.transaction() as conn:
            await conn.execute(
                users.update().where(users.c.user_id == target).values(full_name="Quillon Vext")
            )
            await search_index.account_changed(conn, target)
            raise RuntimeError("undone")
    assert "quillon" not in await _words(db)
    assert await _variant_words(db, "quillo") == set()
    async with db.transaction() as conn:
        await search_schema.drop_index_tables(conn)
        await search_schema.create_index_tables(conn)
    assert await _words(db) == set()
    async with db.transaction() as conn:
        await search_index.rebuild(conn)
    assert "brightwater" in await _words(db)
    assert await _variant_words(db, "zphyrine") == {"zephyrine"}
    assert await _variant_words(db, "zephyrine_q") == {"zephyrine_q"}
    assert await names(search, viewer, "zephryine") == [target]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
@pytest.mark.parametrize("version", [2, 3])
async def test_older_versions_gain_the_words_and_variants_on_upgrade(
    engine: str, version: int, tmp_path: Path
) -> None:
    """A database at search version 2 (prefix keys, no words, the keys' entity index
    without the key) or 3 (the words with a trigram index, no variants) is brought to
    version 4: the words of its keys and their variants, no trigram index, the entity
    index with the key, the keys' head indexes; typos are found through them."""
    async with contextlib.AsyncExitStack() as stack:
        if engine == "sqlite":
            db = await open_database(tmp_path / "meta.sqlite3")
        else:
            db = await open_database(PG_URL, schema=await stack.enter_async_context(pg_schema()))
        stack.push_async_callback(db.close)
        for component in (media_schema, social_schema):
            await migrate(db, component.COMPONENT, component.MIGRATIONS)
        await migrate(db, search_schema.COMPONENT, search_schema.MIGRATIONS[:version])
        ids = IdGenerator(1)
        viewer = await make(db, ids, "viewer")
        target = await make(db, ids, "quentin_okafor", "Quentin Okafor")
        words = search_schema.WORDS_TABLE
        async with db.transaction() as conn:  # as that version left it
            await search_schema.drop_words_table(conn)
            if version == 2:
                await conn.exec_driver_sql(f"DROP INDEX {search_schema.ENTITY_INDEX}")
                await conn.exec_driver_sql(
                    f"CREATE INDEX {search_schema.ENTITY_INDEX}"
                    f" ON {search_schema.KEYS_TABLE} (kind, entity_id)"
                )
            elif engine == "sqlite":
                await conn.exec_driver_sql(
                    f"CREATE TABLE {words} (word_id INTEGER PRIMARY KEY,"
                    " kind SMALLINT NOT NULL, word TEXT NOT NULL)"
                )
                await conn.exec_driver_sql(
                    f"CREATE VIRTUAL TABLE search_words_trgm USING fts5(word,"
                    f" content='{words}', content_rowid='word_id', tokenize='trigram')"
                )
            else:
                await conn.exec_driver_sql(
                    f'CREATE TABLE {words} (kind SMALLINT NOT NULL, word TEXT COLLATE "C"'
                    " NOT NULL, PRIMARY KEY (kind, word))"
                )
                await conn.exec_driver_sql(
                    f"CREATE INDEX search_words_trgm ON {words}"
                    " USING gin (word public.gin_trgm_ops)"
                )
        upgraded = await migrate(db, search_schema.COMPONENT, search_schema.MIGRATIONS)
        assert upgraded == list(range(version + 1, len(search_schema.MIGRATIONS) + 1))
        assert {"quentin_okafor", "quentin", "okafor", "quentin okafor"} <= await _words(db)
        assert await _variant_words(db, "okafr") == {"okafor"}
        assert await _variant_words(db, "quentin okafor") == {"quentin okafor"}
        names_now = await _index_names_of(db)
        assert {search_schema.ENTITY_INDEX, *search_schema.HEAD_INDEXES} <= names_now
        assert "search_words_trgm" not in names_now
        if engine == "sqlite":
            async with db.snapshot() as conn:
                tables = await conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE name LIKE 'search_words_trgm%'"
                )
                assert tables.all() == []
        search = Search(db, SearchConfig())
        assert await names(search, viewer, "quentni") == [target]  # a swap
        assert await names(search, viewer, "okafro") == [target]


async def _index_names_of(db: Database) -> set[str]:
    async with db.snapshot() as conn:
        return await _index_names(conn)


def test_closest_words_put_typos_first() -> None:
    found = ["tijosoka", "joso", "jososa", "tijoso", "tajoso", "toso"]
    # Within one typo of `tjoso` (5 letters): joso and toso (a deletion, a substitution),
    # tijoso and tajoso (an insertion); the engine's order breaks ties and orders the rest
    # (tijosoka: 2 edits from its beginning as long as the query, jososa more).
    assert search_text.closest_words("tjoso", found, 10) == [
        "joso",
        "tijoso",
        "tajoso",
        "toso",
        "tijosoka",
        "jososa",
    ]
    assert search_text.closest_words("tjoso", found, 2) == ["joso", "tijoso"]
    # A word still being typed: its beginning as long as the query is compared.
    assert search_text.closest_words("tijsoo", ["tijosa", "tijosoka"], 1) == ["tijosoka"]
    assert search_text.closest_words("kjell moreno", ["x", "moreno", "kjell"], 3)[-1] == "x"
    assert search_text.closest_words("tjoso", [], 3) == []


async def test_a_shared_word_gives_its_most_popular_and_followed_accounts(
    db: Database, ids: IdGenerator
) -> None:
    """A prefix of a word that more accounts share than candidates are asked (here 4 x 3)
    is looked up word by word (3+ letters) or as a range (2): either way the most
    popular of them come first, and a followed one of the least popular is found by its
    follows."""
    viewer = await make(db, ids, "viewer")
    crowd = [
        await make(db, ids, f"member{i:02}", f"Odile Varganova{i:02}", followers=i)
        for i in range(60)
    ]
    friend = crowd[0]
    await follow_now(db, viewer, friend)
    search = Search(db, SearchConfig())
    for q in ("odile", "odi", "od", "varganova0"):
        found = [h.entity_id for h in await search.find(viewer, q, "accounts", limit=3)]
        expected = [friend, crowd[59], crowd[58]] if q != "varganova0" else [friend]
        assert found[: len(expected)] == expected, q
    found = await names(search, viewer, "varganova0")
    assert found[0] == friend and set(found) == set(crowd[:10])


def test_index_keys_and_variants() -> None:
    assert search_text.index_keys(("margaret_hill", "margaret hill")) == (
        "margaret_hill",
        "margaret hill",
        "margaret",
        "hill",
    )
    assert search_text.index_keys(("", "")) == ()
    assert search_text.variants("abca") == ("abca", "bca", "aca", "aba", "abc")
    assert search_text.variants("aab") == ("aab", "ab", "aa")  # distinct


def _osa_reference(a: str, b: str) -> int:
    """The optimal string alignment distance by its textbook recurrence."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


@given(st.text("abcd", max_size=8), st.text("abcd", max_size=8), st.integers(0, 3))
def test_edit_distance_is_osa(a: str, b: str, cutoff: int) -> None:
    exact = _osa_reference(a, b)
    assert search_text.edit_distance(a, b) == exact
    assert search_text.edit_distance(a, b, cutoff=cutoff) == min(exact, cutoff + 1)
    assert search_text.edit_distance("ca", "abc") == 3  # OSA, not Damerau: no edit of a swap


@given(st.text("abcdé", min_size=1, max_size=9), st.text("abcdé", max_size=9))
def test_strings_within_one_typo_share_a_variant(a: str, b: str) -> None:
    """search_variants' rule: within one typo (OSA), whole or as a beginning, a variant is
    shared, or (a word being typed) one of the query's is the beginning of one of the
    word's."""
    word = a + b
    query = a  # the beginning of `word`, then one typo made in it
    for i in range(len(query) + 1):
        for typo in (
            query[:i] + "x" + query[i:],  # an insertion
            query[:i] + query[i + 1 :],  # a deletion
            query[:i] + "x" + query[i + 1 :],  # a substitution
            query[:i] + query[i + 1 : i + 2] + query[i : i + 1] + query[i + 2 :],  # a swap
        ):
            if not typo or _osa_reference(typo, query) > 1:
                continue
            if not b:  # the whole word: a shared variant
                assert set(search_text.variants(typo)) & set(search_text.variants(word))
            assert any(
                w.startswith(v)
                for v in search_text.variants(typo)
                for w in search_text.variants(word)
            ), (typo, word)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_the_rebuilt_variants_are_the_words_variants(engine: str, tmp_path: Path) -> None:
    """The variants a rebuild makes in SQL are search_text.variants of every word, the
    characters counted as Python counts them (folded accents and all); those a new key
    adds are the same."""
    async with contextlib.AsyncExitStack() as stack:
        if engine == "sqlite":
            db = await open_database(tmp_path / "meta.sqlite3")
        else:
            db = await open_database(PG_URL, schema=await stack.enter_async_context(pg_schema()))
        stack.push_async_callback(db.close)
        for component in (media_schema, social_schema, search_schema):
            await migrate(db, component.COMPONENT, component.MIGRATIONS)
        ids = IdGenerator(1)
        await make(db, ids, "soren_a", "Søren Ångströmsson")
        await make(db, ids, "xena", "Ab " + "x" * 45)

        async def stored() -> set[tuple[str, str]]:
            async with db.snapshot() as conn:
                rows = await conn.execute(
                    sa.text(f"SELECT variant, word FROM {search_schema.VARIANTS_TABLE}").columns(
                        sa.column("variant", sa.String), sa.column("word", sa.String)
                    )
                )
                return {(str(v), str(w)) for v, w in rows.all()}

        added = await stored()
        expected = {
            (v, w)
            for w in await _words(db)
            if len(w) <= search_text.VARIANT_WORD_CHARS_MAX
            for v in search_text.variants(w)
        }
        assert added == expected
        assert ("sren angstromsson", "søren angstromsson") in added  # ø is one character
        assert "x" * 45 in await _words(db)
        assert all(w != "x" * 45 for _, w in added)  # too long for variants
        async with db.transaction() as conn:
            await search_index.rebuild(conn)
        assert await stored() == expected


async def test_engaged_accounts_rank_before_others(db: Database, ids: IdGenerator) -> None:
    viewer = await make(db, ids, "viewer")
    liked = await make(db, ids, "sam_liked", followers=1)
    other = await make(db, ids, "sam_other", followers=500)
    post_id = await post(db, ids, liked, "hello")
    async with db.transaction() as conn:
        from social.schema import likes

        await conn.execute(
            likes.insert().values(user_id=viewer, post_id=post_id, created_unix_s=time.time())
        )
    assert await names(Search(db, SearchConfig()), viewer, "sam") == [liked, other]


async def test_blocks_filter_every_result_both_ways(db: Database, ids: IdGenerator) -> None:
    viewer = await make(db, ids, "viewer_kim")
    blocked = await make(db, ids, "kim_blocked", "Kim B")
    blocker = await make(db, ids, "kim_blocker", "Kim C")
    friend = await make(db, ids, "kim_friend", "Kim D")
    await graph.block(db, viewer, blocked)
    await graph.block(db, blocker, viewer)
    for author in (blocked, blocker, friend):
        await post(db, ids, author, "a #kimchi day")
    search = Search(db, SearchConfig())
    for q in ("kim", "ki", "kim_blokced"):
        found = await names(search, viewer, q)
        assert blocked not in found and blocker not in found, q
    assert friend in await names(search, viewer, "kim")
    assert viewer not in await names(search, blocked, "viewer")
    assert viewer not in await names(search, blocker, "viewer_k")
    page = await search.hashtag_posts(viewer, "kimchi", top=False, cursor=None, limit=10)
    authors = await _authors(db, page.post_ids)
    assert authors == [friend]
    top = await search.hashtag_posts(viewer, "kimchi", top=True, cursor=None, limit=10)
    assert await _authors(db, top.post_ids) == [friend]


async def _authors(db: Database, post_ids: list[int]) -> list[int]:
    async with db.snapshot() as conn:
        found = await posts.get_many(conn, post_ids)
    return [found[p].author_id for p in post_ids]


async def test_private_posts_only_for_followers_on_hashtag_and_place_pages(
    db: Database, ids: IdGenerator
) -> None:
    stranger = await make(db, ids, "stranger")
    fan = await make(db, ids, "fan")
    hidden = await make(db, ids, "hidden_lou", "Lou", private=True)
    await follow_now(db, fan, hidden)
    place = {"name": "Café Lumière", "latitude": 48.85341, "longitude": 2.3488}
    post_id = await post(db, ids, hidden, "#secretgarden", place)
    search = Search(db, SearchConfig())
    assert await names(search, stranger, "hidden") == [hidden]  # the account is found
    assert (await search.hashtag("secretgarden")) == ("secretgarden", 1)
    for viewer, shown in ((stranger, []), (fan, [post_id]), (hidden, [post_id])):
        page = await search.hashtag_posts(viewer, "secretgarden", top=False, cursor=None, limit=5)
        assert page.post_ids == shown
        place_id = (await search.find(viewer, "cafe lumiere", "places", limit=5))[0].entity_id
        page = await search.place_posts(viewer, place_id, top=True, cursor=None, limit=5)
        assert page.post_ids == shown


async def test_new_hashtag_searchable_at_once_and_counted_out_on_delete(
    db: Database, ids: IdGenerator
) -> None:
    author = await make(db, ids, "poster")
    search = Search(db, SearchConfig())
    assert await search.find(author, "sunsetlover", "hashtags", limit=5) == []
    post_id = await post(db, ids, author, "evening #SunsetLover #sea")
    hits = await search.find(author, "sunset", "hashtags", limit=5)
    assert len(hits) == 1
    assert await search.hashtag("#sunsetlover") == ("sunsetlover", 1)
    assert len(await search.find(author, "sunstlover", "hashtags", limit=5)) == 1  # typo
    async with db.transaction(lock=posts.LOCK) as conn:
        await posts.delete(conn, author, post_id)
    assert await search.hashtag("sunsetlover") == ("sunsetlover", 0)
    page = await search.hashtag_posts(author, "sunsetlover", top=False, cursor=None, limit=5)
    assert page.post_ids == []


async def test_hashtag_pages_paginate_recent_and_top(db: Database, ids: IdGenerator) -> None:
    author = await make(db, ids, "pager")
    made = [await post(db, ids, author, f"#pages number {i}") for i in range(5)]
    async with db.transaction() as conn:
        from social.schema import posts as posts_table

        await conn.execute(
            posts_table.update().where(posts_table.c.post_id == made[1]).values(like_count=7)
        )
    search = Search(db, SearchConfig())
    seen: list[int] = []
    cursor = None
    while True:
        page = await search.hashtag_posts(author, "pages", top=False, cursor=cursor, limit=2)
        seen += page.post_ids
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == made[::-1]
    top = await search.hashtag_posts(author, "pages", top=True, cursor=None, limit=2)
    assert top.post_ids == [made[1], made[4]]
    rest = await search.hashtag_posts(author, "pages", top=True, cursor=top.next_cursor, limit=9)
    assert rest.post_ids == [made[3], made[2], made[0]] and rest.next_cursor is None
    with pytest.raises(Invalid):
        await search.hashtag_posts(author, "pages", top=True, cursor="x.y", limit=2)


async def test_places_dedupe_by_name_and_rounded_coordinates(
    db: Database, ids: IdGenerator
) -> None:
    author = await make(db, ids, "walker")
    first = await post(
        db, ids, author, "", {"name": "Old Harbour", "latitude": 54.321, "longitude": -3.004}
    )
    second = await post(
        db, ids, author, "", {"name": "old  harbour", "latitude": 54.3249, "longitude": -2.9951}
    )
    elsewhere = await post(
        db, ids, author, "", {"name": "Old Harbour", "latitude": 10.0, "longitude": 10.0}
    )
    search = Search(db, SearchConfig())
    hits = await search.find(author, "harbor", "places", limit=5)  # a typo
    assert len(hits) == 2
    async with db.snapshot() as conn:
        rows = (await conn.execute(sa.select(search_schema.post_places))).all()
        found = await posts.get_many(conn, [first])
    by_post = {r.post_id: r.place_id for r in rows}
    assert by_post[first] == by_post[second] != by_post[elsewhere]
    assert found[first].location == "Old Harbour"
    third = await post(db, ids, author, "", {"place_id": str(by_post[first])})
    page = await search.place_posts(author, by_post[first], top=False, cursor=None, limit=9)
    assert page.post_ids == [third, second, first]
    for bad in (
        {"name": "x", "latitude": 91, "longitude": 0},
        {"name": "", "latitude": 1, "longitude": 0},
        {"place_id": "123"},
        {"name": "x", "latitude": "1", "longitude": 0},
        {"name": "x", "latitude": 10**400, "longitude": 0},
        {"name": "x", "latitude": float("nan"), "longitude": 0},
        {"name": "x", "latitude": 1, "longitude": True},
        {"name": "x" * 101, "latitude": 1, "longitude": 1},
        {"place_id": "1", "name": "x"},
        "Paris",
    ):
        with pytest.raises(Invalid):
            await post(db, ids, author, "", bad)


async def test_reindex_restores_a_dropped_index(db: Database, ids: IdGenerator) -> None:
    viewer = await make(db, ids, "viewer")
    target = await make(db, ids, "reindexed_rita", "Rita Moreno")
    await post(db, ids, target, "#comeback", {"name": "Stage Door", "latitude": 1, "longitude": 2})
    search = Search(db, SearchConfig())
    async with db.transaction() as conn:
        await search_schema.drop_index_tables(conn)
        await search_schema.create_index_tables(conn)
    assert await names(search, viewer, "rita") == []
    async with db.transaction() as conn:
        done = await search_index.rebuild(conn)
    assert done == {"accounts": 2, "hashtags": 1, "places": 1}
    assert await names(search, viewer, "rita") == [target]
    assert len(await search.find(viewer, "comeback", "hashtags", limit=5)) == 1
    assert len(await search.find(viewer, "stage", "places", limit=5)) == 1
    assert await search.hashtag("comeback") == ("comeback", 1)


async def _index_names(conn: Any) -> set[str]:
    if conn.dialect.name == "postgresql":
        found = await conn.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        )
    else:
        found = await conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")
    return {str(r[0]) for r in found}


async def test_rebuild_builds_its_indexes_after_the_load(db: Database, ids: IdGenerator) -> None:
    """The rebuild drops the keys' (and PostgreSQL's index tables') secondary indexes for
    its bulk load and creates the same ones afterwards; a failed rebuild keeps them."""
    viewer = await make(db, ids, "viewer")
    target = await make(db, ids, "indexed_ida", "Ida Novak")
    async with db.snapshot() as conn:
        before = await _index_names(conn)
    assert {"search_keys_prefix", "search_keys_entity"} <= before
    async with db.transaction() as conn:
        await search_index.rebuild(conn)
    async with db.snapshot() as conn:
        assert await _index_names(conn) == before
    with pytest.raises(RuntimeError, match="stopped"):
        async with db.transaction() as conn:

            def stop(kind: str, n: int, total: int) -> None:
                raise RuntimeError("stopped")

            await search_index.rebuild(conn, stop)
    async with db.snapshot() as conn:
        assert await _index_names(conn) == before
    assert await names(Search(db, SearchConfig()), viewer, "ida") == [target]


async def test_bad_queries_are_refused(db: Database, ids: IdGenerator) -> None:
    viewer = await make(db, ids, "viewer")
    search = Search(db, SearchConfig(query_chars_max=10))
    for q, kind in (("", "accounts"), ("x" * 11, "accounts"), ("abc", "posts"), (None, "places")):
        with pytest.raises(Invalid):
            await search.find(viewer, q, kind, limit=5)  # type: ignore[arg-type]
    assert await search.find(viewer, '"*) OR %_\\', "accounts", limit=5) == []


def test_the_example_file_lists_the_search_defaults() -> None:
    example = Path(__file__).parents[2] / "pinhole.example.toml"
    assert search_config(load_toml(example)) == SearchConfig()
    with pytest.raises(ConfigError, match="candidates_max must be >= 1"):
        search_config({"search": {"candidates_max": 0}})
    with pytest.raises(ConfigError, match="typo"):
        search_config({"search": {"typo": 1}})
