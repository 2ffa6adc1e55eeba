"""JSON documents of users and posts, hydrated in batches: one read snapshot, one query
per kind (posts, their media and variants, authors, the viewer's likes and saves) for a
whole page. Every id is a string."""

from __future__ import annotations

from typing import Any, Final

from api.context import ApiContext
from api.media_docs import iso, media_document
from api.photo_urls import UrlMaker
from api.responses import dumps, open_object
from social import accounts, graph, post_batch
from social.accounts import User
from social.places import place_document
from social.post_batch import PostBatch
from social.posts import Post
from transformer import media_store


def _avatar_url(doc: dict[str, Any] | None) -> str | None:
    if doc is None:
        return None
    urls = doc.get("urls", {})
    return urls.get("150_square") or urls.get("150") or next(iter(urls.values()), None)


def user_document(
    user: User, *, avatar: dict[str, Any] | None = None, me: bool = False
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "user_id": str(user.user_id),
        "username": user.username,
        "full_name": user.full_name,
        "bio": user.bio,
        "profile_pic_url": _avatar_url(avatar),
        "is_private": user.is_private,
        "is_verified": user.is_verified,
        "follower_count": user.follower_count,
        "following_count": user.following_count,
        "post_count": user.post_count,
        "created_at": iso(user.created_unix_s),
    }
    if me:
        doc["email"] = user.email
        doc["avatar_media_id"] = None if user.avatar_media_id is None else str(user.avatar_media_id)
    return doc


def author_document(user: User, avatar: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "user_id": str(user.user_id),
        "username": user.username,
        "full_name": user.full_name,
        "profile_pic_url": _avatar_url(avatar),
        "is_verified": user.is_verified,
        "is_private": user.is_private,
    }


def account_documents(
    ctx: ApiContext,
    users: dict[int, User],
    pictures: dict[int, tuple[media_store.MediaRow, list[media_store.VariantRow]]],
) -> dict[int, dict[str, Any]]:
    """The compact documents (`author_document`) of `users` by user id, their profile
    pictures taken from `pictures` (by media id, as `media_store.get_many` reads them)."""
    urls = ctx.photo_urls.public()
    out = {}
    for user_id, user in users.items():
        got = None if user.avatar_media_id is None else pictures.get(user.avatar_media_id)
        avatar = None if got is None else media_document(*got, urls=urls, owner=False)
        out[user_id] = author_document(user, avatar)
    return out


async def author_documents(
    ctx: ApiContext, viewer: int, user_ids: list[int]
) -> dict[int, dict[str, Any]]:
    """The compact documents of the accounts among `user_ids` that exist and are on neither
    side of a block with `viewer`, by user id, read in one snapshot (the blocks, the
    accounts, their pictures with variants: four statements whatever the count)."""
    if not user_ids:
        return {}
    async with ctx.db.snapshot() as conn:
        hidden = await graph.blocked_between(conn, viewer, user_ids)
        shown = [u for u in user_ids if u not in hidden]
        users = await accounts.get_many(conn, shown)
        wanted = [u.avatar_media_id for u in users.values() if u.avatar_media_id is not None]
        pictures = await media_store.get_many(conn, wanted)
    return account_documents(ctx, users, pictures)


async def avatars(ctx: ApiContext, users: list[User]) -> dict[int, dict[str, Any]]:
    wanted = [u.avatar_media_id for u in users if u.avatar_media_id is not None]
    if not wanted:
        return {}
    async with ctx.db.snapshot() as conn:
        got = await media_store.get_many(conn, wanted)
    # Profile pictures are public, of private accounts too (as on every photo service).
    urls = ctx.photo_urls.public()
    return {
        u.user_id: media_document(*got[u.avatar_media_id], urls=urls, owner=False)
        for u in users
        if u.avatar_media_id is not None and u.avatar_media_id in got
    }


def avatar_document(ctx: ApiContext, batch: PostBatch, user: User) -> dict[str, Any] | None:
    """A batch author's profile picture (public, of private accounts too), if any."""
    if user.avatar_media_id is None or user.avatar_media_id not in batch.media:
        return None
    return ctx.public_media.get(*batch.media[user.avatar_media_id])


async def post_documents(
    ctx: ApiContext, viewer: int, post_ids: list[int], *, batch: PostBatch | None = None
) -> list[dict[str, Any]]:
    """Documents of the given posts in that order (posts gone meanwhile are left out);
    `batch`: theirs, already read (`Feed.page(..., hydrate=)`)."""
    if not post_ids:
        return []
    if batch is None:
        batch = await post_batch.read_batch(ctx.db, viewer, post_ids)
    return documents_of(ctx, batch, post_ids)


def documents_of(ctx: ApiContext, batch: PostBatch, post_ids: list[int]) -> list[dict[str, Any]]:
    """The documents of `post_ids` (in that order) from a batch read by `post_batch.read_batch`.
    A public author's post, from an interned batch, is made once per content and then
    remembered (`PublicPostDocuments`); the viewer's flags are added to a copy."""
    found, authors = batch.found, batch.authors
    signed = ctx.photo_urls.signed() if any(a.is_private for a in authors.values()) else None
    remembered = ctx.public_posts if batch.interned else None
    out = []
    for post_id in post_ids:
        post = found.get(post_id)
        author = authors.get(post.author_id) if post is not None else None
        if post is None or author is None:
            continue
        if author.is_private:
            assert signed is not None
            doc = post_document(ctx, batch, post, author, signed)
        elif remembered is None:
            doc = post_document(ctx, batch, post, author, None)
        else:
            parts = post_parts(batch, post, author)
            shared = remembered.get(parts)
            if shared is None:
                shared = remembered.put(parts, post_document(ctx, batch, post, author, None))
            doc = dict(shared)
        doc["viewer_has_liked"] = post_id in batch.liked
        doc["viewer_has_saved"] = post_id in batch.saved
        out.append(doc)
    return out


# The viewer's flags closing a post's remembered JSON, by (liked, saved).
_POST_FLAGS: Final = {
    (liked, saved): b"," + dumps({"viewer_has_liked": liked, "viewer_has_saved": saved})[1:]
    for liked in (False, True)
    for saved in (False, True)
}


async def post_documents_json(
    ctx: ApiContext, viewer: int, post_ids: list[int], *, batch: PostBatch | None = None
) -> list[bytes]:
    """`post_documents` encoded as JSON, one object each (`documents_json`)."""
    if not post_ids:
        return []
    if batch is None:
        batch = await post_batch.read_batch(ctx.db, viewer, post_ids)
    return documents_json(ctx, batch, post_ids)


def documents_json(ctx: ApiContext, batch: PostBatch, post_ids: list[int]) -> list[bytes]:
    """`documents_of` encoded as JSON, one object each: a public author's post from an
    interned batch is encoded once per content without the viewer's flags and remembered
    as bytes (`ApiContext.public_post_json`); the flags are appended to it per answer.
    Private authors' posts (signed URLs) and batches that are not interned are made and
    encoded per answer, as `documents_of` makes them."""
    remembered = ctx.public_post_json if batch.interned else None
    if remembered is None:
        return [dumps(d) for d in documents_of(ctx, batch, post_ids)]
    found, authors, liked, saved = batch.found, batch.authors, batch.liked, batch.saved
    out = []
    for post_id in post_ids:
        post = found.get(post_id)
        author = authors.get(post.author_id) if post is not None else None
        if post is None or author is None:
            continue
        if author.is_private:
            out.append(dumps(documents_of(ctx, batch, [post_id])[0]))
            continue
        parts = post_parts(batch, post, author)
        head = remembered.get(parts)
        if head is None:
            head = remembered.put(parts, open_object(post_document(ctx, batch, post, author, None)))
        out.append(head + _POST_FLAGS[post_id in liked, post_id in saved])
    return out


def post_parts(batch: PostBatch, post: Post, author: User) -> tuple[object, ...]:
    """What a post's document is made of, as the batch holds it: the key of the remembered
    documents (api/media_docs.py PublicPostDocuments)."""
    media = batch.media
    return (
        post,
        author,
        None if author.avatar_media_id is None else media.get(author.avatar_media_id),
        *(media.get(m.media_id) for m in post.media),
        batch.post_places.get(post.post_id),
    )


def post_document(
    ctx: ApiContext, batch: PostBatch, post: Post, author: User, signed: UrlMaker | None
) -> dict[str, Any]:
    """A post's document without the viewer's flags: its photos as signed URLs made with
    `signed` (a private author's: made for this answer), else the remembered public ones
    (shared: copied, then added to)."""
    items = []
    for m in post.media:
        got = batch.media.get(m.media_id)
        if got is None:
            continue
        if signed is not None:
            doc = media_document(*got, urls=signed, owner=False)
        else:
            doc = dict(ctx.public_media.get(*got))
        urls = doc["urls"]
        doc["url"] = urls.get("1080") or urls.get("hls") or next(iter(urls.values()), None)
        doc["alt_text"] = m.alt_text
        items.append(doc)
    place = batch.post_places.get(post.post_id)
    return {
        "post_id": str(post.post_id),
        "author": author_document(author, avatar_document(ctx, batch, author)),
        "media": items,
        "caption": post.caption,
        "location": post.location,
        "place": None if place is None else place_document(place),
        "tagged_users": [str(u) for u in post.tagged],
        "status": post.status,
        "like_count": post.like_count,
        "comment_count": post.comment_count,
        "created_at": iso(post.created_unix_s),
    }
