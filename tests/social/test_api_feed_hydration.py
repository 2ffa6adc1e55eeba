"""The hydrated feed page after each change, on both databases: the public media documents
the API remembers (api/media_docs.py PublicMediaDocuments) and the plain-SQL batch reader
on SQLite (social/post_batch.py read_quick) never show a reader a page older than the
change: a profile edit, a like, a delete, a switch to private (signed URLs at once, the
re-keyed cookie once the re-key lands) and a block are all on the next read. At every step
the two batch readers agree row for row."""

from __future__ import annotations

from typing import Any

import pytest

from api.media_docs import PublicMediaDocuments, PublicPostDocuments
from api.photo_urls import PhotoUrls
from api.social_docs import post_documents
from feed.cursor import Cursor
from social import post_batch
from tests.api.conftest import MediaEnv
from tests.directory.conftest import eventually
from tests.social.conftest import Client, user
from transformer import media_store
from transformer.media_store import MediaStatus, VariantRow


async def _page(client: Client) -> list[dict[str, Any]]:
    """The reader's feed page, checked against the Mastodon home timeline read right
    after: the same posts with the same flags, names, counts and photo URLs (both are
    spliced from remembered JSON on SQLite, api/responses.py)."""
    status, doc, _ = await client.call("GET", "/api/v1/feed", limit="50")
    assert status == 200, doc
    assert list(doc) == ["posts", "next_cursor", "has_more"]
    posts = list(doc["posts"])
    status, home, _ = await client.call("GET", "/api/v1/timelines/home", limit="40")
    assert status == 200, home
    assert [s["id"] for s in home] == [p["post_id"] for p in posts]
    for s, p in zip(home, posts, strict=True):
        assert (s["favourited"], s["bookmarked"]) == (p["viewer_has_liked"], p["viewer_has_saved"])
        assert s["account"]["display_name"] == p["author"]["full_name"]
        assert s["account"]["locked"] == p["author"]["is_private"]
        assert s["favourites_count"] == p["like_count"]
        assert [m["url"] for m in s["media_attachments"]] == [m["url"] for m in p["media"]]
    return posts


async def _agree(env: MediaEnv, viewer: str, post_ids: list[str]) -> post_batch.PostBatch:
    """The batch of these posts as `post_batch.read_batch` reads it, checked against the
    SQLAlchemy unit in the same state (on SQLite the first is the plain-SQL reader)."""
    ids = [int(p) for p in post_ids]
    db = env.ctx.db
    quick = await post_batch.read_batch(db, int(viewer), ids)
    reference = await db.read(lambda conn: post_batch.read_posts(conn, int(viewer), ids))
    assert quick == reference
    # The batch the feed reads in its own filtering unit (SQLite) is the page's, as a
    # separate read gives it.
    page = await env.ctx.feed.page(
        int(viewer),
        Cursor(),
        50,
        hydrate=lambda c, got: (got, post_batch.read_quick(c, int(viewer), got)),
    )
    shown = [e[0] for e in page.entries]
    if db.quick is None:
        assert page.hydrated is None
    elif shown:  # an empty page may never reach the filtering query
        assert page.hydrated is not None and page.hydrated[0] == shown
        assert page.hydrated[1] == await post_batch.read_batch(db, int(viewer), shown)
    return quick


async def test_the_feed_page_after_each_change(social_env: MediaEnv) -> None:
    env = social_env
    alice_id, alice = await user(env, "alice")
    bob_id, bob = await user(env, "bob")
    _, carol = await user(env, "carol")
    assert (await bob.call("POST", "/api/v1/follows", {"followee_id": alice_id}))[0] == 201
    # A rich page: an avatar, a tagged user, a place, alt text, a carousel.
    avatar = await alice.photo(7)
    status, _, _ = await alice.call("PATCH", "/api/v1/accounts/me", {"avatar_media_id": avatar})
    assert status == 200
    media = [await alice.photo(i * 30) for i in range(2)]
    status, first, _ = await alice.call(
        "POST",
        "/api/v1/posts",
        {
            "media_ids": media,
            "caption": "first #one",
            "tagged_users": [bob_id],
            "alt_text": ["a lake", "a hill"],
            "place": {"name": "Lake", "latitude": 46.5, "longitude": 6.6},
        },
    )
    assert status == 201, first
    second = await alice.post("second")
    ids = [second["post_id"], first["post_id"]]

    async def both_shown() -> bool:
        return [p["post_id"] for p in await _page(bob)] == ids

    await eventually(both_shown, what="alice's posts in bob's feed")
    page = await _page(bob)
    media_hits = env.ctx.public_media.statistics().hits
    post_hits = env.ctx.public_post_json.statistics().hits
    status_hits = env.ctx.public_status_json.statistics().hits
    assert await _page(bob) == page  # the second read is made from remembered documents
    # Spliced from remembered JSON or made whole, the page is the documents' JSON.
    assert await post_documents(env.ctx, int(bob_id), [int(i) for i in ids]) == page
    if env.ctx.db.quick is not None:  # rows interned: the posts' documents, whole
        assert env.ctx.public_post_json.statistics().hits == post_hits + 2
        assert env.ctx.public_status_json.statistics().hits == status_hits + 2
    else:  # the photos' documents
        assert env.ctx.public_post_json.statistics().hits == post_hits
        assert env.ctx.public_media.statistics().hits >= media_hits + 3
    batch = await _agree(env, bob_id, ids)
    assert batch.authors[int(alice_id)].avatar_media_id == int(avatar)
    assert batch.found[int(first["post_id"])].tagged == (int(bob_id),)
    assert int(first["post_id"]) in batch.post_places
    shown = page[1]
    assert [m["alt_text"] for m in shown["media"]] == ["a lake", "a hill"]
    assert shown["place"]["name"] == "Lake" and shown["tagged_users"] == [bob_id]
    assert shown["author"]["profile_pic_url"] is not None
    public_url = shown["media"][0]["variants"]["640"]["formats"]["jpeg"]
    assert "?" not in public_url

    # A profile edit and the viewer's own like and save: on the next read.
    status, _, _ = await alice.call("PATCH", "/api/v1/accounts/me", {"full_name": "Alice L."})
    assert status == 200
    for verb in ("like", "save"):
        assert (await bob.call("PUT", f"/api/v1/posts/{first['post_id']}/{verb}"))[0] == 200
    assert (await carol.call("PUT", f"/api/v1/posts/{first['post_id']}/like"))[0] == 200
    shown = (await _page(bob))[1]
    assert shown["author"]["full_name"] == "Alice L."
    assert shown["like_count"] == 2
    assert shown["viewer_has_liked"] is True and shown["viewer_has_saved"] is True
    batch = await _agree(env, bob_id, ids)
    assert batch.liked == {int(first["post_id"])} == batch.saved
    assert await _page(carol) == []  # carol follows no one

    # A delete: gone from the next read.
    assert (await alice.call("DELETE", f"/api/v1/posts/{second['post_id']}"))[0] == 204
    assert [p["post_id"] for p in await _page(bob)] == [first["post_id"]]
    await _agree(env, bob_id, ids)

    # Private: the next read carries signed URLs only (before the re-key lands), and after
    # it never the public URL handed out before.
    status, _, _ = await alice.call("PATCH", "/api/v1/accounts/me", {"is_private": True})
    assert status == 200
    shown = (await _page(bob))[0]
    assert shown["author"]["is_private"] is True
    urls = [u for m in shown["media"] for u in _all_urls(m)]
    assert urls and all("&s=" in u for u in urls)
    media_id = int(shown["media"][0]["media_id"])
    cookie_before = (await _media(env, media_id))[0].cookie_hex

    async def rekeyed() -> bool:
        return (await _media(env, media_id))[0].cookie_hex != cookie_before

    await eventually(rekeyed, timeout_s=60, what="the re-key")
    shown = (await _page(bob))[0]
    assert all("&s=" in u for m in shown["media"] for u in _all_urls(m))
    await _agree(env, bob_id, ids)
    # Public again: public URLs under the new cookie, not the one handed out before.
    status, _, _ = await alice.call("PATCH", "/api/v1/accounts/me", {"is_private": False})
    assert status == 200

    async def public_again() -> bool:
        got = (await _page(bob))[0]["media"][0]["variants"]["640"]["formats"]["jpeg"]
        return "?" not in got and got != public_url

    await eventually(public_again, timeout_s=60, what="the public URLs under a new cookie")

    # A block: the blocked reader's next page holds none of the blocker's posts.
    assert (await alice.call("POST", "/api/v1/blocks", {"user_id": bob_id}))[0] == 201
    assert await _page(bob) == []
    await _agree(env, bob_id, ids)


async def _media(env: MediaEnv, media_id: int) -> tuple[media_store.MediaRow, list[VariantRow]]:
    got = await media_store.get(env.ctx.db, media_id)
    assert got is not None
    return got


def _all_urls(doc: dict[str, Any]) -> list[str]:
    urls = list(doc["urls"].values())
    for variant in doc["variants"].values():
        urls += variant["formats"].values()
    return urls


def _rows(cookie_hex: str, volume_id: int) -> tuple[media_store.MediaRow, list[VariantRow]]:
    row = media_store.MediaRow(
        media_id=1 << 20,
        owner_id=7,
        media_type="image",
        status=MediaStatus.READY,
        fmt=1,
        size_bytes=1000,
        width=640,
        height=480,
        duration_s=None,
        filter_id=None,
        cookie_hex=cookie_hex,
        original_volume_id=1,
        placeholder=None,
        error_code=None,
        created_unix_s=1.0,
        ready_unix_s=2.0,
        expires_unix_s=None,
        attached_unix_s=2.0,
    )
    return row, [VariantRow(1 << 20, 640, 1, volume_id, 100, 640, 480)]


@pytest.mark.parametrize("change", ["cookie", "volume"])
def test_a_changed_row_is_a_new_public_document(change: str) -> None:
    urls = PhotoUrls("http://router", None, ttl_s=60.0, step_s=10)
    docs = PublicMediaDocuments(urls, documents_max=2)
    first = docs.get(*_rows("00000000000000aa", 3))
    assert docs.get(*_rows("00000000000000aa", 3)) is first
    changed = _rows("00000000000000bb", 3) if change == "cookie" else _rows("00000000000000aa", 4)
    again = docs.get(*changed)
    assert again is not first and again["urls"] != first["urls"]
    stats = docs.statistics()
    assert (stats.hits, stats.misses, stats.documents, stats.documents_max) == (1, 2, 2, 2)
    docs.get(*_rows("00000000000000cc", 5))
    assert docs.statistics().documents == 2  # bounded: the least recently used dropped


def test_public_post_documents_are_remembered_by_identity() -> None:
    """PublicPostDocuments: a hit needs the very same parts (equal copies are another
    key), and the least recently used entry goes beyond documents_max."""
    memo: PublicPostDocuments[dict[str, Any]] = PublicPostDocuments(documents_max=2)
    a, b, c = ("post", 1), ("author", 2), ("photo", 3)
    assert memo.get((a, b, None)) is None
    doc = memo.put((a, b, None), {"post_id": "1"})
    assert memo.get((a, b, None)) is doc
    assert memo.get((tuple(list(a)), b, None)) is None  # equal, not the same object
    memo.put((a, c), {"post_id": "2"})
    assert memo.get((a, b, None)) is doc  # now the most recently used
    memo.put((b, c), {"post_id": "3"})
    assert memo.get((a, c)) is None  # dropped
    assert memo.get((a, b, None)) is doc
    got = memo.statistics()
    assert (got.hits, got.documents, got.documents_max) == (3, 2, 2)
